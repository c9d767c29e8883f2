"""Blocklist, PEP and vCard stores (storage/stores/client.py) on every backend, and account deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from mbeon_chat.storage.api import ScramCredentials, Storage
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.stores.client import SqlBlocklistStore, SqlPepStore, SqlVCardStore

DEVICES = "eu.siacs.conversations.axolotl.devicelist"
OPEN = {"access_model": "open", "max_items": 1}


@pytest.fixture
async def database(backend_url: str) -> AsyncIterator[Database]:
    db = Database(backend_url)
    yield db
    await db.close()


def item(item_id: str, text: str = "") -> bytes:
    return f'<item xmlns="http://jabber.org/protocol/pubsub" id="{item_id}">{text}</item>'.encode()


async def test_a_blocklist_keeps_each_jid_once_and_unblocks_some_or_all(database: Database) -> None:
    store = SqlBlocklistStore(database)
    await store.block("alice", ["troll@example.org", "spam.example", "jürgen@example.org/Handy"])
    await store.block("alice", ["troll@example.org"])  # again: no duplicate, no error
    await store.block("bob", ["alice@example.org"])

    assert await store.get("alice") == ["jürgen@example.org/Handy", "spam.example", "troll@example.org"]
    assert await store.unblock("alice", ["troll@example.org", "never@blocked.example"]) == [
        "troll@example.org"
    ]
    assert await store.unblock("alice", None) == ["jürgen@example.org/Handy", "spam.example"]
    assert await store.get("alice") == []
    assert await store.get("bob") == ["alice@example.org"]


async def test_pep_items_are_kept_newest_last_and_trimmed_to_max_items(database: Database) -> None:
    store = SqlPepStore(database)
    for n in range(5):
        await store.publish(
            "alice", "urn:xmpp:bookmarks:1", {"max_items": 3}, f"room{n}@conference", item(f"room{n}"), 3
        )
    await store.publish(
        "alice", "urn:xmpp:bookmarks:1", {"max_items": 3}, "room2@conference", item("room2", "✓"), 3
    )

    items = await store.items("alice", "urn:xmpp:bookmarks:1")
    assert [i.item_id for i in items] == ["room3@conference", "room4@conference", "room2@conference"]
    assert "✓" in items[-1].payload.decode()
    assert [i.item_id for i in await store.items("alice", "urn:xmpp:bookmarks:1", last=1)] == [
        "room2@conference"
    ]
    by_id = await store.items("alice", "urn:xmpp:bookmarks:1", ids=["room4@conference", "gone"])
    assert [i.item_id for i in by_id] == ["room4@conference"]
    node = await store.get_node("alice", "urn:xmpp:bookmarks:1")
    assert node is not None and node.config == {"max_items": 3}  # created by the first publish only


async def test_pep_nodes_are_reconfigured_retracted_and_deleted(database: Database) -> None:
    store = SqlPepStore(database)
    await store.publish("alice", DEVICES, OPEN, "current", item("current"), 1)
    await store.publish("alice", DEVICES, OPEN, "other", item("other"), 1)
    assert [i.item_id for i in await store.items("alice", DEVICES)] == ["other"]

    await store.put_node("alice", DEVICES, {"access_model": "presence", "max_items": 5}, 5)
    node = await store.get_node("alice", DEVICES)
    assert node is not None and node.config["access_model"] == "presence"
    assert await store.retract("alice", DEVICES, "other") is True
    assert await store.retract("alice", DEVICES, "other") is False
    assert await store.count_nodes("alice") == 1
    assert await store.delete_node("alice", DEVICES) is True
    assert await store.get_node("alice", DEVICES) is None
    assert await store.count_nodes("alice") == 0


async def test_a_node_without_persistent_items_stores_none(database: Database) -> None:
    store = SqlPepStore(database)
    await store.publish("alice", "http://jabber.org/protocol/tune", {"persist_items": False}, "x", None, 1)
    assert await store.get_node("alice", "http://jabber.org/protocol/tune") is not None
    assert await store.items("alice", "http://jabber.org/protocol/tune") == []


async def test_last_items_gives_the_newest_item_of_each_node_of_each_account(database: Database) -> None:
    store = SqlPepStore(database)
    await store.publish("alice", DEVICES, OPEN, "current", item("current", "1"), 1)
    await store.publish("alice", "urn:xmpp:avatar:metadata", {}, "a1", item("a1"), 10)
    await store.publish("alice", "urn:xmpp:avatar:metadata", {}, "a2", item("a2"), 10)
    await store.publish("bob", DEVICES, OPEN, "current", item("current", "2"), 1)
    await store.publish("carol", DEVICES, OPEN, "current", item("current", "3"), 1)
    await store.put_node("alice", "empty", {}, 1)

    last = await store.last_items(["alice", "bob", "nobody"])

    assert [(n.username, n.node, i.item_id) for n, i in last] == [
        ("alice", DEVICES, "current"),
        ("alice", "urn:xmpp:avatar:metadata", "a2"),
        ("bob", DEVICES, "current"),
    ]
    assert last[0][0].config == OPEN


async def test_a_vcard_is_replaced_not_duplicated(database: Database) -> None:
    store = SqlVCardStore(database)
    assert await store.get("alice") is None
    await store.put("alice", b'<vCard xmlns="vcard-temp"><FN>Alice</FN></vCard>')
    await store.put("alice", '<vCard xmlns="vcard-temp"><FN>Alice Ä</FN></vCard>'.encode())
    assert await store.get("alice") == '<vCard xmlns="vcard-temp"><FN>Alice Ä</FN></vCard>'.encode()


async def test_deleting_an_account_removes_its_blocklist_pep_data_and_vcard(
    storage: Storage, credentials: Callable[[str], tuple[ScramCredentials, ScramCredentials]]
) -> None:
    db = storage.database
    blocklist, pep, vcards = SqlBlocklistStore(db), SqlPepStore(db), SqlVCardStore(db)
    for user in ("alice", "bob"):
        await storage.accounts.create(user, *credentials("secret"))
        await blocklist.block(user, ["troll@example.org"])
        await pep.publish(user, DEVICES, OPEN, "current", item("current"), 1)
        await vcards.put(user, b"<vCard xmlns='vcard-temp'/>")

    assert await storage.accounts.delete("alice") is True

    assert await blocklist.get("alice") == [] and await blocklist.get("bob") == ["troll@example.org"]
    assert await pep.get_node("alice", DEVICES) is None and await pep.items("alice", DEVICES) == []
    assert await pep.get_node("bob", DEVICES) is not None
    assert await vcards.get("alice") is None and await vcards.get("bob") is not None
