"""Rosters (RFC 6121 section 2) with roster versioning (RFC 6121 section 2.6).

Every change bumps the user's version in ``roster_versions`` in the same transaction, so versions are
strictly increasing per user. The version row is written first in every changing transaction: it
serialises concurrent changes of one roster, and keeps the lock order the same everywhere.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.api import SUBSCRIPTIONS, RosterItem
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema import roster_items, roster_versions
from mbeon_chat.storage.stores._sql import upsert

__all__ = ["SqlRosterStore"]


def _item(row: Row[Any]) -> RosterItem:
    return RosterItem(
        contact=row.contact,
        name=row.name,
        subscription=row.subscription,
        ask_out=bool(row.ask_out),
        pending_in=bool(row.pending_in),
        approved=bool(row.approved),
        groups=tuple(json.loads(row.groups)),
        in_roster=bool(row.in_roster),
    )


class SqlRosterStore:
    """``RosterStore`` over SQLAlchemy Core."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get_roster(self, username: str) -> tuple[int, list[RosterItem]]:
        return await self._db.run("roster.get_roster", _get_roster, username, readonly=True)

    async def get_item(self, username: str, contact: str) -> RosterItem | None:
        return await self._db.run("roster.get_item", _get_item, username, contact, readonly=True)

    async def put_item(self, username: str, item: RosterItem) -> int:
        return await self._db.run("roster.put_item", _put_item, username, item)

    async def delete_item(self, username: str, contact: str) -> int:
        return await self._db.run("roster.delete_item", _delete_item, username, contact)

    async def contacts_with_subscription(self, username: str, kinds: set[str]) -> list[RosterItem]:
        unknown = kinds - SUBSCRIPTIONS
        if unknown:
            raise ValueError(f"unknown subscription kinds {sorted(unknown)}")
        if not kinds:
            return []
        return await self._db.run(
            "roster.contacts_with_subscription", _with_subscription, username, frozenset(kinds), readonly=True
        )


async def _version(conn: AsyncConnection, username: str) -> int:
    value = await conn.scalar(select(roster_versions.c.version).where(roster_versions.c.username == username))
    return int(value or 0)


async def _bump_version(conn: AsyncConnection, username: str) -> int:
    await upsert(
        conn,
        roster_versions,
        {"username": username, "version": 1},
        keys=["username"],
        update={"version": roster_versions.c.version + 1},
    )
    return await _version(conn, username)  # our own write, row locked by us until commit


async def _get_roster(conn: AsyncConnection, username: str) -> tuple[int, list[RosterItem]]:
    version = await _version(conn, username)
    rows = await conn.execute(select(roster_items).where(roster_items.c.username == username))
    return version, sorted((_item(row) for row in rows), key=lambda item: item.contact)


async def _get_item(conn: AsyncConnection, username: str, contact: str) -> RosterItem | None:
    query = select(roster_items).where(roster_items.c.username == username, roster_items.c.contact == contact)
    row = (await conn.execute(query)).first()
    return None if row is None else _item(row)


async def _put_item(conn: AsyncConnection, username: str, item: RosterItem) -> int:
    version = await _bump_version(conn, username)
    values = {
        "username": username,
        "contact": item.contact,
        "name": item.name,
        "subscription": item.subscription,
        "ask_out": item.ask_out,
        "pending_in": item.pending_in,
        "approved": item.approved,
        "groups": json.dumps(list(item.groups), ensure_ascii=False),
        "in_roster": item.in_roster,
        "version": version,
    }
    await upsert(conn, roster_items, values, keys=["username", "contact"])
    return version


async def _delete_item(conn: AsyncConnection, username: str, contact: str) -> int:
    if await _get_item(conn, username, contact) is None:
        return await _version(conn, username)
    version = await _bump_version(conn, username)
    await conn.execute(
        delete(roster_items).where(roster_items.c.username == username, roster_items.c.contact == contact)
    )
    return version


async def _with_subscription(conn: AsyncConnection, username: str, kinds: frozenset[str]) -> list[RosterItem]:
    query = select(roster_items).where(
        roster_items.c.username == username, roster_items.c.subscription.in_(sorted(kinds))
    )
    return sorted((_item(row) for row in await conn.execute(query)), key=lambda item: item.contact)
