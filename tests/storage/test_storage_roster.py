"""RosterStore on every backend: items, pending records, strictly increasing versions."""

from __future__ import annotations

import asyncio

import pytest

from mbeon_chat.storage.api import RosterItem, Storage


async def test_a_new_users_roster_is_empty_at_version_zero(storage: Storage) -> None:
    assert await storage.roster.get_roster("alice") == (0, [])
    assert await storage.roster.get_item("alice", "bob@example.org") is None


async def test_put_item_round_trips_every_field(storage: Storage) -> None:
    item = RosterItem(
        contact="bob@example.org",
        name="Bob ✓ Beratung",
        subscription="to",
        ask_out=True,
        pending_in=True,
        approved=True,
        groups=("Freunde", "Ärzte & Co", "家族"),
        in_roster=True,
    )
    version = await storage.roster.put_item("alice", item)

    assert await storage.roster.get_item("alice", "bob@example.org") == item
    assert await storage.roster.get_roster("alice") == (version, [item])


async def test_put_item_replaces_the_existing_item(storage: Storage) -> None:
    await storage.roster.put_item("alice", RosterItem("bob@example.org", name="Bob", groups=("a", "b")))
    replaced = RosterItem("bob@example.org", name=None, subscription="both", groups=())

    await storage.roster.put_item("alice", replaced)

    version, items = await storage.roster.get_roster("alice")
    assert (version, items) == (2, [replaced])


async def test_every_change_bumps_the_version_strictly(storage: Storage) -> None:
    versions = [
        await storage.roster.put_item("alice", RosterItem("bob@example.org")),
        await storage.roster.put_item("alice", RosterItem("carol@example.org")),
        await storage.roster.put_item("alice", RosterItem("bob@example.org", subscription="to")),
        await storage.roster.delete_item("alice", "carol@example.org"),
    ]

    assert versions == [1, 2, 3, 4]
    version, items = await storage.roster.get_roster("alice")
    assert version == 4
    assert [item.contact for item in items] == ["bob@example.org"]


async def test_deleting_a_missing_item_keeps_the_version(storage: Storage) -> None:
    assert await storage.roster.delete_item("alice", "ghost@example.org") == 0
    await storage.roster.put_item("alice", RosterItem("bob@example.org"))

    assert await storage.roster.delete_item("alice", "ghost@example.org") == 1
    assert (await storage.roster.get_roster("alice"))[0] == 1


async def test_rosters_and_versions_are_per_user(storage: Storage) -> None:
    await storage.roster.put_item("alice", RosterItem("carol@example.org"))
    await storage.roster.put_item("alice", RosterItem("dave@example.org"))
    assert await storage.roster.put_item("bob", RosterItem("carol@example.org", name="C")) == 1

    assert [i.contact for i in (await storage.roster.get_roster("alice"))[1]] == [
        "carol@example.org",
        "dave@example.org",
    ]
    bobs_carol = await storage.roster.get_item("bob", "carol@example.org")
    assert bobs_carol == RosterItem("carol@example.org", name="C")
    assert await storage.roster.delete_item("bob", "carol@example.org") == 2
    assert (await storage.roster.get_roster("alice"))[0] == 2


async def test_concurrent_changes_get_distinct_increasing_versions(storage: Storage) -> None:
    contacts = [f"c{n}@example.org" for n in range(12)]

    versions = await asyncio.gather(*(storage.roster.put_item("alice", RosterItem(c)) for c in contacts))

    assert sorted(versions) == list(range(1, 13))
    version, items = await storage.roster.get_roster("alice")
    assert version == 12
    assert [item.contact for item in items] == sorted(contacts)


async def test_pending_in_records_are_returned_for_the_caller_to_filter(storage: Storage) -> None:
    pending = RosterItem("stranger@example.org", pending_in=True, in_roster=False)
    await storage.roster.put_item("alice", pending)
    await storage.roster.put_item("alice", RosterItem("bob@example.org", subscription="both"))

    _, items = await storage.roster.get_roster("alice")

    assert pending in items
    assert [item.contact for item in items if item.in_roster] == ["bob@example.org"]


async def test_contacts_with_subscription_filters_by_kind(storage: Storage) -> None:
    for contact, subscription in [("a@x", "none"), ("b@x", "to"), ("c@x", "from"), ("d@x", "both")]:
        await storage.roster.put_item("alice", RosterItem(contact, subscription=subscription))

    presence_to = await storage.roster.contacts_with_subscription("alice", {"from", "both"})
    presence_from = await storage.roster.contacts_with_subscription("alice", {"to", "both"})

    assert [item.contact for item in presence_to] == ["c@x", "d@x"]
    assert [item.contact for item in presence_from] == ["b@x", "d@x"]
    assert await storage.roster.contacts_with_subscription("alice", set()) == []
    with pytest.raises(ValueError, match="unknown subscription"):
        await storage.roster.contacts_with_subscription("alice", {"mutual"})


async def test_longest_jids_and_unicode_contacts_are_distinct_keys(storage: Storage) -> None:
    username = ("ö" * 191)[:191]
    long_contact = "ü" * 150 + "@" + "d" * 36 + ".org"
    assert len(long_contact) == 191
    contacts = [long_contact, "jürgen@example.org", "jurgen@example.org", "Jurgen@example.org"]
    for contact in contacts:
        await storage.roster.put_item(username, RosterItem(contact, name=contact))

    version, items = await storage.roster.get_roster(username)

    assert version == 4
    assert sorted(item.contact for item in items) == sorted(contacts)
    assert all(item.name == item.contact for item in items)


def test_roster_item_rejects_unknown_subscription_and_list_groups() -> None:
    with pytest.raises(ValueError, match="subscription"):
        RosterItem("bob@example.org", subscription="mutual")
    with pytest.raises(TypeError, match="tuple"):
        RosterItem("bob@example.org", groups=["a"])  # type: ignore[arg-type]
