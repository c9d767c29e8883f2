"""Database: named transactions, retry on transient errors, reconnect, fail-over, SQLite setup."""

from __future__ import annotations

import sqlite3
from collections.abc import MutableMapping
from typing import Any

import pymysql
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database, RetryKind, classify_error
from mbeon_chat.storage.schema import roster_versions


class FakePgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _wrapped(orig: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


def _mysql(code: int) -> OperationalError:
    return _wrapped(pymysql.err.OperationalError(code, "message"))


TRANSIENT = {
    "mysql deadlock / galera certification": (
        _mysql(1213),
        "conflict",
    ),
    "mysql lock wait timeout": (_mysql(1205), "conflict"),
    "galera wsrep not ready": (_mysql(1047), "conflict"),
    "mysql gone away": (_mysql(2006), "connection"),
    "mysql lost connection": (_mysql(2013), "connection"),
    "mysql cannot connect": (_mysql(2003), "connection"),
    "pg serialization failure": (_wrapped(FakePgError("40001")), "conflict"),
    "pg deadlock": (_wrapped(FakePgError("40P01")), "conflict"),
    "pg connection failure": (_wrapped(FakePgError("08006")), "connection"),
    "pg terminated by admin": (_wrapped(FakePgError("57P01")), "connection"),
    "sqlite locked": (_wrapped(sqlite3.OperationalError("database is locked")), "conflict"),
    "refused socket": (ConnectionRefusedError(111, "refused"), "connection"),
}


@pytest.mark.parametrize(("error", "kind"), TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_errors_are_classified_as_retryable(error: BaseException, kind: str) -> None:
    assert classify_error(error) == RetryKind(kind)


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", {}, pymysql.err.IntegrityError(1062, "Duplicate entry")),
        _wrapped(FakePgError("23505")),
        _wrapped(sqlite3.OperationalError("no such table: x")),
        ValueError("not a database error"),
    ],
    ids=["mysql duplicate", "pg unique violation", "sqlite no such table", "value error"],
)
def test_permanent_errors_are_not_retried(error: BaseException) -> None:
    assert classify_error(error) is None


async def _select_one(conn: AsyncConnection) -> int:
    return int(await conn.scalar(text("SELECT 1")) or 0)


async def test_run_retries_a_deadlock_once_then_succeeds(
    backend_url: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    timings: list[tuple[str, bool]] = []
    database = Database(backend_url, on_timing=lambda name, _s, ok: timings.append((name, ok)))
    calls: list[int] = []

    async def flaky(conn: AsyncConnection, username: str) -> int:
        calls.append(1)
        await conn.execute(insert(roster_versions).values(username=username, version=len(calls)))
        if len(calls) == 1:  # the insert above must be rolled back, or the retry hits the primary key
            raise _mysql(1213)
        return await _select_one(conn)

    assert await database.run("tests.flaky", flaky, "alice") == 1
    async with database.transaction("tests.check", readonly=True) as conn:
        stored = (await conn.execute(select(roster_versions))).all()
    await database.close()

    assert len(calls) == 2
    assert [(row.username, row.version) for row in stored] == [("alice", 2)]
    retries = [entry for entry in log_events if entry["event"] == "db.retry"]
    assert [(e["txn"], e["attempt"], e["kind"]) for e in retries] == [("tests.flaky", 1, "conflict")]
    assert timings == [("tests.flaky", True), ("tests.check", True)]


async def test_run_gives_up_after_max_attempts(
    backend_url: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    timings: list[tuple[str, bool]] = []
    database = Database(backend_url, on_timing=lambda n, _s, ok: timings.append((n, ok)), base_delay=0.001)
    calls: list[int] = []

    async def always_locked(conn: AsyncConnection) -> None:
        calls.append(1)
        raise _wrapped(sqlite3.OperationalError("database is locked"))

    with pytest.raises(OperationalError):
        await database.run("tests.locked", always_locked)
    await database.close()

    assert len(calls) == database.max_attempts == 5
    failed = [entry for entry in log_events if entry["event"] == "db.failed"]
    assert [(e["txn"], e["attempts"]) for e in failed] == [("tests.locked", 5)]
    assert timings == [("tests.locked", False)]


async def test_run_does_not_retry_other_errors(
    backend_url: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    database = Database(backend_url)
    calls: list[int] = []

    async def broken(conn: AsyncConnection) -> None:
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await database.run("tests.broken", broken)
    await database.close()

    assert len(calls) == 1
    assert [entry for entry in log_events if entry["event"].startswith("db.")] == []


async def test_transaction_commits_or_rolls_back_and_reports_timing(backend_url: str) -> None:
    timings: list[tuple[str, float, bool]] = []
    database = Database(backend_url, on_timing=lambda *args: timings.append(args))

    async with database.transaction("tests.write") as conn:
        await conn.execute(insert(roster_versions).values(username="kept", version=1))
    with pytest.raises(RuntimeError):
        async with database.transaction("tests.abort") as conn:
            await conn.execute(insert(roster_versions).values(username="dropped", version=1))
            raise RuntimeError("abort")
    async with database.transaction("tests.read", readonly=True) as conn:
        names = (await conn.scalars(select(roster_versions.c.username))).all()
    await database.close()

    assert names == ["kept"]
    assert [(name, ok) for name, _, ok in timings] == [
        ("tests.write", True),
        ("tests.abort", False),
        ("tests.read", True),
    ]
    assert all(seconds >= 0 for _, seconds, _ in timings)


async def test_a_failing_timing_observer_does_not_break_the_transaction(backend_url: str) -> None:
    def observer(name: str, seconds: float, ok: bool) -> None:
        raise RuntimeError("metrics down")

    database = Database(backend_url, on_timing=observer)
    assert await database.run("tests.observed", _select_one) == 1
    await database.close()


async def test_ping_and_dialect_name(backend_url: str, backend_name: str) -> None:
    database = Database(backend_url)
    assert await database.ping() is True
    assert (
        database.dialect_name
        == {"sqlite": "sqlite", "mariadb": "mysql", "postgresql": "postgresql"}[backend_name]
    )
    await database.close()


async def test_ping_is_false_when_the_server_is_unreachable() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    assert await database.ping() is False
    await database.close()


# --- SQLite setup ------------------------------------------------------------------------------------


@pytest.mark.only_backends("sqlite")
async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(backend_url: str) -> None:
    database = Database(backend_url)
    async with database.transaction("tests.pragmas", readonly=True) as conn:
        pragmas = [
            (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        ]
    await database.close()
    assert pragmas == ["wal", 1, 5000]


@pytest.mark.only_backends("sqlite")
async def test_sqlite_reads_inside_a_transaction_see_one_snapshot(backend_url: str) -> None:
    """SQLAlchemy, not the sqlite3 module, emits BEGIN: reads are in the transaction too."""
    database = Database(backend_url)
    count = select(roster_versions.c.username)
    async with database.transaction("tests.reader", readonly=True) as reader:
        before = (await reader.scalars(count)).all()
        async with database.transaction("tests.writer") as writer:
            await writer.execute(insert(roster_versions).values(username="new", version=1))
        after = (await reader.scalars(count)).all()
    await database.close()
    assert before == after == []
