"""The database handle: one async engine, named transactions, retry on transient errors.

Every unit of work has a name (``"accounts.create"``): it is the ``txn`` field of the ``db.retry`` /
``db.failed`` log lines and the label handed to the ``on_timing`` observer (metrics hook in there).
``Database.run`` re-runs the whole unit in a fresh transaction when the error says that is safe: deadlock,
lock wait timeout, Galera certification failure / node not ready, serialization failure, SQLite "database
is locked", or a lost connection. With several URLs (Galera nodes) a lost connection also moves the
handle to the next URL.

SQLite is configured on every new connection: WAL journal, ``busy_timeout``, foreign keys on, and
SQLAlchemy (not the sqlite3 module) emits ``BEGIN`` so that reads are inside the transaction too.
Transactions that may write start with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout
instead of failing at commit.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any, TypeVar, TypeVarTuple

import structlog
from sqlalchemy import URL, event, make_url, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mbeon_chat.storage._compat import fix_aiomysql_bytes_escape

__all__ = ["Database", "DatabaseTimeout", "RetryKind", "TimingObserver", "classify_error"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

TimingObserver = Callable[[str, float, bool], None]
"""``on_timing(name, seconds, ok)``: called once per named transaction; ``ok`` means committed."""

log = structlog.get_logger("mbeon_chat.storage")

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
#: Default deadline of one named transaction, retries included: a database that hangs (a frozen server, a
#: network partition without resets) costs a stanza this long, never the session.
RUN_TIMEOUT_S = 10.0
MAX_RETRY_DELAY_S = 1.0
_DEFAULT: Any = object()
_BEGIN_OPTION = "mbeon_sqlite_begin"


class DatabaseTimeout(TimeoutError):
    """A named transaction (with its retries) did not finish within its deadline; it was rolled back."""


class RetryKind(StrEnum):
    CONFLICT = "conflict"  # deadlock, lock timeout, serialization / certification failure, locked
    CONNECTION = "connection"  # the connection or the server went away


# MySQL / MariaDB: deadlock (also Galera certification failure), lock wait timeout, WSREP not ready.
_MYSQL_CONFLICT = frozenset({1213, 1205, 1047})
# server gone away, lost connection, can't connect (TCP / socket), connection killed, server shutdown.
_MYSQL_CONNECTION = frozenset({2006, 2013, 2003, 2002, 2055, 1927, 1053})
_PG_CONFLICT = frozenset({"40001", "40P01"})
_PG_CONNECTION = frozenset({"57P01", "57P02", "57P03"})  # admin shutdown/terminate, crash, cannot connect now


def classify_error(exc: BaseException) -> RetryKind | None:
    """Whether re-running the transaction may succeed, and why; ``None`` for a permanent error."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return RetryKind.CONNECTION
        orig = exc.orig
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int):  # PyMySQL / aiomysql: (errno, message)
            if args[0] in _MYSQL_CONFLICT:
                return RetryKind.CONFLICT
            if args[0] in _MYSQL_CONNECTION:
                return RetryKind.CONNECTION
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str):
            if sqlstate in _PG_CONFLICT:
                return RetryKind.CONFLICT
            if sqlstate.startswith("08") or sqlstate in _PG_CONNECTION:
                return RetryKind.CONNECTION
        message = str(orig).lower()
        if "database is locked" in message or "database table is locked" in message:
            return RetryKind.CONFLICT
        if "connection is closed" in message or "connection was closed" in message:
            return RetryKind.CONNECTION
        return None
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return RetryKind.CONNECTION
    return None


