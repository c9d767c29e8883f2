"""AccountStore on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mbeon_chat.storage.api import AlreadyExists, NotFound, RosterItem, ScramCredentials, Storage
from mbeon_chat.storage.stores._sql import now_ms

Creds = Callable[[str], tuple[ScramCredentials, ScramCredentials]]


async def test_created_account_has_both_credentials(storage: Storage, credentials: Creds) -> None:
    sha1, sha256 = credentials("secret")
    before = now_ms()
    await storage.accounts.create("alice", sha1, sha256)

    record = await storage.accounts.get("alice")

    assert record is not None
    assert record.username == "alice"
    assert before - 1000 <= record.created_at <= now_ms() + 1000
    assert record.sha1 == sha1
    assert record.sha256 == sha256


async def test_creating_an_existing_account_raises_already_exists(
    storage: Storage, credentials: Creds
) -> None:
    await storage.accounts.create("alice", *credentials("one"))

    with pytest.raises(AlreadyExists):
        await storage.accounts.create("alice", *credentials("two"))

    record = await storage.accounts.get("alice")
    assert record is not None and record.sha256 == credentials("one")[1]


async def test_unknown_account_is_none_and_does_not_exist(storage: Storage) -> None:
    assert await storage.accounts.get("nobody") is None
    assert await storage.accounts.exists("nobody") is False
    assert await storage.accounts.count() == 0


async def test_credentials_of_the_wrong_hash_are_rejected(storage: Storage, credentials: Creds) -> None:
    sha1, sha256 = credentials("secret")
    with pytest.raises(ValueError, match="sha1"):
        await storage.accounts.create("alice", sha256, sha1)
    assert await storage.accounts.exists("alice") is False


async def test_set_credentials_replaces_both(storage: Storage, credentials: Creds) -> None:
    await storage.accounts.create("alice", *credentials("old"))

    await storage.accounts.set_credentials("alice", *credentials("new"))
    await storage.accounts.set_credentials("alice", *credentials("new"))  # unchanged row is still found

    record = await storage.accounts.get("alice")
    assert record is not None
    assert (record.sha1, record.sha256) == credentials("new")


async def test_set_credentials_of_unknown_account_raises_not_found(
    storage: Storage, credentials: Creds
) -> None:
    with pytest.raises(NotFound):
        await storage.accounts.set_credentials("nobody", *credentials("x"))


async def test_list_is_sorted_and_filters_by_case_sensitive_prefix(
    storage: Storage, credentials: Creds
) -> None:
    for name in ["bob", "alice", "al_x", "alvin", "Alfred", "al%y", "zoë"]:
        await storage.accounts.create(name, *credentials("x"))

    assert await storage.accounts.list() == sorted(["bob", "alice", "al_x", "alvin", "Alfred", "al%y", "zoë"])
    assert await storage.accounts.list("al") == ["al%y", "al_x", "alice", "alvin"]
    assert await storage.accounts.list("Al") == ["Alfred"]
    assert await storage.accounts.list("al_") == ["al_x"]  # _ and % are literal, not wildcards
    assert await storage.accounts.list("al%") == ["al%y"]
    assert await storage.accounts.list("zo") == ["zoë"]
    assert await storage.accounts.list("nothing") == []
    assert await storage.accounts.count() == 7


async def test_usernames_differing_only_in_accents_or_case_are_different_accounts(
    storage: Storage, credentials: Creds
) -> None:
    for name in ["jürgen", "jurgen", "Jurgen", "straße", "strasse"]:
        await storage.accounts.create(name, *credentials(name))

    assert await storage.accounts.count() == 5
    record = await storage.accounts.get("jürgen")
    assert record is not None and record.sha1 == credentials("jürgen")[0]
    assert await storage.accounts.get("JÜRGEN") is None


async def test_longest_username_with_four_byte_characters_round_trips(
    storage: Storage, credentials: Creds
) -> None:
    username = ("ü😀" * 100)[:191]
    await storage.accounts.create(username, *credentials("x"))

    assert await storage.accounts.exists(username)
    assert await storage.accounts.list() == [username]


async def test_deleting_an_account_removes_its_roster_and_offline_messages(
    storage: Storage, credentials: Creds
) -> None:
    for name in ["alice", "bob"]:
        await storage.accounts.create(name, *credentials("x"))
        await storage.roster.put_item(name, RosterItem(contact="carol@example.org", subscription="both"))
        assert await storage.offline.push(name, b"<message/>", max_per_user=10)

    assert await storage.accounts.delete("alice") is True

    assert await storage.accounts.get("alice") is None
    assert await storage.roster.get_roster("alice") == (0, [])
    assert await storage.offline.fetch("alice") == []
    # bob is untouched
    assert await storage.accounts.exists("bob")
    version, items = await storage.roster.get_roster("bob")
    assert (version, [item.contact for item in items]) == (1, ["carol@example.org"])
    assert await storage.offline.count("bob") == 1


async def test_deleting_an_unknown_account_returns_false(storage: Storage) -> None:
    assert await storage.accounts.delete("nobody") is False
