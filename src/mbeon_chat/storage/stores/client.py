"""Stores of the client features: blocklists (XEP-0191), PEP nodes and items (XEP-0163), vCards (XEP-0054).

Every operation is one named transaction (``Database.run``) and safe to retry: inserts are upserts or
insert-if-absent, and values that must not change between attempts (an item's ``seq``) are chosen before
the first one. Payloads are the serialised XML elements, opaque here.

``delete_account_data`` is registered by ``open_storage`` as an account-deletion cleanup: it runs in the
deletion's transaction, so an account never leaves rows behind here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema_client import blocklist_items, pep_items, pep_nodes, vcards
from mbeon_chat.storage.stores._sql import insert_ignore, now_ms, upsert

__all__ = [
    "NodeRecord",
    "PepItem",
    "SqlBlocklistStore",
    "SqlPepStore",
    "SqlVCardStore",
    "delete_account_data",
]

_CHUNK = 500  # parameters per IN (...) list


async def delete_account_data(conn: AsyncConnection, username: str) -> None:
    """Remove the account's blocklist, PEP nodes and items, and vCard (inside the deletion transaction)."""
    for table in (blocklist_items, pep_items, pep_nodes, vcards):
        await conn.execute(delete(table).where(table.c.username == username))


# --- XEP-0191 -------------------------------------------------------------------------------------------
class SqlBlocklistStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, username: str) -> list[str]:
        """The blocked JIDs, sorted."""
        return await self._db.run("blocklist.get", _blocklist, username, readonly=True)

    async def block(self, username: str, jids: Sequence[str]) -> None:
        await self._db.run("blocklist.block", _block, username, tuple(jids), now_ms())

    async def unblock(self, username: str, jids: Sequence[str] | None) -> list[str]:
        """Remove ``jids`` (None: every one); returns the JIDs that were blocked and no longer are."""
        return await self._db.run(
            "blocklist.unblock", _unblock, username, None if jids is None else tuple(jids)
        )


async def _blocklist(conn: AsyncConnection, username: str) -> list[str]:
    query = select(blocklist_items.c.jid).where(blocklist_items.c.username == username)
    return sorted((await conn.scalars(query)).all())


async def _block(conn: AsyncConnection, username: str, jids: tuple[str, ...], now: int) -> None:
    if jids:
        await insert_ignore(
            conn, blocklist_items, [{"username": username, "jid": jid, "created_at": now} for jid in jids]
        )


async def _unblock(conn: AsyncConnection, username: str, jids: tuple[str, ...] | None) -> list[str]:
    present = await _blocklist(conn, username)
    wanted = set(jids) if jids is not None else None
    gone = present if wanted is None else [jid for jid in present if jid in wanted]
    for start in range(0, len(gone), _CHUNK):
        chunk = gone[start : start + _CHUNK]
        where = and_(blocklist_items.c.username == username, blocklist_items.c.jid.in_(chunk))
        await conn.execute(delete(blocklist_items).where(where))
    return gone


# --- XEP-0163 -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeRecord:
    username: str
    node: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PepItem:
    item_id: str
    payload: bytes  # the <item/> element
    published_at: int  # ms


class _Sequence:
    """Strictly increasing microsecond stamps (item order survives clock steps within this process)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


_SEQ = _Sequence()


class SqlPepStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get_node(self, username: str, node: str) -> NodeRecord | None:
        return await self._db.run("pep.get_node", _get_node, username, node, readonly=True)

    async def count_nodes(self, username: str) -> int:
        return await self._db.run("pep.count_nodes", _count_nodes, username, readonly=True)

    async def put_node(self, username: str, node: str, config: dict[str, Any], max_items: int | None) -> None:
        """Create or reconfigure a node; items beyond ``max_items`` (None: all, when not persistent) go."""
        await self._db.run("pep.put_node", _put_node, username, node, config, max_items, now_ms())

    async def publish(
        self,
        username: str,
        node: str,
        config: dict[str, Any],
        item_id: str,
        payload: bytes | None,
        max_items: int,
    ) -> None:
        """Create the node with ``config`` if it does not exist, then store the item (``payload`` None: a
        node that does not persist items) and keep only the newest ``max_items``."""
        await self._db.run(
            "pep.publish",
            _publish,
            username,
            node,
            config,
            item_id,
            payload,
            max_items,
            _SEQ.next(),
            now_ms(),
        )

    async def items(
        self, username: str, node: str, *, last: int | None = None, ids: Sequence[str] | None = None
    ) -> list[PepItem]:
        """The node's items oldest first: all, the ``last`` newest, or those with the given ids."""
        return await self._db.run("pep.items", _items, username, node, last, ids, readonly=True)

    async def retract(self, username: str, node: str, item_id: str) -> bool:
        return await self._db.run("pep.retract", _retract, username, node, item_id)

    async def delete_node(self, username: str, node: str) -> bool:
        return await self._db.run("pep.delete_node", _delete_node, username, node)

    async def last_items(self, usernames: Iterable[str]) -> list[tuple[NodeRecord, PepItem]]:
        """For every node of these accounts that has items: the node and its newest item."""
        names = sorted(set(usernames))
        out: list[tuple[NodeRecord, PepItem]] = []
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            out.extend(await self._db.run("pep.last_items", _last_items, chunk, readonly=True))
        return out


def _node_record(row: Any) -> NodeRecord:
    return NodeRecord(row.username, row.node, json.loads(row.config))


