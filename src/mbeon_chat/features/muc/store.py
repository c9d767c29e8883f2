"""Persistence of the MUC service: persistent rooms, affiliations and room history (XEP-0045 10.1.3).

``SqlRoomStore`` and ``SqlHistoryArchive`` run every operation as a named transaction on SQLite,
MySQL/MariaDB or PostgreSQL; all writes are idempotent (upserts, history ids chosen before the first
attempt), so a retried transaction never duplicates anything.

``WriteBehind`` keeps the stanza path free of database waits: the service queues writes in order, one
background task applies them in batches, and ``drain()`` (called on unload) writes whatever is left, even
after the task was cancelled mid-batch (an item leaves the queue only once its batch committed).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema_muc import muc_affiliations, muc_history, muc_rooms
from mbeon_chat.storage.stores._sql import now_ms, upsert

from .history import HistoryArchive, HistoryEntry, element_from_bytes, element_to_bytes

__all__ = ["AffiliationRecord", "RoomRecord", "SqlHistoryArchive", "SqlRoomStore", "WriteBehind"]

log = structlog.get_logger("mbeon_chat.plugin.muc.store")


@dataclass(frozen=True, slots=True)
class AffiliationRecord:
    jid: str
    affiliation: str  # owner | admin | member | outcast
    nick: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room: str  # bare JID
    config: dict[str, Any]
    subject: str = ""
    subject_nick: str = ""
    created_at: int = 0
    affiliations: tuple[AffiliationRecord, ...] = field(default_factory=tuple)


class SqlRoomStore:
    def __init__(self, database: Database, service: str) -> None:
        self._db = database
        self.service = service

    async def load_rooms(self) -> list[RoomRecord]:
        """Every persistent room of this service, with its affiliations."""
        return await self._db.run("muc.load_rooms", _load_rooms, self.service, readonly=True)

    async def save_room(self, record: RoomRecord) -> None:
        """Insert or update the room row and replace its affiliation list."""
        await self._db.run("muc.save_room", _save_room, self.service, record, now_ms())

    async def put_room(self, record: RoomRecord) -> None:
        """Insert or update the room row only (configuration and subject)."""
        await self._db.run("muc.put_room", _put_room, self.service, record, now_ms())

    async def set_affiliation(self, room: str, item: AffiliationRecord) -> None:
        """Set one affiliation; ``none`` removes the row."""
        await self._db.run("muc.set_affiliation", _set_affiliation, room, item)

    async def delete_room(self, room: str) -> None:
        """Remove the room, its affiliations and its history."""
        await self._db.run("muc.delete_room", _delete_room, room)

    async def apply(self, ops: Sequence[tuple[str, Any]]) -> None:
        """Apply queued operations in one transaction, in order (see ``WriteBehind``)."""
        await self._db.run("muc.write_behind", _apply, self.service, list(ops), now_ms())


class SqlHistoryArchive:
    """``HistoryArchive`` over the ``muc_history`` table (plain payloads until the encrypted archive)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def append(self, entries: Sequence[HistoryEntry]) -> None:
        if entries:
            await self._db.run("muc.history_append", _append, list(entries))

    async def recent(self, room: str, limit: int) -> list[HistoryEntry]:
        if limit <= 0:
            return []
        return await self._db.run("muc.history_recent", _recent, room, limit, readonly=True)

    async def purge(self, room: str) -> None:
        await self._db.run("muc.history_purge", _purge, room)


# --- transactions ----------------------------------------------------------------------------------
async def _load_rooms(conn: AsyncConnection, service: str) -> list[RoomRecord]:
    rows = (await conn.execute(select(muc_rooms).where(muc_rooms.c.service == service))).all()
    if not rows:
        return []
    names = [row.room for row in rows]
    affs: dict[str, list[AffiliationRecord]] = {name: [] for name in names}
    for start in range(0, len(names), 500):
        query = select(muc_affiliations).where(muc_affiliations.c.room.in_(names[start : start + 500]))
        for a in await conn.execute(query.order_by(muc_affiliations.c.room, muc_affiliations.c.jid)):
            affs[a.room].append(AffiliationRecord(a.jid, a.affiliation, a.nick, a.reason))
    return [
        RoomRecord(
            room=row.room,
            config=json.loads(row.config),
            subject=row.subject,
            subject_nick=row.subject_nick,
            created_at=row.created_at,
            affiliations=tuple(affs[row.room]),
        )
        for row in rows
    ]


async def _put_room(conn: AsyncConnection, service: str, record: RoomRecord, now: int) -> None:
    values = {
        "room": record.room,
        "service": service,
        "config": json.dumps(record.config, sort_keys=True),
        "subject": record.subject,
        "subject_nick": record.subject_nick,
        "created_at": record.created_at or now,
        "updated_at": now,
    }
    update = {k: v for k, v in values.items() if k not in ("room", "created_at")}
    await upsert(conn, muc_rooms, values, ["room"], update)


