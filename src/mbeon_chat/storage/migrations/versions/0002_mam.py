"""Message archive (XEP-0313) and encryption at rest: conversation keys, archived messages, preferences.

Revision ID: 0002_mam
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0002_mam"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("mam",)
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
ID = sa.String(36).with_variant(postgresql.VARCHAR(36, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "conversation_keys",
        sa.Column("key_id", ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("jid_a", sa.String(JID), nullable=False),
        sa.Column("jid_b", sa.String(JID), nullable=False),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_conversation_keys"),
        **MYSQL,
    )
    op.create_index("ix_conversation_keys_jid_a_jid_b", "conversation_keys", ["jid_a", "jid_b"], unique=True)
    op.create_index("ix_conversation_keys_jid_b", "conversation_keys", ["jid_b"])
    op.create_index("ix_conversation_keys_master_key_id", "conversation_keys", ["master_key_id"])
    op.create_table(
        "mam_messages",
        sa.Column("owner", sa.String(JID), nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("with_jid", sa.String(JID), nullable=False),
        sa.Column("with_resource", sa.String(1023), nullable=True),
        sa.Column("outgoing", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("key_id", ID, nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.PrimaryKeyConstraint("owner", "id", name="pk_mam_messages"),
        **MYSQL,
    )
    op.create_index("ix_mam_messages_owner_with_jid_id", "mam_messages", ["owner", "with_jid", "id"])
    op.create_index("ix_mam_messages_id", "mam_messages", ["id"])
    op.create_index("ix_mam_messages_key_id", "mam_messages", ["key_id"])
    op.create_table(
        "mam_prefs",
        sa.Column("username", sa.String(JID), nullable=False),
        sa.Column("default_mode", sa.String(8), nullable=False),
        sa.Column("always_jids", sa.Text(), nullable=False),
        sa.Column("never_jids", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_mam_prefs"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("mam_prefs")
    op.drop_index("ix_mam_messages_key_id", table_name="mam_messages")
    op.drop_index("ix_mam_messages_id", table_name="mam_messages")
    op.drop_index("ix_mam_messages_owner_with_jid_id", table_name="mam_messages")
    op.drop_table("mam_messages")
    op.drop_index("ix_conversation_keys_master_key_id", table_name="conversation_keys")
    op.drop_index("ix_conversation_keys_jid_b", table_name="conversation_keys")
    op.drop_index("ix_conversation_keys_jid_a_jid_b", table_name="conversation_keys")
    op.drop_table("conversation_keys")