def describe_error(exc: BaseException) -> str:
    """A short description for logs: driver class, code and message, never the SQL parameters."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    code = getattr(orig, "sqlstate", None)
    args = getattr(orig, "args", ())
    if code is None and args and isinstance(args[0], int):
        code = args[0]
    suffix = f"({code})" if code is not None else ""
    return f"{type(orig).__name__}{suffix}: {str(orig)[:200]}"


def _engine_options(url: URL) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {}
    connect_args: dict[str, Any] = {}
    if backend == "mysql":
        if "charset" not in url.query:
            connect_args["charset"] = "utf8mb4"
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    elif backend == "postgresql" and "timeout" not in url.query:
        connect_args["timeout"] = CONNECT_TIMEOUT_S
    return {"pool_pre_ping": True, "pool_recycle": 1800, "connect_args": connect_args}


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _create_engine(url: URL, extra: Mapping[str, Any] | None) -> AsyncEngine:
    if url.get_driver_name() == "aiomysql":
        fix_aiomysql_bytes_escape()
    engine = create_async_engine(url, **{**_engine_options(url), **(extra or {})})
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


class Database:
    """An async engine over one database (or several equivalent Galera nodes) with named transactions."""

    def __init__(
        self,
        urls: str | URL | Sequence[str | URL],
        *,
        on_timing: TimingObserver | None = None,
        max_attempts: int = 5,
        base_delay: float = 0.05,
        engine_options: Mapping[str, Any] | None = None,
        timeout: float | None = RUN_TIMEOUT_S,
    ) -> None:
        raw = [urls] if isinstance(urls, str | URL) else list(urls)
        if not raw:
            raise ValueError("Database needs at least one URL")
        self._urls = [make_url(u) for u in raw]
        if len({u.get_backend_name() for u in self._urls}) != 1:
            raise ValueError("all database URLs must use the same backend")
        self._engine_extra = engine_options
        self._index = 0
        self._engine = _create_engine(self._urls[0], engine_options)
        self._failover_lock = asyncio.Lock()
        self.on_timing = on_timing
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.timeout = timeout

    @property
    def engine(self) -> AsyncEngine:
        """The engine for the URL currently in use."""
        return self._engine

    @property
    def url(self) -> URL:
        """The URL currently in use (render with ``hide_password=True`` before logging it)."""
        return self._urls[self._index]

    @property
    def dialect_name(self) -> str:
        """``"sqlite"``, ``"mysql"`` (also for MariaDB) or ``"postgresql"``."""
        return self._urls[0].get_backend_name()

    @asynccontextmanager
    async def transaction(self, name: str, *, readonly: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block exits normally; no retry (see ``run``).

        ``readonly`` is a hint: SQLite then starts a deferred instead of an immediate transaction.
        """
        started = time.monotonic()
        engine = self._engine
        ok = False
        try:
            async with self._begin(engine, readonly) as conn:
                yield conn
            ok = True
        except BaseException as exc:
            if classify_error(exc) is RetryKind.CONNECTION:
                await self._fail_over(engine)
            raise
        finally:
            self._report(name, time.monotonic() - started, ok)

    async def run(
        self,
        name: str,
        fn: Callable[[AsyncConnection, *Ts], Awaitable[T]],
        *args: *Ts,
        readonly: bool = False,
        timeout: float | None = _DEFAULT,
        attempts: int | None = None,
    ) -> T:
        """Run ``fn(conn, *args)`` in a transaction named ``name``; re-run it on transient errors.

        ``fn`` may run more than once, so it must not have effects outside the transaction. The whole
        unit, retries included, has a deadline (``timeout``, default ``self.timeout``; None: none); past
        it the transaction is abandoned (rolled back) and ``DatabaseTimeout`` raised. ``attempts``
        overrides ``max_attempts`` for writes that should rather keep trying until the deadline.
        """
        limit = self.timeout if timeout is _DEFAULT else timeout
        tries = attempts or self.max_attempts
        if limit is None:
            return await self._run(name, fn, args, readonly, tries)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit) as deadline:
                return await self._run(name, fn, args, readonly, tries)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            log.warning("db.timeout", txn=name, seconds=limit)
            self._report(name, time.monotonic() - started, False)
            raise DatabaseTimeout(f"the database did not complete {name} within {limit:g} s") from exc

    async def _run(
        self, name: str, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], readonly: bool, tries: int
    ) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            engine = self._engine
            try:
                async with self._begin(engine, readonly) as conn:
                    result = await fn(conn, *args)
            except Exception as exc:
                kind = classify_error(exc)
                if kind is RetryKind.CONNECTION:
                    await self._fail_over(engine)
                if kind is None or attempt >= tries:
                    if kind is not None or isinstance(exc, SQLAlchemyError):
                        log.warning("db.failed", txn=name, attempts=attempt, error=describe_error(exc))
                    self._report(name, time.monotonic() - started, False)
                    raise
                delay = min(self.base_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY_S) * (0.5 + random.random())
                log.info(
                    "db.retry",
                    txn=name,
                    attempt=attempt,
                    kind=str(kind),
                    delay=round(delay, 3),
                    error=describe_error(exc),
                )
                await asyncio.sleep(delay)
            else:
                self._report(name, time.monotonic() - started, True)
                return result

    async def ping(self) -> bool:
        """True when a trivial query succeeds (readiness probe); never raises for database errors."""
        try:
            async with self.transaction("db.ping", readonly=True) as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def _begin(self, engine: AsyncEngine, readonly: bool) -> AsyncIterator[AsyncConnection]:
        async with engine.connect() as conn:
            if self.dialect_name == "sqlite" and not readonly:
                await conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            async with conn.begin():
                yield conn

    async def _fail_over(self, failed: AsyncEngine) -> None:
        """After a lost connection, move to the next URL (once per failure of the current engine)."""
        if len(self._urls) < 2:
            return  # the pool has already invalidated its connections; pre-ping covers the rest
        async with self._failover_lock:
            if failed is not self._engine:
                return  # another task already moved on
            old_url = self._urls[self._index]
            self._index = (self._index + 1) % len(self._urls)
            new_url = self._urls[self._index]
            self._engine = _create_engine(new_url, self._engine_extra)
            log.warning(
                "db.failover",
                old=old_url.render_as_string(hide_password=True),
                new=new_url.render_as_string(hide_password=True),
            )
        await failed.dispose()

    def _report(self, name: str, seconds: float, ok: bool) -> None:
        observer = self.on_timing
        if observer is None:
            return
        try:
            observer(name, seconds, ok)
        except Exception:  # metrics must never break storage
            log.exception("db.observer_failed", txn=name)
