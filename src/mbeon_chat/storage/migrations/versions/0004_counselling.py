"""Counselling service: counsellors, requests, sessions and the assignment log.

Revision ID: 0004_counselling
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004_counselling"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("counselling",)
depends_on: str | Sequence[str] | None = None

# Frozen copies of the conventions in schema.py: a migration must not change when schema.py does.
MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}
JID = 191
ID = 36
NAME = 64


def upgrade() -> None:
    op.create_table(
        "counselling_counsellors",
        sa.Column("jid", sa.String(JID), nullable=False),
        sa.Column("languages", sa.Text(), nullable=False),
        sa.Column("topics", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jid", name="pk_counselling_counsellors"),
        **MYSQL,
    )
    op.create_table(
        "counselling_requests",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("client", sa.String(JID), nullable=False),
        sa.Column("topic", sa.String(NAME), nullable=False),
        sa.Column("language", sa.String(NAME), nullable=False),
        sa.Column("first_message", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("requeued_at", sa.BigInteger(), nullable=True),
        sa.Column("declined_by", sa.Text(), nullable=False),
        sa.Column("session_id", sa.String(ID), nullable=True),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_counselling_requests"),
        **MYSQL,
    )
    op.create_index(
        "ix_counselling_requests_state_created_at", "counselling_requests", ["state", "created_at"]
    )
    op.create_index("ix_counselling_requests_client_state", "counselling_requests", ["client", "state"])
    op.create_table(
        "counselling_sessions",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=False),
        sa.Column("client", sa.String(JID), nullable=False),
        sa.Column("counsellor", sa.String(JID), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("closed_by", sa.String(JID), nullable=True),
        sa.Column("reason", sa.String(NAME), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_counselling_sessions"),
        **MYSQL,
    )
    op.create_index("ix_counselling_sessions_state", "counselling_sessions", ["state"])
    op.create_index("ix_counselling_sessions_request_id", "counselling_sessions", ["request_id"])
    op.create_table(
        "counselling_assignments",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("request_id", sa.String(ID), nullable=False),
        sa.Column("session_id", sa.String(ID), nullable=True),
        sa.Column("counsellor", sa.String(JID), nullable=False),
        sa.Column("event", sa.String(NAME), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_counselling_assignments"),
        **MYSQL,
    )
    op.create_index(
        "ix_counselling_assignments_request_id_id", "counselling_assignments", ["request_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_counselling_assignments_request_id_id", table_name="counselling_assignments")
    op.drop_table("counselling_assignments")
    op.drop_index("ix_counselling_sessions_request_id", table_name="counselling_sessions")
    op.drop_index("ix_counselling_sessions_state", table_name="counselling_sessions")
    op.drop_table("counselling_sessions")
    op.drop_index("ix_counselling_requests_client_state", table_name="counselling_requests")
    op.drop_index("ix_counselling_requests_state_created_at", table_name="counselling_requests")
    op.drop_table("counselling_requests")
    op.drop_table("counselling_counsellors")
