"""Multi-user chat (XEP-0045): persistent rooms, affiliations and room history.

Revision ID: 0003_muc
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003_muc"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("muc",)
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
        "muc_rooms",
        sa.Column("room", sa.String(JID), nullable=False),
        sa.Column("service", sa.String(JID), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("subject_nick", sa.String(1023), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("room", name="pk_muc_rooms"),
        **MYSQL,
    )
    op.create_index("ix_muc_rooms_service", "muc_rooms", ["service"])
    op.create_table(
        "muc_affiliations",
        sa.Column("room", sa.String(JID), nullable=False),
        sa.Column("jid", sa.String(JID), nullable=False),
        sa.Column("affiliation", sa.String(8), nullable=False),
        sa.Column("nick", sa.String(1023), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("room", "jid", name="pk_muc_affiliations"),
        **MYSQL,
    )
    op.create_index("ix_muc_affiliations_jid", "muc_affiliations", ["jid"])
    op.create_table(
        "muc_history",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("room", sa.String(JID), nullable=False),
        sa.Column("nick", sa.String(1023), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_muc_history"),
        **MYSQL,
    )
    op.create_index("ix_muc_history_room_id", "muc_history", ["room", "id"])


def downgrade() -> None:
    op.drop_index("ix_muc_history_room_id", table_name="muc_history")
    op.drop_table("muc_history")
    op.drop_index("ix_muc_affiliations_jid", table_name="muc_affiliations")
    op.drop_table("muc_affiliations")
    op.drop_index("ix_muc_rooms_service", table_name="muc_rooms")
    op.drop_table("muc_rooms")
