"""The MUC room store and history archive on every backend (features/muc/store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mbeon_chat.features.muc.history import HistoryEntry
from mbeon_chat.features.muc.store import (
    AffiliationRecord,
    RoomRecord,
    SqlHistoryArchive,
    SqlRoomStore,
    WriteBehind,
)
from mbeon_chat.storage import schema_muc  # noqa: F401  (registers the tables, so tests clear them)
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.xmpp.stanza import make_message

SERVICE = "groups.example.org"
ROOM = f"tuesday@{SERVICE}"


@pytest.fixture
async def database(backend_url: str) -> AsyncIterator[Database]:
    db = Database(backend_url)
    yield db
    await db.close()


def record(room: str = ROOM, **kw: object) -> RoomRecord:
    values: dict[str, object] = {
        "config": {"name": "Tuesday group", "members_only": True, "get_member_list": ["moderator"]},
        "subject": "Welcome",
        "subject_nick": "Counsellor",
        "created_at": 1_700_000_000_000,
        "affiliations": (
            AffiliationRecord("counsellor@example.org", "owner"),
            AffiliationRecord("jürgen@example.org", "member", "Jürgen ☀", "invited"),
            AffiliationRecord("troll@example.org", "outcast", None, "spam"),
        ),
    }
    values.update(kw)
    return RoomRecord(room, **values)  # type: ignore[arg-type]


def entry(n: int, room: str = ROOM) -> HistoryEntry:
    stanza = make_message(room, f"message {n} ✓", "groupchat", from_=f"{room}/anna")
    return HistoryEntry(new_id(), room, "anna", 1_700_000_000_000 + n, stanza)


async def test_a_saved_room_loads_with_its_configuration_and_affiliations(database: Database) -> None:
    store = SqlRoomStore(database, SERVICE)
    await store.save_room(record())
    await SqlRoomStore(database, "other.example.org").save_room(record("elsewhere@other.example.org"))

    (loaded,) = await store.load_rooms()

    assert loaded.room == ROOM
    assert loaded.config == record().config
    assert (loaded.subject, loaded.subject_nick, loaded.created_at) == (
        "Welcome",
        "Counsellor",
        1_700_000_000_000,
    )
    assert sorted(loaded.affiliations, key=lambda a: a.jid) == sorted(
        record().affiliations, key=lambda a: a.jid
    )


async def test_put_room_updates_the_row_and_keeps_affiliations_and_creation_time(database: Database) -> None:
    store = SqlRoomStore(database, SERVICE)
    await store.save_room(record())

    await store.put_room(
        record(config={"name": "Renamed"}, subject="New topic", created_at=5, affiliations=())
    )

    (loaded,) = await store.load_rooms()
    assert loaded.config == {"name": "Renamed"} and loaded.subject == "New topic"
    assert loaded.created_at == 1_700_000_000_000
    assert len(loaded.affiliations) == 3


async def test_set_affiliation_inserts_updates_and_removes(database: Database) -> None:
    store = SqlRoomStore(database, SERVICE)
    await store.save_room(record(affiliations=()))

    await store.set_affiliation(ROOM, AffiliationRecord("anna@example.org", "member", "Anna"))
    await store.set_affiliation(ROOM, AffiliationRecord("anna@example.org", "admin"))
    await store.set_affiliation(ROOM, AffiliationRecord("bob@example.org", "member"))
    await store.set_affiliation(ROOM, AffiliationRecord("bob@example.org", "none"))
    await store.set_affiliation(ROOM, AffiliationRecord("nobody@example.org", "none"))

    (loaded,) = await store.load_rooms()
    assert loaded.affiliations == (AffiliationRecord("anna@example.org", "admin", None, None),)


async def test_history_comes_back_newest_last_and_limited(database: Database) -> None:
    archive = SqlHistoryArchive(database)
    entries = [entry(n) for n in range(30)]
    await archive.append(entries[:10])
    await archive.append(entries[10:])
    await archive.append([entry(0, room=f"other@{SERVICE}")])

    recent = await archive.recent(ROOM, 5)

    assert [e.id for e in recent] == [e.id for e in entries[-5:]]
    assert recent[-1].stanza.findtext("{jabber:client}body") == "message 29 ✓"
    assert recent[-1].stanza.get("from") == f"{ROOM}/anna"
    assert (recent[-1].nick, recent[-1].at_ms, recent[-1].room) == ("anna", 1_700_000_000_029, ROOM)
    assert await archive.recent(ROOM, 0) == []


async def test_appending_the_same_entries_again_stores_them_once(database: Database) -> None:
    archive = SqlHistoryArchive(database)
    entries = [entry(n) for n in range(3)]
    await archive.append(entries[:2])

    await archive.append(entries)  # a retry after a lost acknowledgement

    assert [e.id for e in await archive.recent(ROOM, 10)] == [e.id for e in entries]


async def test_deleting_a_room_removes_its_affiliations_and_history(database: Database) -> None:
    store, archive = SqlRoomStore(database, SERVICE), SqlHistoryArchive(database)
    await store.save_room(record())
    await store.save_room(record(f"kept@{SERVICE}"))
    await archive.append([entry(1), entry(2, room=f"kept@{SERVICE}")])

    await store.delete_room(ROOM)

    assert [r.room for r in await store.load_rooms()] == [f"kept@{SERVICE}"]
    assert await archive.recent(ROOM, 10) == []
    assert len(await archive.recent(f"kept@{SERVICE}", 10)) == 1


async def test_write_behind_applies_operations_in_order_and_drains_after_cancel(database: Database) -> None:
    store, archive = SqlRoomStore(database, SERVICE), SqlHistoryArchive(database)
    writer = WriteBehind(store, archive, batch=3)
    task = asyncio.create_task(writer.run())
    writer.put("room_full", record())
    writer.put("affiliation", (ROOM, AffiliationRecord("anna@example.org", "member")))
    entries = [entry(n) for n in range(5)]
    for e in entries:
        writer.put("history", e)
    writer.put("room", record(subject="later"))
    await asyncio.wait_for(writer.idle(), 10)
    task.cancel()
    writer.put("delete", f"gone@{SERVICE}")
    writer.put("history", entry(99))

    await writer.drain()

    (loaded,) = await store.load_rooms()
    assert loaded.subject == "later"
    assert {a.jid for a in loaded.affiliations} >= {"anna@example.org"}
    assert len(await archive.recent(ROOM, 10)) == 6
    assert not writer.pending
