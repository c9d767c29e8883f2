"""Lost connections, deadlocks and fail-over on the server backends (MariaDB, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema import roster_versions

pytestmark = pytest.mark.only_backends("mariadb", "postgresql")

CONNECTION_ID = {"mariadb": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}


async def _kill(url: str, backend: str, connection_id: int) -> None:
    """Kill a server connection from a second connection, as an admin or a failing proxy would."""
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with engine.connect() as admin:
        if backend == "mariadb":
            await admin.execute(text(f"KILL CONNECTION {int(connection_id)}"))
        else:  # waits (up to 5 s) until the backend process is gone
            await admin.execute(text(f"SELECT pg_terminate_backend({int(connection_id)}, 5000)"))
    await engine.dispose()


async def test_a_connection_killed_mid_transaction_is_retried_on_a_new_one(
    backend_url: str, backend_name: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    database = Database(backend_url)
    seen: list[int] = []

    async def work(conn: AsyncConnection) -> int:
        seen.append(int(await conn.scalar(text(CONNECTION_ID[backend_name])) or 0))
        await conn.execute(insert(roster_versions).values(username=f"try{len(seen)}", version=1))
        if len(seen) == 1:
            await _kill(backend_url, backend_name, seen[0])
        return await _select_one(conn)  # fails on the killed connection

    assert await database.run("tests.killed", work) == 1
    async with database.transaction("tests.check", readonly=True) as conn:
        names = (await conn.scalars(select(roster_versions.c.username))).all()
    await database.close()

    assert len(seen) == 2 and seen[0] != seen[1]
    assert names == ["try2"]  # the first attempt died uncommitted
    assert [e["kind"] for e in log_events if e["event"] == "db.retry"] == ["connection"]


async def test_an_idle_pooled_connection_killed_by_the_server_is_replaced(
    backend_url: str, backend_name: str
) -> None:
    database = Database(backend_url)
    async with database.transaction("tests.id", readonly=True) as conn:
        first = int(await conn.scalar(text(CONNECTION_ID[backend_name])) or 0)

    await _kill(backend_url, backend_name, first)

    async with database.transaction("tests.id", readonly=True) as conn:
        second = int(await conn.scalar(text(CONNECTION_ID[backend_name])) or 0)
    await database.close()
    assert second != first


async def test_a_deadlock_between_two_transactions_is_resolved_by_retry(
    backend_url: str, backend_name: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    database = Database(backend_url)
    async with database.transaction("tests.seed") as conn:
        await conn.execute(
            insert(roster_versions), [{"username": "a", "version": 0}, {"username": "b", "version": 0}]
        )
    locked = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def bump_both(conn: AsyncConnection, first: str, second: str) -> None:
        for username in (first, second):
            bump = update(roster_versions).where(roster_versions.c.username == username)
            await conn.execute(bump.values(version=roster_versions.c.version + 1))
            if username == first:
                locked[first].set()
                await locked[second].wait()  # both hold one row and want the other's: deadlock

    await asyncio.wait_for(
        asyncio.gather(
            database.run("tests.ab", bump_both, "a", "b"), database.run("tests.ba", bump_both, "b", "a")
        ),
        timeout=30,
    )
    async with database.transaction("tests.check", readonly=True) as conn:
        rows = dict((await conn.execute(select(roster_versions.c.username, roster_versions.c.version))).all())
    await database.close()

    assert rows == {"a": 2, "b": 2}
    assert [e["kind"] for e in log_events if e["event"] == "db.retry"] == ["conflict"]


async def test_a_lost_node_fails_over_to_the_next_url(
    backend_url: str, backend_name: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    dead = {
        "mariadb": "mysql+aiomysql://root@127.0.0.1:1/x",
        "postgresql": "postgresql+asyncpg://p@127.0.0.1:1/x",
    }
    database = Database([dead[backend_name], backend_url])

    assert await database.run("tests.failover", _select_one) == 1
    await database.close()

    assert database.url.port != 1
    assert [e["event"] for e in log_events if e["event"].startswith("db.")] == ["db.failover", "db.retry"]


async def _select_one(conn: AsyncConnection) -> int:
    return int(await conn.scalar(text("SELECT 1")) or 0)
