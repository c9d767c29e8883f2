"""Fresh databases for tests on every storage backend (SQLite, MariaDB/MySQL, PostgreSQL).

One database per backend per test session (``mbeon_t_<hex>``, dropped at the end), migrated to head and
emptied before each test. A backend that cannot be reached is skipped with the reason, or, when the
environment variable ``CI`` is ``true``, fails the tests that need it.

Reuse from any test folder: in its ``conftest.py``,

    from tests.backends import backend_name, backend_url, database_factory, empty_database_url, \
        migrated_database  # noqa: F401  (pytest finds fixtures by name in the conftest namespace)

Fixtures:
- ``backend_url`` (function): URL of a migrated, empty database; parametrised over the backends, so each
  test using it runs once per backend (test ids ``[sqlite]``, ``[mariadb]``, ``[postgresql]``).
- ``backend_name`` (function): ``"sqlite"``, ``"mariadb"`` or ``"postgresql"``, matching ``backend_url``.
- ``empty_database_url`` (function, parametrised): a brand-new database with no tables (for migrations).
- ``migrated_database`` / ``database_factory`` (session): the building blocks of the above.

Marker ``@pytest.mark.only_backends("mariadb", "postgresql")``: the test's other backend variants are
deselected (not skipped). Needs the two hooks below imported into a conftest, like the fixtures.

Environment: ``MBEON_TEST_BACKENDS=sqlite,postgresql`` limits the backends; ``MBEON_TEST_MARIADB_URL`` /
``MBEON_TEST_POSTGRESQL_URL`` point at other servers (an admin URL of an existing database).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import URL, delete, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import mbeon_chat.storage as storage_package
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.migrate import upgrade
from mbeon_chat.storage.schema import metadata

__all__ = [
    "ALL_BACKENDS",
    "DatabaseFactory",
    "TestDatabase",
    "backend_name",
    "backend_params",
    "backend_url",
    "clear_tables",
    "database_factory",
    "empty_database_url",
    "import_schema_modules",
    "migrated_database",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "selected_backends",
]

ALL_BACKENDS = ("sqlite", "mariadb", "postgresql")
ADMIN_URLS = {
    "mariadb": os.environ.get("MBEON_TEST_MARIADB_URL", "mysql+aiomysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get(
        "MBEON_TEST_POSTGRESQL_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
}
DISPLAY_NAMES = {"sqlite": "SQLite", "mariadb": "MariaDB", "postgresql": "PostgreSQL"}
REACHABILITY_TIMEOUT_S = 3.0


def selected_backends() -> tuple[str, ...]:
    raw = os.environ.get("MBEON_TEST_BACKENDS", "")
    chosen = tuple(name.strip() for name in raw.split(",") if name.strip()) or ALL_BACKENDS
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(f"MBEON_TEST_BACKENDS: unknown backends {sorted(unknown)}; known: {ALL_BACKENDS}")
    return chosen


def backend_params() -> list[Any]:
    """``pytest.param`` per selected backend, id = backend name, marked ``backends``."""
    return [pytest.param(name, id=name, marks=pytest.mark.backends) for name in selected_backends()]


def _unavailable(backend: str, url: URL, error: BaseException) -> NoReturn:
    lines = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    message = f"{DISPLAY_NAMES[backend]} at {url.host}:{url.port} unreachable: {detail}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: every backend must be up)", pytrace=False)
    pytest.skip(message)


def _admin_engine(url: URL) -> AsyncEngine:
    return create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


async def _execute_admin(url: URL, *statements: str) -> None:
    engine = _admin_engine(url)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _check_reachable(url: URL) -> None:
    await asyncio.wait_for(_execute_admin(url, "SELECT 1"), REACHABILITY_TIMEOUT_S)


@cache
def import_schema_modules() -> None:
    """Import ``storage/schema*.py``: feature tables (``schema_<feature>.py``) join ``schema.metadata``."""
    for module in pkgutil.iter_modules(storage_package.__path__):
        if module.name.startswith("schema"):
            importlib.import_module(f"{storage_package.__name__}.{module.name}")


async def clear_tables(url: str) -> None:
    """Delete every row of every mbeon table (the schema and ``alembic_version`` stay)."""
    import_schema_modules()
    database = Database(url)
    try:
        async with database.transaction("tests.clear_tables") as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
    finally:
        await database.close()


@dataclass(frozen=True, slots=True)
class TestDatabase:
    __test__ = False  # not a test class, despite the name

    backend: str
    url: str


class DatabaseFactory:
    """Creates empty databases and drops them all at ``drop_all()``; synchronous, for session fixtures."""

    def __init__(self, sqlite_dir: Path) -> None:
        self._sqlite_dir = sqlite_dir
        self._created: list[tuple[URL, str]] = []  # (admin URL, database name)
        self._unreachable: dict[str, BaseException] = {}

    def create(self, backend: str) -> TestDatabase:
        name = f"mbeon_t_{secrets.token_hex(6)}"
        if backend == "sqlite":
            return TestDatabase(backend, f"sqlite+aiosqlite:///{self._sqlite_dir / name}.db")
        admin = make_url(ADMIN_URLS[backend])
        if backend in self._unreachable:
            _unavailable(backend, admin, self._unreachable[backend])
        try:
            asyncio.run(_check_reachable(admin))
        except Exception as exc:  # whatever the driver raises: refused, timeout, auth ...
            self._unreachable[backend] = exc
            _unavailable(backend, admin, exc)
        if backend == "mariadb":
            create = f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        else:
            create = f"CREATE DATABASE {name} ENCODING 'UTF8'"
        asyncio.run(_execute_admin(admin, create))
        self._created.append((admin, name))
        return TestDatabase(backend, admin.set(database=name).render_as_string(hide_password=False))

    def drop_all(self) -> None:
        for admin, name in reversed(self._created):
            if admin.get_backend_name() == "postgresql":
                asyncio.run(_execute_admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                asyncio.run(_execute_admin(admin, f"DROP DATABASE IF EXISTS {name}"))
        self._created.clear()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "only_backends(*names): run this storage test on these backends only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the variants of ``only_backends`` tests whose backend is not listed."""
    deselected = []
    for item in items:
        marker = item.get_closest_marker("only_backends")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None:
            continue
        backend = callspec.params.get("migrated_database", callspec.params.get("empty_database_url"))
        if backend is not None and backend not in marker.args:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("sqlite"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session", params=backend_params())
def migrated_database(request: pytest.FixtureRequest, database_factory: DatabaseFactory) -> TestDatabase:
    database = database_factory.create(request.param)
    asyncio.run(upgrade(database.url, lambda _line: None))
    return database


@pytest.fixture
async def backend_url(migrated_database: TestDatabase) -> AsyncIterator[str]:
    await clear_tables(migrated_database.url)
    yield migrated_database.url


@pytest.fixture
def backend_name(migrated_database: TestDatabase) -> str:
    return migrated_database.backend


@pytest.fixture(params=backend_params())
def empty_database_url(request: pytest.FixtureRequest, database_factory: DatabaseFactory) -> str:
    return database_factory.create(request.param).url
