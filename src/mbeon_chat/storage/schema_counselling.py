"""Tables of the counselling service (``features/counselling``), on the shared ``schema.metadata``.

Created by the migration ``0004_counselling`` (branch ``counselling``). Same conventions as ``schema.py``:
a primary key everywhere, times in milliseconds, indexed strings at most 191 characters, InnoDB/utf8mb4.
Ids are UUIDv7 chosen by the application (``storage.ids.new_id``), so ordering by id is creation order.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from mbeon_chat.storage.schema import JID_LENGTH, MYSQL_TABLE_OPTIONS, metadata

__all__ = [
    "counselling_assignments",
    "counselling_counsellors",
    "counselling_requests",
    "counselling_sessions",
]

ID_LENGTH = 36
NAME_LENGTH = 64  # topics, languages, states, events

counselling_counsellors = Table(
    "counselling_counsellors",
    metadata,
    Column("jid", String(JID_LENGTH), primary_key=True),  # bare JID
    Column("languages", Text, nullable=False),  # JSON list
    Column("topics", Text, nullable=False),  # JSON list; empty: every topic
    Column("capacity", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

counselling_requests = Table(
    "counselling_requests",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("client", String(JID_LENGTH), nullable=False),  # bare JID of the person asking for help
    Column("topic", String(NAME_LENGTH), nullable=False),
    Column("language", String(NAME_LENGTH), nullable=False),
    Column("first_message", Text, nullable=True),
    Column("state", String(16), nullable=False),  # waiting | active | closed | canceled
    Column("created_at", BigInteger, nullable=False),
    Column("requeued_at", BigInteger, nullable=True),  # set: back at the head of the queue
    Column("declined_by", Text, nullable=False),  # JSON list of bare JIDs (declined or let expire)
    Column("session_id", String(ID_LENGTH), nullable=True),  # the current/last session
    Column("closed_at", BigInteger, nullable=True),
    Index("ix_counselling_requests_state_created_at", "state", "created_at"),
    Index("ix_counselling_requests_client_state", "client", "state"),
    **MYSQL_TABLE_OPTIONS,
)

counselling_sessions = Table(
    "counselling_sessions",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("request_id", String(ID_LENGTH), nullable=False),
    Column("client", String(JID_LENGTH), nullable=False),
    Column("counsellor", String(JID_LENGTH), nullable=False),  # the current counsellor (after transfers)
    Column("state", String(16), nullable=False),  # active | closed
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("closed_by", String(JID_LENGTH), nullable=True),
    Column("reason", String(NAME_LENGTH), nullable=True),  # closed | counsellor-offline | canceled
    Index("ix_counselling_sessions_state", "state"),
    Index("ix_counselling_sessions_request_id", "request_id"),
    **MYSQL_TABLE_OPTIONS,
)

counselling_assignments = Table(
    "counselling_assignments",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),  # UUIDv7: the log's order
    Column("request_id", String(ID_LENGTH), nullable=False),
    Column("session_id", String(ID_LENGTH), nullable=True),
    Column("counsellor", String(JID_LENGTH), nullable=False),
    # offered | accepted | picked | declined | expired | withdrawn | transfer-offered | transferred
    # | requeued | closed
    Column("event", String(NAME_LENGTH), nullable=False),
    Column("at", BigInteger, nullable=False),
    Index("ix_counselling_assignments_request_id_id", "request_id", "id"),
    **MYSQL_TABLE_OPTIONS,
)