async def _save_room(conn: AsyncConnection, service: str, record: RoomRecord, now: int) -> None:
    await _put_room(conn, service, record, now)
    await conn.execute(delete(muc_affiliations).where(muc_affiliations.c.room == record.room))
    for item in record.affiliations:
        await _set_affiliation(conn, record.room, item)


async def _set_affiliation(conn: AsyncConnection, room: str, item: AffiliationRecord) -> None:
    if item.affiliation == "none":
        where = (muc_affiliations.c.room == room) & (muc_affiliations.c.jid == item.jid)
        await conn.execute(delete(muc_affiliations).where(where))
        return
    values = {
        "room": room,
        "jid": item.jid,
        "affiliation": item.affiliation,
        "nick": item.nick,
        "reason": item.reason,
    }
    await upsert(conn, muc_affiliations, values, ["room", "jid"])


async def _delete_room(conn: AsyncConnection, room: str) -> None:
    await conn.execute(delete(muc_history).where(muc_history.c.room == room))
    await conn.execute(delete(muc_affiliations).where(muc_affiliations.c.room == room))
    await conn.execute(delete(muc_rooms).where(muc_rooms.c.room == room))


async def _append(conn: AsyncConnection, entries: list[HistoryEntry]) -> None:
    ids = [e.id for e in entries]
    existing = set((await conn.execute(select(muc_history.c.id).where(muc_history.c.id.in_(ids)))).scalars())
    rows = [
        {
            "id": e.id,
            "room": e.room,
            "nick": e.nick,
            "created_at": e.at_ms,
            "payload": element_to_bytes(e.stanza),
        }
        for e in entries
        if e.id not in existing
    ]
    if rows:
        await conn.execute(muc_history.insert(), rows)


async def _recent(conn: AsyncConnection, room: str, limit: int) -> list[HistoryEntry]:
    query = (
        select(muc_history).where(muc_history.c.room == room).order_by(muc_history.c.id.desc()).limit(limit)
    )
    rows = (await conn.execute(query)).all()
    return [
        HistoryEntry(row.id, row.room, row.nick, row.created_at, element_from_bytes(bytes(row.payload)))
        for row in reversed(rows)
    ]


async def _purge(conn: AsyncConnection, room: str) -> None:
    await conn.execute(delete(muc_history).where(muc_history.c.room == room))


async def _apply(conn: AsyncConnection, service: str, ops: list[tuple[str, Any]], now: int) -> None:
    history: list[HistoryEntry] = []
    for kind, arg in ops:
        if kind == "history":
            history.append(arg)
            continue
        if history:
            await _append(conn, history)
            history = []
        if kind == "room":
            await _put_room(conn, service, arg, now)
        elif kind == "room_full":
            await _save_room(conn, service, arg, now)
        elif kind == "affiliation":
            await _set_affiliation(conn, *arg)
        elif kind == "delete":
            await _delete_room(conn, arg)
    if history:
        await _append(conn, history)


# --- write-behind ----------------------------------------------------------------------------------
class WriteBehind:
    """Ordered, batched writes off the stanza path.

    Operations: ``("room", RoomRecord)`` (row only), ``("room_full", RoomRecord)`` (row and affiliations),
    ``("affiliation", (room, AffiliationRecord))``, ``("delete", room)``, ``("history", HistoryEntry)``.
    With an archive other than the SQL one, history entries go to ``archive.append`` instead.
    """

    def __init__(self, rooms: SqlRoomStore, archive: HistoryArchive | None = None, batch: int = 200) -> None:
        self.rooms = rooms
        self.archive = archive
        self.batch = batch
        self.pending: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, kind: str, arg: Any) -> None:
        self.pending.append((kind, arg))
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The background task: write batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_available()

    async def drain(self) -> None:
        """Write everything still queued (after the task was cancelled, e.g. on unload)."""
        await self._write_available()

    async def idle(self) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        await self._idle.wait()

    async def _write_available(self) -> None:
        while self.pending:
            ops = [self.pending[i] for i in range(min(self.batch, len(self.pending)))]
            try:
                await self._write(ops)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("muc.write_failed", operations=len(ops))  # dropped: never retry forever
            for _ in ops:
                self.pending.popleft()
        self._idle.set()

    async def _write(self, ops: list[tuple[str, Any]]) -> None:
        archive = self.archive
        if archive is None or isinstance(archive, SqlHistoryArchive):
            await self.rooms.apply(ops)
            return
        rest = [op for op in ops if op[0] != "history"]
        if rest:
            await self.rooms.apply(rest)
        await archive.append([op[1] for op in ops if op[0] == "history"])
