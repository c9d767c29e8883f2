"""Migrations on every backend: empty database to head, the start-up check, schema.py matches them."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from backends import import_schema_modules
from mbeon_chat.storage import migrate
from mbeon_chat.storage.api import SchemaOutOfDate, open_storage
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.schema import metadata

TABLES = {"accounts", "roster_items", "roster_versions", "offline_messages"}


async def _tables(url: str) -> set[str]:
    database = Database(url)
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await database.close()
    return names


def test_every_head_revision_is_found_in_the_package_data() -> None:
    versions = resources.files("mbeon_chat") / "storage" / "migrations" / "versions"
    names = [entry.name for entry in versions.iterdir()]
    assert "0001_initial.py" in names
    for head in migrate.head_revisions():
        assert any(name.startswith(head) for name in names), head
    assert (resources.files("mbeon_chat") / "storage" / "migrations" / "env.py").is_file()


async def test_upgrade_takes_an_empty_database_to_head(empty_database_url: str) -> None:
    lines: list[str] = []

    await migrate.upgrade(empty_database_url, lines.append)

    assert lines[0] == "applied 0001: Accounts, rosters and offline messages."
    assert len(lines) == len(list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))
    assert await migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert await migrate.current_revisions(empty_database_url) == migrate.head_revisions()
    assert await _tables(empty_database_url) >= TABLES | {"alembic_version"}
    await migrate.check_current(empty_database_url)

    again: list[str] = []
    await migrate.upgrade(empty_database_url, again.append)
    assert again == []


async def test_an_empty_database_is_out_of_date_and_says_what_to_run(empty_database_url: str) -> None:
    assert await migrate.current_revision(empty_database_url) is None

    with pytest.raises(SchemaOutOfDate, match="run `mbeon-chat migrate`"):
        await migrate.check_current(empty_database_url)
    with pytest.raises(SchemaOutOfDate, match="mbeon-chat migrate"):
        await open_storage(empty_database_url)


async def test_a_schema_from_a_newer_version_asks_to_upgrade_the_server(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url, lambda _line: None)
    database = Database(empty_database_url)
    async with database.transaction("tests.stamp") as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
        await conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999')"))
    await database.close()

    with pytest.raises(SchemaOutOfDate, match=r"9999.*upgrade mbeon-chat"):
        await migrate.check_current(empty_database_url)


def _compare(conn: Connection) -> list[object]:
    import_schema_modules()  # feature tables (schema_<feature>.py) join the same MetaData
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _downgrade_to_base(conn: Connection) -> None:
    config = migrate.alembic_config()
    config.attributes["connection"] = conn
    command.downgrade(config, "base")


async def test_schema_module_matches_the_migrated_database(backend_url: str) -> None:
    database = Database(backend_url)
    async with database.engine.connect() as conn:
        differences = await conn.run_sync(_compare)
    await database.close()

    assert differences == []


async def test_downgrade_removes_the_tables_and_upgrade_restores_them(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url, lambda _line: None)
    database = Database(empty_database_url)
    async with database.engine.connect() as conn:
        await conn.run_sync(_downgrade_to_base)
        await conn.commit()
    await database.close()

    assert await _tables(empty_database_url) & TABLES == set()
    assert await migrate.current_revision(empty_database_url) is None
    await migrate.upgrade(empty_database_url, lambda _line: None)
    assert await _tables(empty_database_url) >= TABLES


BRANCH = '''"""A feature branch.

Revision ID: 0099_extra
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = "0099_extra"
down_revision = "0001"
branch_labels = ("extra",)
depends_on = None


def upgrade() -> None:
    op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("extra")
'''


async def test_feature_branches_are_all_applied_and_checked(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    await migrate.upgrade(empty_database_url, lambda _line: None)  # the real heads
    (scripts / "versions" / "0099_extra.py").write_text(BRANCH)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    assert "0099_extra" in migrate.head_revisions() and len(migrate.head_revisions()) >= 2

    with pytest.raises(SchemaOutOfDate, match=r"needs .*0099_extra.*: run `mbeon-chat migrate`"):
        await migrate.check_current(empty_database_url)
    lines: list[str] = []
    await migrate.upgrade(empty_database_url, lines.append)

    assert lines == ["applied 0099_extra: A feature branch."]
    assert await migrate.current_revisions(empty_database_url) == migrate.head_revisions()
    await migrate.check_current(empty_database_url)
