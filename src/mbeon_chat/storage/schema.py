"""Tables, as SQLAlchemy Core metadata (the migrations in ``migrations/versions`` create them).

Conventions, for every backend:
- every table has a primary key (Galera replicates only tables with one);
- times are ``BigInteger`` milliseconds since the Unix epoch (UTC);
- indexed strings are at most 191 characters (utf8mb4 index limits on MySQL);
- on MySQL/MariaDB: InnoDB, utf8mb4, binary collation (so ``jürgen`` and ``jurgen``, or ``Anna`` and
  ``anna``, stay different users, as they are on SQLite and PostgreSQL), DYNAMIC rows (composite keys of
  two 191-character columns need the 3072-byte index limit).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

__all__ = [
    "JID_LENGTH",
    "MYSQL_TABLE_OPTIONS",
    "PAYLOAD_TYPE",
    "accounts",
    "metadata",
    "offline_messages",
    "roster_items",
    "roster_versions",
]

JID_LENGTH = 191
MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}

# BLOB on MySQL stops at 64 KiB, too small for a large stanza: MEDIUMBLOB (16 MiB) there.
PAYLOAD_TYPE = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")

# Same names as the explicit ones in the migrations, so autogenerate finds no spurious differences.
metadata = MetaData(
    naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"}
)

accounts = Table(
    "accounts",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("scram_sha1_salt", LargeBinary, nullable=True),
    Column("scram_sha1_iterations", Integer, nullable=True),
    Column("scram_sha1_stored_key", LargeBinary, nullable=True),
    Column("scram_sha1_server_key", LargeBinary, nullable=True),
    Column("scram_sha256_salt", LargeBinary, nullable=True),
    Column("scram_sha256_iterations", Integer, nullable=True),
    Column("scram_sha256_stored_key", LargeBinary, nullable=True),
    Column("scram_sha256_server_key", LargeBinary, nullable=True),
    **MYSQL_TABLE_OPTIONS,
)

roster_items = Table(
    "roster_items",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("contact", String(JID_LENGTH), primary_key=True),
    Column("name", String(1023), nullable=True),
    Column("subscription", String(8), nullable=False),  # none | to | from | both
    Column("ask_out", Boolean, nullable=False),  # we asked to see their presence, no answer yet
    Column("pending_in", Boolean, nullable=False),  # they asked to see ours, no answer yet
    Column("approved", Boolean, nullable=False),  # pre-approved (RFC 6121 3.4)
    Column("groups", Text, nullable=False),  # JSON list of strings
    Column("in_roster", Boolean, nullable=False),  # false: only a pending-in record (RFC 6121 3.1.3)
    Column("version", BigInteger, nullable=False),  # roster version of the last change to this item
    **MYSQL_TABLE_OPTIONS,
)

roster_versions = Table(
    "roster_versions",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("version", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

offline_messages = Table(
    "offline_messages",
    metadata,
    Column("id", String(36), primary_key=True),  # UUIDv7: sorts in arrival order
    Column("username", String(JID_LENGTH), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("payload", PAYLOAD_TYPE, nullable=False),  # opaque bytes (encrypted later)
    Index("ix_offline_messages_username_id", "username", "id"),
    **MYSQL_TABLE_OPTIONS,
)
