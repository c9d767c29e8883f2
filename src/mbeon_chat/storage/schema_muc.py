"""Tables of the multi-user chat service (XEP-0045), on the shared ``metadata`` (see ``schema.py``).

Created by the migration ``0003_muc`` (branch ``muc``). Conventions as in ``schema.py``: every table has a
primary key, times are milliseconds since the epoch, indexed strings are at most 191 characters.

- ``muc_rooms``: one row per persistent room: its configuration (JSON) and subject.
- ``muc_affiliations``: owner / admin / member / outcast per room and bare JID (with a reserved nickname).
- ``muc_history``: the room's messages as broadcast (opaque payload), ordered by UUIDv7 id.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from mbeon_chat.storage.schema import JID_LENGTH, MYSQL_TABLE_OPTIONS, PAYLOAD_TYPE, metadata

__all__ = ["muc_affiliations", "muc_history", "muc_rooms"]

muc_rooms = Table(
    "muc_rooms",
    metadata,
    Column("room", String(JID_LENGTH), primary_key=True),  # bare JID of the room
    Column("service", String(JID_LENGTH), nullable=False),  # the MUC service domain
    Column("config", Text, nullable=False),  # JSON object (RoomConfig)
    Column("subject", Text, nullable=False),
    Column("subject_nick", String(1023), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_muc_rooms_service", "service"),
    **MYSQL_TABLE_OPTIONS,
)

muc_affiliations = Table(
    "muc_affiliations",
    metadata,
    Column("room", String(JID_LENGTH), primary_key=True),
    Column("jid", String(JID_LENGTH), primary_key=True),  # bare JID of the user
    Column("affiliation", String(8), nullable=False),  # owner | admin | member | outcast
    Column("nick", String(1023), nullable=True),  # reserved nickname
    Column("reason", Text, nullable=True),
    Index("ix_muc_affiliations_jid", "jid"),
    **MYSQL_TABLE_OPTIONS,
)

muc_history = Table(
    "muc_history",
    metadata,
    Column("id", String(36), primary_key=True),  # UUIDv7 stanza id: sorts in arrival order
    Column("room", String(JID_LENGTH), nullable=False),
    Column("nick", String(1023), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("payload", PAYLOAD_TYPE, nullable=False),  # the stanza as broadcast (encrypted later)
    Index("ix_muc_history_room_id", "room", "id"),
    **MYSQL_TABLE_OPTIONS,
)
