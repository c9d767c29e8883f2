"""Tables of the client-facing features, on the shared ``metadata`` (see ``schema.py``).

Created by the migration ``0005_client`` (branch ``client``). Conventions as in ``schema.py``: every table
has a primary key, times are milliseconds since the epoch, indexed strings are at most 191 characters.
Every table is keyed by the account's username first, so deleting an account is one ``DELETE`` per table
(``stores/client.py: delete_account_data``).

- ``blocklist_items``: XEP-0191, one row per blocked JID (bare, full, domain or domain/resource).
- ``pep_nodes``: XEP-0163, one row per PEP node of an account, with its configuration (JSON).
- ``pep_items``: the node's items (the ``<item/>`` element as published), ``seq`` orders them.
- ``vcards``: XEP-0054, the account's ``<vCard/>`` element.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from mbeon_chat.storage.schema import JID_LENGTH, MYSQL_TABLE_OPTIONS, PAYLOAD_TYPE, metadata

__all__ = ["blocklist_items", "pep_items", "pep_nodes", "vcards"]

NAME_LENGTH = 191  # PEP node names and item ids (indexed)

blocklist_items = Table(
    "blocklist_items",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("jid", String(JID_LENGTH), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

pep_nodes = Table(
    "pep_nodes",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("node", String(NAME_LENGTH), primary_key=True),
    Column("config", Text, nullable=False),  # JSON object (pep.NodeConfig)
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

pep_items = Table(
    "pep_items",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("node", String(NAME_LENGTH), primary_key=True),
    Column("item_id", String(NAME_LENGTH), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # publication order (microseconds, strictly increasing)
    Column("published_at", BigInteger, nullable=False),
    Column("payload", PAYLOAD_TYPE, nullable=False),  # the <item/> element as published
    Index("ix_pep_items_username_node_seq", "username", "node", "seq"),
    **MYSQL_TABLE_OPTIONS,
)

vcards = Table(
    "vcards",
    metadata,
    Column("username", String(JID_LENGTH), primary_key=True),
    Column("payload", PAYLOAD_TYPE, nullable=False),  # the <vCard/> element
    Column("updated_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)
