"""Offline message storage (XEP-0160): opaque payloads per user, oldest first, bounded per user.

With a ``ConversationCrypto`` the payloads are sealed at rest with the data key of the conversation
between the recipient and the sender (``peer``), so erasing either account (crypto-shredding) makes them
unreadable; ``fetch`` drops such messages instead of returning them. Unsealed rows (written before
encryption was configured) are returned as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidTag
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema import accounts, offline_messages
from mbeon_chat.storage.stores._sql import now_ms

if TYPE_CHECKING:
    from mbeon_chat.storage.crypto import ConversationCrypto

__all__ = ["SqlOfflineStore", "sender_of"]

log = structlog.get_logger("mbeon_chat.storage.offline")

_DELETE_BATCH = 500

_table = offline_messages


class SqlOfflineStore:
    """``OfflineStore`` over SQLAlchemy Core. Ids are UUIDv7, so ordering by id is arrival order."""

    def __init__(
        self, database: Database, crypto: ConversationCrypto | None = None, domain: str = "localhost"
    ) -> None:
        self._db = database
        self._crypto = crypto
        self._domain = domain

    async def push(self, username: str, payload: bytes, max_per_user: int, peer: str | None = None) -> bool:
        # The id is chosen once, outside the retried function: a retry after a commit whose
        # acknowledgement was lost finds the row and does not store the message twice.
        message_id = new_id()
        return await self._db.run(
            "offline.push", self._push, username, message_id, now_ms(), bytes(payload), max_per_user, peer
        )

    async def _push(
        self,
        conn: AsyncConnection,
        username: str,
        message_id: str,
        created_at: int,
        payload: bytes,
        limit: int,
        peer: str | None,
    ) -> bool:
        crypto = self._crypto
        if crypto is None:
            return await _push(conn, username, message_id, created_at, payload, limit)
        from mbeon_chat.storage.crypto import Conversation

        own = f"{username}@{self._domain}"
        conversation = Conversation.chat(own, peer or sender_of(payload) or own)

        async def seal(conn: AsyncConnection, plaintext: bytes) -> bytes:
            key = await crypto.key_for_write(conn, conversation)
            return key.seal(plaintext, _context(username))

        return await _push(conn, username, message_id, created_at, payload, limit, seal)

    async def fetch(self, username: str) -> list[tuple[str, bytes]]:
        stored, unreadable = await self._db.run("offline.fetch", self._fetch, username, readonly=True)
        if unreadable:  # sealed with a destroyed key (an erased sender): gone for good
            log.info("offline.dropped_unreadable", username=username, count=len(unreadable))
            await self.delete(username, unreadable)
        return stored

    async def _fetch(self, conn: AsyncConnection, username: str) -> tuple[list[tuple[str, bytes]], list[str]]:
        rows = await _fetch(conn, username)
        crypto = self._crypto
        if crypto is None:
            return rows, []
        from mbeon_chat.storage.crypto import blob_key_id, is_sealed

        keys = await crypto.keys_for_read(conn, {blob_key_id(p) for _, p in rows if is_sealed(p)})
        out: list[tuple[str, bytes]] = []
        unreadable: list[str] = []
        for message_id, payload in rows:
            if not is_sealed(payload):
                out.append((message_id, payload))
                continue
            key = keys.get(blob_key_id(payload))
            try:
                if key is None:
                    raise InvalidTag("destroyed key")
                out.append((message_id, key.open(payload, _context(username))))
            except InvalidTag:
                unreadable.append(message_id)
        return out, unreadable

    async def delete(self, username: str, ids: Sequence[str]) -> None:
        if ids:
            await self._db.run("offline.delete", _delete, username, list(ids))

    async def count(self, username: str) -> int:
        return await self._db.run("offline.count", _count, username, readonly=True)


async def _count(conn: AsyncConnection, username: str) -> int:
    query = select(func.count()).select_from(_table).where(_table.c.username == username)
    return int(await conn.scalar(query) or 0)


async def _push(
    conn: AsyncConnection,
    username: str,
    message_id: str,
    created_at: int,
    payload: bytes,
    limit: int,
    seal: Callable[[AsyncConnection, bytes], Awaitable[bytes]] | None = None,
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
    if seal is not None:  # after the account lock: the same lock order as account deletion
        payload = await seal(conn, payload)
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


def _context(username: str) -> bytes:
    return b"offline|" + username.encode()


def sender_of(payload: bytes) -> str | None:
    """The bare JID in the ``from`` attribute of a serialised stanza's start tag (None if absent)."""
    end = payload.find(b">")
    head = payload[: end if end >= 0 else 4096]
    for quote in (b'"', b"'"):
        start = head.find(b" from=" + quote)
        if start >= 0:
            start += 7
            stop = head.find(quote, start)
            if stop > start:
                value = head[start:stop].decode("utf-8", "replace")
                return value.split("/", 1)[0]
    return None