async def _get_node(conn: AsyncConnection, username: str, node: str) -> NodeRecord | None:
    where = and_(pep_nodes.c.username == username, pep_nodes.c.node == node)
    row = (await conn.execute(select(pep_nodes).where(where))).first()
    return _node_record(row) if row is not None else None


async def _count_nodes(conn: AsyncConnection, username: str) -> int:
    query = select(func.count()).select_from(pep_nodes).where(pep_nodes.c.username == username)
    return int(await conn.scalar(query) or 0)


async def _put_node(
    conn: AsyncConnection, username: str, node: str, config: dict[str, Any], max_items: int | None, now: int
) -> None:
    values = {"username": username, "node": node, "config": json.dumps(config, sort_keys=True)}
    await upsert(
        conn,
        pep_nodes,
        {**values, "created_at": now, "updated_at": now},
        ("username", "node"),
        {"config": values["config"], "updated_at": now},
    )
    await _trim(conn, username, node, max_items or 0)


async def _publish(
    conn: AsyncConnection,
    username: str,
    node: str,
    config: dict[str, Any],
    item_id: str,
    payload: bytes | None,
    max_items: int,
    seq: int,
    now: int,
) -> None:
    node_row = {
        "username": username,
        "node": node,
        "config": json.dumps(config, sort_keys=True),
        "created_at": now,
        "updated_at": now,
    }
    await insert_ignore(conn, pep_nodes, node_row)
    if payload is not None:
        item = {"username": username, "node": node, "item_id": item_id, "seq": seq, "published_at": now}
        await upsert(conn, pep_items, {**item, "payload": payload}, ("username", "node", "item_id"))
    await _trim(conn, username, node, max_items if payload is not None else 0)


async def _trim(conn: AsyncConnection, username: str, node: str, keep: int) -> None:
    where = and_(pep_items.c.username == username, pep_items.c.node == node)
    ids = (
        await conn.scalars(select(pep_items.c.item_id).where(where).order_by(pep_items.c.seq.desc()))
    ).all()
    surplus = list(ids[keep:])
    for start in range(0, len(surplus), _CHUNK):
        await conn.execute(
            delete(pep_items).where(where, pep_items.c.item_id.in_(surplus[start : start + _CHUNK]))
        )


async def _items(
    conn: AsyncConnection, username: str, node: str, last: int | None, ids: Sequence[str] | None
) -> list[PepItem]:
    columns = (pep_items.c.item_id, pep_items.c.payload, pep_items.c.published_at)
    query = select(*columns).where(pep_items.c.username == username, pep_items.c.node == node)
    if ids is not None:
        query = query.where(pep_items.c.item_id.in_(list(ids)[:_CHUNK]))
    query = query.order_by(pep_items.c.seq.desc())
    if last is not None:
        query = query.limit(last)
    rows = (await conn.execute(query)).all()
    return [PepItem(r.item_id, bytes(r.payload), int(r.published_at)) for r in reversed(rows)]


async def _retract(conn: AsyncConnection, username: str, node: str, item_id: str) -> bool:
    where = and_(pep_items.c.username == username, pep_items.c.node == node, pep_items.c.item_id == item_id)
    result = await conn.execute(delete(pep_items).where(where))
    return bool(result.rowcount)


async def _delete_node(conn: AsyncConnection, username: str, node: str) -> bool:
    await conn.execute(delete(pep_items).where(pep_items.c.username == username, pep_items.c.node == node))
    result = await conn.execute(
        delete(pep_nodes).where(pep_nodes.c.username == username, pep_nodes.c.node == node)
    )
    return bool(result.rowcount)


async def _last_items(conn: AsyncConnection, usernames: list[str]) -> list[tuple[NodeRecord, PepItem]]:
    newest = (
        select(pep_items.c.username, pep_items.c.node, func.max(pep_items.c.seq).label("seq"))
        .where(pep_items.c.username.in_(usernames))
        .group_by(pep_items.c.username, pep_items.c.node)
        .subquery()
    )
    query = (
        select(pep_nodes, pep_items.c.item_id, pep_items.c.payload, pep_items.c.published_at)
        .join(newest, and_(newest.c.username == pep_nodes.c.username, newest.c.node == pep_nodes.c.node))
        .join(
            pep_items,
            and_(
                pep_items.c.username == newest.c.username,
                pep_items.c.node == newest.c.node,
                pep_items.c.seq == newest.c.seq,
            ),
        )
    )
    rows = (await conn.execute(query)).all()
    return [
        (_node_record(r), PepItem(r.item_id, bytes(r.payload), int(r.published_at)))
        for r in sorted(rows, key=lambda r: (r.username, r.node))
    ]


# --- XEP-0054 -------------------------------------------------------------------------------------------
class SqlVCardStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, username: str) -> bytes | None:
        return await self._db.run("vcard.get", _get_vcard, username, readonly=True)

    async def put(self, username: str, payload: bytes) -> None:
        await self._db.run("vcard.put", _put_vcard, username, payload, now_ms())


async def _get_vcard(conn: AsyncConnection, username: str) -> bytes | None:
    payload = await conn.scalar(select(vcards.c.payload).where(vcards.c.username == username))
    return bytes(payload) if payload is not None else None


async def _put_vcard(conn: AsyncConnection, username: str, payload: bytes, now: int) -> None:
    await upsert(conn, vcards, {"username": username, "payload": payload, "updated_at": now}, ("username",))
