"""Accounts and their SCRAM credentials (RFC 5802 / RFC 7677); never a plain password."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.api import AccountRecord, AlreadyExists, NotFound, ScramCredentials
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema import accounts, offline_messages, roster_items, roster_versions
from mbeon_chat.storage.stores._sql import now_ms

__all__ = ["SqlAccountStore"]

_HASHES = ("sha1", "sha256")

log = structlog.get_logger("mbeon_chat.storage.accounts")

#: ``cleanup(conn, username)``: deletes a feature's rows of the account, inside the deletion transaction.
AccountCleanup = Callable[[AsyncConnection, str], Awaitable[None]]
#: ``after(username)``: follow-up work once the deletion committed (errors are logged, not raised).
AfterDelete = Callable[[str], Awaitable[Any]]


def _credential_columns(sha1: ScramCredentials, sha256: ScramCredentials) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for hash_name, cred in zip(_HASHES, (sha1, sha256), strict=True):
        if cred.hash_name != hash_name:
            raise ValueError(f"expected {hash_name} credentials, got {cred.hash_name}")
        prefix = f"scram_{hash_name}_"
        values[prefix + "salt"] = cred.salt
        values[prefix + "iterations"] = cred.iterations
        values[prefix + "stored_key"] = cred.stored_key
        values[prefix + "server_key"] = cred.server_key
    return values


def _credentials(row: Row[Any], hash_name: str) -> ScramCredentials | None:
    prefix = f"scram_{hash_name}_"
    mapping = row._mapping
    if mapping[prefix + "salt"] is None:
        return None
    return ScramCredentials(
        hash_name=hash_name,
        salt=bytes(mapping[prefix + "salt"]),
        iterations=int(mapping[prefix + "iterations"]),
        stored_key=bytes(mapping[prefix + "stored_key"]),
        server_key=bytes(mapping[prefix + "server_key"]),
    )


class SqlAccountStore:
    """``AccountStore`` over SQLAlchemy Core."""

    def __init__(self, database: Database) -> None:
        self._db = database
        #: Run in the same transaction as the deletion (features' tables: archive, keys ...).
        self.cleanups: list[AccountCleanup] = []
        #: Run after the deletion committed (batched sweeps that would be too big for one transaction).
        self.after_delete: list[AfterDelete] = []

    async def create(self, username: str, sha1: ScramCredentials, sha256: ScramCredentials) -> None:
        values = {"username": username, "created_at": now_ms(), **_credential_columns(sha1, sha256)}
        await self._db.run("accounts.create", _create, values)

    async def get(self, username: str) -> AccountRecord | None:
        return await self._db.run("accounts.get", _get, username, readonly=True)

    async def set_credentials(self, username: str, sha1: ScramCredentials, sha256: ScramCredentials) -> None:
        values = _credential_columns(sha1, sha256)
        await self._db.run("accounts.set_credentials", _set_credentials, username, values)

    async def delete(self, username: str) -> bool:
        deleted = await self._db.run("accounts.delete", _delete, username, tuple(self.cleanups))
        for after in self.after_delete:
            try:
                await after(username)
            except Exception as exc:  # the deletion stands; periodic sweeps catch up
                log.warning("accounts.after_delete_failed", username=username, error=repr(exc))
        return deleted

    async def list(self, prefix: str | None = None) -> builtins.list[str]:
        return await self._db.run("accounts.list", _list, prefix, readonly=True)

    async def exists(self, username: str) -> bool:
        return await self._db.run("accounts.exists", _exists, username, readonly=True)

    async def count(self) -> int:
        return await self._db.run("accounts.count", _count, readonly=True)


async def _exists(conn: AsyncConnection, username: str) -> bool:
    found = await conn.scalar(select(accounts.c.username).where(accounts.c.username == username))
    return found is not None


async def _create(conn: AsyncConnection, values: dict[str, Any]) -> None:
    username = values["username"]
    if await _exists(conn, username):
        raise AlreadyExists(username)
    try:
        await conn.execute(insert(accounts).values(values))
    except IntegrityError:  # created concurrently between the check and the insert
        raise AlreadyExists(username) from None


async def _get(conn: AsyncConnection, username: str) -> AccountRecord | None:
    row = (await conn.execute(select(accounts).where(accounts.c.username == username))).first()
    if row is None:
        return None
    return AccountRecord(
        username=row.username,
        created_at=int(row.created_at),
        sha1=_credentials(row, "sha1"),
        sha256=_credentials(row, "sha256"),
    )


async def _set_credentials(conn: AsyncConnection, username: str, values: dict[str, Any]) -> None:
    result = await conn.execute(update(accounts).where(accounts.c.username == username).values(values))
    if result.rowcount == 0:
        raise NotFound(username)


async def _delete(conn: AsyncConnection, username: str, cleanups: tuple[AccountCleanup, ...] = ()) -> bool:
    # The account row first: concurrent writers that lock it (offline push, archive) then wait, not deadlock.
    result = await conn.execute(delete(accounts).where(accounts.c.username == username))
    await conn.execute(delete(roster_items).where(roster_items.c.username == username))
    await conn.execute(delete(roster_versions).where(roster_versions.c.username == username))
    await conn.execute(delete(offline_messages).where(offline_messages.c.username == username))
    for cleanup in cleanups:
        await cleanup(conn, username)
    return result.rowcount > 0


async def _list(conn: AsyncConnection, prefix: str | None) -> list[str]:
    query = select(accounts.c.username)
    if prefix:
        # LIKE can use the index; the substr comparison makes the match case-sensitive everywhere
        # (SQLite's LIKE ignores ASCII case).
        query = query.where(
            accounts.c.username.startswith(prefix, autoescape=True),
            func.substr(accounts.c.username, 1, len(prefix)) == prefix,
        )
    # Sorted here: ORDER BY follows the database collation, which differs between backends.
    return sorted((await conn.scalars(query)).all())


async def _count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.count()).select_from(accounts)) or 0)
