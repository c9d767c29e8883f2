"""Schema migrations (Alembic, driven from code: no alembic.ini at runtime).

``mbeon-chat migrate`` calls ``upgrade``; the server calls ``check_current`` at start-up and refuses to run
on a schema it does not know, saying which command fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from mbeon_chat.storage.database import Database

__all__ = [
    "MIGRATIONS_DIR",
    "SchemaOutOfDate",
    "alembic_config",
    "check_current",
    "check_schema",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATE_COMMAND = "mbeon-chat migrate"


class SchemaOutOfDate(Exception):
    """The database schema is not the one this code expects; the message says what to run."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the bundled migration scripts (for tooling and tests)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision among the bundled migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - packaging error
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


async def upgrade(url: str, progress: Callable[[str], None] = print, *, target: str = "head") -> None:
    """Bring the database at ``url`` to ``target``, calling ``progress`` once per applied revision."""
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            await conn.run_sync(_upgrade, progress, target)
            await conn.commit()
    finally:
        await database.close()


def _upgrade(conn: Connection, progress: Callable[[str], None], target: str) -> None:
    def on_version_apply(*, step: MigrationInfo, **_: Any) -> None:
        revision = step.up_revision
        doc = (revision.doc or "").strip() if isinstance(revision, Script) else ""
        progress(f"applied {step.up_revision_id}: {doc}".rstrip(": "))

    config = alembic_config()
    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = on_version_apply
    command.upgrade(config, target)


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` for a database never migrated."""
    database = Database(url)
    try:
        return await _revision_of(database)
    finally:
        await database.close()


async def check_current(url: str) -> None:
    """Raise ``SchemaOutOfDate`` unless the database at ``url`` is at ``head_revision()``."""
    database = Database(url)
    try:
        await check_schema(database)
    finally:
        await database.close()


async def check_schema(database: Database) -> None:
    """``check_current`` over an open ``Database`` (used by ``open_storage``)."""
    current = await _revision_of(database)
    head = head_revision()
    if current == head:
        return
    where = database.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaOutOfDate(
            f"the database {where} has no mbeon-chat schema yet: run `{MIGRATE_COMMAND}` to create it"
        )
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except CommandError:
        raise SchemaOutOfDate(
            f"the database {where} is at schema revision {current}, which this mbeon-chat does not know "
            f"(written by a newer version?): upgrade mbeon-chat; `{MIGRATE_COMMAND}` cannot go back"
        ) from None
    raise SchemaOutOfDate(
        f"the database {where} is at schema revision {current}, this mbeon-chat needs {head}: "
        f"run `{MIGRATE_COMMAND}`"
    )


async def _revision_of(database: Database) -> str | None:
    async with database.transaction("schema.revision", readonly=True) as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
