"""Tables of the message archive (XEP-0313) and of encryption at rest, on the shared ``metadata``.

Created by the migration ``0002_mam`` (branch ``mam``). Conventions as in ``schema.py``.

- ``conversation_keys``: one live data key per conversation (see ``crypto.py``): a one-to-one chat is the
  sorted pair of bare JIDs (``jid_a`` < ``jid_b``), a room is ``(room JID, "")``. The key is stored wrapped
  by a master key that is never in the database; deleting the row destroys everything sealed with it.
- ``mam_messages``: one row per message *per owner archive* (the sender's and the recipient's copies share
  the id and the sealed bytes, so a row is self-contained and an owner's archive can be emptied without
  touching the other's). The id is the XEP-0359 stanza-id, a UUIDv7 chosen before the write, so re-running
  the write after a lost connection finds the row instead of duplicating it. ``with_jid`` (bare) and
  ``with_resource`` are in the clear for the ``with`` filter; the stanza itself is sealed.
- ``mam_prefs``: archiving preferences per user (default always | never | roster, and the JID lists).

Ids sort in time order as strings: on PostgreSQL the id columns use the "C" collation so that holds
whatever the database's locale (SQLite compares bytes; MySQL tables use utf8mb4_bin).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, LargeBinary, String, Table, Text
from sqlalchemy.dialects import postgresql

from mbeon_chat.storage.schema import JID_LENGTH, MYSQL_TABLE_OPTIONS, PAYLOAD_TYPE, metadata

__all__ = ["ID_TYPE", "conversation_keys", "mam_messages", "mam_prefs"]

ID_TYPE = String(36).with_variant(postgresql.VARCHAR(36, collation="C"), "postgresql")

conversation_keys = Table(
    "conversation_keys",
    metadata,
    Column("key_id", ID_TYPE, primary_key=True),  # UUIDv7
    Column("kind", String(8), nullable=False),  # chat | room
    Column("jid_a", String(JID_LENGTH), nullable=False),
    Column("jid_b", String(JID_LENGTH), nullable=False),  # "" for a room
    Column("master_key_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),  # nonce | AES-256-GCM(master, data key)
    Column("created_at", BigInteger, nullable=False),
    Index("ix_conversation_keys_jid_a_jid_b", "jid_a", "jid_b", unique=True),
    Index("ix_conversation_keys_jid_b", "jid_b"),
    Index("ix_conversation_keys_master_key_id", "master_key_id"),
    **MYSQL_TABLE_OPTIONS,
)

mam_messages = Table(
    "mam_messages",
    metadata,
    Column("owner", String(JID_LENGTH), primary_key=True),  # username of the archive's owner
    Column("id", ID_TYPE, primary_key=True),  # stanza-id, UUIDv7
    Column("with_jid", String(JID_LENGTH), nullable=False),  # bare JID of the other party
    Column("with_resource", String(1023), nullable=True),
    Column("outgoing", Boolean, nullable=False),  # sent by the owner
    Column("created_at", BigInteger, nullable=False),
    Column("key_id", ID_TYPE, nullable=False),
    Column("payload", PAYLOAD_TYPE, nullable=False),  # the stanza, sealed (crypto.py)
    Index("ix_mam_messages_owner_with_jid_id", "owner", "with_jid", "id"),
    Index("ix_mam_messages_id", "id"),
    Index("ix_mam_messages_key_id", "key_id"),
    **MYSQL_TABLE_OPTIONS,
)

mam_prefs = Table(
    "mam_prefs",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("default_mode", String(8), nullable=False),  # always | never | roster
    Column("always_jids", Text, nullable=False),  # JSON list of bare JIDs
    Column("never_jids", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)
