"""Client features: blocklists (XEP-0191), PEP nodes and items (XEP-0163), vCards (XEP-0054).

Revision ID: 0005_client
Revises: 0001
Create Date: 2026-01-03
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005_client"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("client",)
depends_on: str | Sequence[str] | None = None

# Frozen copies of the conventions in schema.py: a migration must not change when schema.py does.
MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}
JID = 191
NAME = 191
PAYLOAD = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "blocklist_items",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("jid", sa.String(JID), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", "jid", name="pk_blocklist_items"),
        **MYSQL,
    )
    op.create_table(
        "pep_nodes",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("node", sa.String(NAME), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", "node", name="pk_pep_nodes"),
        **MYSQL,
    )
    op.create_table(
        "pep_items",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("node", sa.String(NAME), nullable=False),
        sa.Column("item_id", sa.String(NAME), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.BigInteger(), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.PrimaryKeyConstraint("username", "node", "item_id", name="pk_pep_items"),
        **MYSQL,
    )
    op.create_index("ix_pep_items_username_node_seq", "pep_items", ["username", "node", "seq"])
    op.create_table(
        "vcards",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_vcards"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("vcards")
    op.drop_index("ix_pep_items_username_node_seq", table_name="pep_items")
    op.drop_table("pep_items")
    op.drop_table("pep_nodes")
    op.drop_table("blocklist_items")
