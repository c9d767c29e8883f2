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
    "current_revisions",
    "head_revision",
    "head_revisions",
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


def head_revisions() -> tuple[str, ...]:
    """The head of every branch of the bundled migration scripts (features may add branches), sorted."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if not heads:  # pragma: no cover - packaging error
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return tuple(sorted(heads))


def head_revision() -> str:
    """The revision the code expects; with several branches, their heads sorted and joined by ","."""
    return ",".join(head_revisions())


async def upgrade(url: str, progress: Callable[[str], None] = print, *, target: str = "heads") -> None:
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


async def current_revisions(url: str) -> tuple[str, ...]:
    """The revisions (one per applied branch) the database at ``url`` is at; empty if never migrated."""
    database = Database(url)
    try:
        return await _revisions_of(database)
    finally:
        await database.close()


async def current_revision(url: str) -> str | None:
    """Like ``head_revision()`` but for the database at ``url``; ``None`` for a database never migrated."""
    return ",".join(await current_revisions(url)) or None


async def check_current(url: str) -> None:
    """Raise ``SchemaOutOfDate`` unless the database at ``url`` is at ``head_revision()``."""
    database = Database(url)
    try:
        await check_schema(database)
    finally:
        await database.close()


async def check_schema(database: Database) -> None:
    """``check_current`` over an open ``Database`` (used by ``open_storage``)."""
    current = await _revisions_of(database)
    heads = head_revisions()
    if set(current) == set(heads):
        return
    where = database.url.render_as_string(hide_password=True)
    if not current:
        raise SchemaOutOfDate(
            f"the database {where} has no mbeon-chat schema yet: run `{MIGRATE_COMMAND}` to create it"
        )
    scripts = ScriptDirectory.from_config(alembic_config())
    unknown = []
    for revision in current:
        try:
            scripts.get_revision(revision)
        except CommandError:
            unknown.append(revision)
    if unknown:
        raise SchemaOutOfDate(
            f"the database {where} is at schema revision {','.join(unknown)}, which this mbeon-chat does "
            f"not know (written by a newer version?): upgrade mbeon-chat; `{MIGRATE_COMMAND}` cannot go back"
        )
    raise SchemaOutOfDate(
        f"the database {where} is at schema revision {','.join(current)}, this mbeon-chat needs "
        f"{','.join(heads)}: run `{MIGRATE_COMMAND}`"
    )


async def _revisions_of(database: Database) -> tuple[str, ...]:
    async with database.transaction("schema.revision", readonly=True) as conn:
        heads = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    return tuple(sorted(heads))
