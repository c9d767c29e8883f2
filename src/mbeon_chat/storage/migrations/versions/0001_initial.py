"""Accounts, rosters and offline messages.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the conventions in schema.py: a migration must not change when schema.py does.
MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}
JID = 191
PAYLOAD = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("scram_sha1_salt", sa.LargeBinary(), nullable=True),
        sa.Column("scram_sha1_iterations", sa.Integer(), nullable=True),
        sa.Column("scram_sha1_stored_key", sa.LargeBinary(), nullable=True),
        sa.Column("scram_sha1_server_key", sa.LargeBinary(), nullable=True),
        sa.Column("scram_sha256_salt", sa.LargeBinary(), nullable=True),
        sa.Column("scram_sha256_iterations", sa.Integer(), nullable=True),
        sa.Column("scram_sha256_stored_key", sa.LargeBinary(), nullable=True),
        sa.Column("scram_sha256_server_key", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("username", name="pk_accounts"),
        **MYSQL,
    )
    op.create_table(
        "roster_items",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("contact", sa.String(JID), nullable=False),
        sa.Column("name", sa.String(1023), nullable=True),
        sa.Column("subscription", sa.String(8), nullable=False),
        sa.Column("ask_out", sa.Boolean(), nullable=False),
        sa.Column("pending_in", sa.Boolean(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("in_roster", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", "contact", name="pk_roster_items"),
        **MYSQL,
    )
    op.create_table(
        "roster_versions",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_roster_versions"),
        **MYSQL,
    )
    op.create_table(
        "offline_messages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_offline_messages"),
        **MYSQL,
    )
    op.create_index("ix_offline_messages_username_id", "offline_messages", ["username", "id"])


def downgrade() -> None:
    op.drop_index("ix_offline_messages_username_id", table_name="offline_messages")
    op.drop_table("offline_messages")
    op.drop_table("roster_versions")
    op.drop_table("roster_items")
    op.drop_table("accounts")
