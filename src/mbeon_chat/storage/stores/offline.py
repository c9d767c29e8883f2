"""Offline message storage (XEP-0160): opaque payloads per user, oldest first, bounded per user."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema import accounts, offline_messages
from mbeon_chat.storage.stores._sql import now_ms

__all__ = ["SqlOfflineStore"]

_DELETE_BATCH = 500

_table = offline_messages


class SqlOfflineStore:
    """``OfflineStore`` over SQLAlchemy Core. Ids are UUIDv7, so ordering by id is arrival order."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def push(self, username: str, payload: bytes, max_per_user: int) -> bool:
        # The id is chosen once, outside the retried function: a retry after a commit whose
        # acknowledgement was lost finds the row and does not store the message twice.
        message_id = new_id()
        return await self._db.run(
            "offline.push", _push, username, message_id, now_ms(), bytes(payload), max_per_user
        )

    async def fetch(self, username: str) -> list[tuple[str, bytes]]:
        return await self._db.run("offline.fetch", _fetch, username, readonly=True)

    async def delete(self, username: str, ids: Sequence[str]) -> None:
        if ids:
            await self._db.run("offline.delete", _delete, username, list(ids))

    async def count(self, username: str) -> int:
        return await self._db.run("offline.count", _count, username, readonly=True)


async def _count(conn: AsyncConnection, username: str) -> int:
    query = select(func.count()).select_from(_table).where(_table.c.username == username)
    return int(await conn.scalar(query) or 0)


async def _push(
    conn: AsyncConnection, username: str, message_id: str, created_at: int, payload: bytes, limit: int
) -> bool:
    if conn.dialect.name != "sqlite":  # SQLite: BEGIN IMMEDIATE already serialises writers
        # Lock the account row so two concurrent pushes cannot both see room for one more message.
        # (On Galera the lock is node-local: the limit is then soft across nodes.)
        lock = select(accounts.c.username).where(accounts.c.username == username).with_for_update()
        await conn.execute(lock)
    if await conn.scalar(select(_table.c.id).where(_table.c.id == message_id)) is not None:
        return True  # stored by an earlier attempt of this same push
    if await _count(conn, username) >= limit:
        return False
    values = {"id": message_id, "username": username, "created_at": created_at, "payload": payload}
    await conn.execute(insert(_table).values(values))
    return True


async def _fetch(conn: AsyncConnection, username: str) -> list[tuple[str, bytes]]:
    query = select(_table.c.id, _table.c.payload).where(_table.c.username == username).order_by(_table.c.id)
    return [(row.id, bytes(row.payload)) for row in await conn.execute(query)]


async def _delete(conn: AsyncConnection, username: str, ids: list[str]) -> None:
    for start in range(0, len(ids), _DELETE_BATCH):
        batch = ids[start : start + _DELETE_BATCH]
        await conn.execute(delete(_table).where(_table.c.username == username, _table.c.id.in_(batch)))
