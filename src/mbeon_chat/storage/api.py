"""The storage interface: one Protocol per domain, frozen values, errors, and ``open_storage``.

Features depend on these Protocols only; ``stores/`` holds the SQLAlchemy Core implementations, which run
every operation as a named transaction (see ``database.Database.run``) on SQLite, MySQL/MariaDB or
PostgreSQL alike.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mbeon_chat.storage import migrate
from mbeon_chat.storage.database import Database, TimingObserver
from mbeon_chat.storage.migrate import SchemaOutOfDate
from mbeon_chat.stream.sasl import ScramCredentials

if TYPE_CHECKING:
    from mbeon_chat.storage.crypto import ConversationCrypto, Keyring

__all__ = [
    "SUBSCRIPTIONS",
    "AccountRecord",
    "AccountStore",
    "AlreadyExists",
    "NotFound",
    "OfflineStore",
    "RosterItem",
    "RosterStore",
    "SchemaOutOfDate",
    "ScramCredentials",
    "Storage",
    "StorageError",
    "open_storage",
]

SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})


class StorageError(Exception):
    """Base class of the errors stores raise on purpose (driver errors pass through unchanged)."""


class AlreadyExists(StorageError):
    pass


class NotFound(StorageError):
    pass


@dataclass(frozen=True, slots=True)
class AccountRecord:
    username: str
    created_at: int  # Unix time, milliseconds
    sha1: ScramCredentials | None
    sha256: ScramCredentials | None


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One contact of a user's roster (RFC 6121 section 2.1), plus pending-subscription state.

    ``in_roster=False`` marks a record that only carries a pending inbound request (RFC 6121 3.1.3): it is
    stored but not shown to the user in roster results. The roster feature decides what to show.
    """

    contact: str  # bare JID
    name: str | None = None
    subscription: str = "none"  # one of SUBSCRIPTIONS
    ask_out: bool = False  # we asked for their presence, no answer yet ("ask='subscribe'")
    pending_in: bool = False  # they asked for ours, no answer yet
    approved: bool = False  # pre-approved (RFC 6121 3.4)
    groups: tuple[str, ...] = ()
    in_roster: bool = True

    def __post_init__(self) -> None:
        if self.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"subscription must be one of {sorted(SUBSCRIPTIONS)}: {self.subscription!r}")
        if not isinstance(self.groups, tuple):
            raise TypeError("groups must be a tuple of strings")


class AccountStore(Protocol):
    async def create(self, username: str, sha1: ScramCredentials, sha256: ScramCredentials) -> None:
        """Create an account; raises ``AlreadyExists``."""
        ...

    async def get(self, username: str) -> AccountRecord | None: ...

    async def set_credentials(self, username: str, sha1: ScramCredentials, sha256: ScramCredentials) -> None:
        """Replace both credentials; raises ``NotFound``."""
        ...

    async def delete(self, username: str) -> bool:
        """Delete the account with its roster and offline messages; False if there was no account."""
        ...

    async def list(self, prefix: str | None = None) -> builtins.list[str]:
        """Usernames (starting with ``prefix``, case-sensitive), sorted by code point."""
        ...

    async def exists(self, username: str) -> bool: ...

    async def count(self) -> int: ...


class RosterStore(Protocol):
    async def get_roster(self, username: str) -> tuple[int, list[RosterItem]]:
        """The roster version (0 before the first change) and every item, ``in_roster`` or not."""
        ...

    async def get_item(self, username: str, contact: str) -> RosterItem | None: ...

    async def put_item(self, username: str, item: RosterItem) -> int:
        """Insert or replace the item; returns the new roster version (strictly greater than before)."""
        ...

    async def delete_item(self, username: str, contact: str) -> int:
        """Remove the item; returns the new roster version (unchanged if there was no such item)."""
        ...

    async def contacts_with_subscription(self, username: str, kinds: set[str]) -> list[RosterItem]:
        """Items whose ``subscription`` is in ``kinds`` (e.g. ``{"from", "both"}`` for presence fan-out)."""
        ...


class OfflineStore(Protocol):
    async def push(self, username: str, payload: bytes, max_per_user: int, peer: str | None = None) -> bool:
        """Store a message; False (nothing stored) if the user already has ``max_per_user`` of them.

        With encryption at rest the payload is sealed with the key of the conversation between the user
        and ``peer`` (the sender's bare JID; taken from the payload's ``from`` when not given).
        """
        ...

    async def fetch(self, username: str) -> list[tuple[str, bytes]]:
        """All ``(id, payload)`` pairs of the user, oldest first."""
        ...

    async def delete(self, username: str, ids: Sequence[str]) -> None: ...

    async def count(self, username: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Storage:
    """Everything storage, as built by ``open_storage``; ``close()`` releases the connections."""

    database: Database
    accounts: AccountStore
    roster: RosterStore
    offline: OfflineStore
    #: Per-conversation data keys (None without a keyring: nothing is encrypted, no archive).
    crypto: ConversationCrypto | None = None
    #: The message archive (``stores.archive.SqlArchiveStore``), when there is a keyring.
    archive: Any = None

    async def close(self) -> None:
        await self.database.close()


async def open_storage(
    url_or_urls: str | Sequence[str],
    *,
    check_schema: bool = True,
    on_timing: TimingObserver | None = None,
    keyring: Keyring | None = None,
    domain: str = "localhost",
) -> Storage:
    """Connect, check the schema is at the head revision (``SchemaOutOfDate`` otherwise), build the stores.

    Several URLs name equivalent nodes (Galera): a lost connection moves on to the next one. With a
    ``keyring`` (master keys, see ``crypto.py``) offline messages are sealed, and the message archive is
    available; account deletion then also shreds the account's conversation keys and archive. ``domain``
    turns usernames into bare JIDs for that.
    """
    # Imported here: the implementations import this module for the values and errors.
    from mbeon_chat.storage.stores.accounts import SqlAccountStore
    from mbeon_chat.storage.stores.client import delete_account_data
    from mbeon_chat.storage.stores.offline import SqlOfflineStore
    from mbeon_chat.storage.stores.roster import SqlRosterStore

    database = Database(url_or_urls, on_timing=on_timing)
    if check_schema:
        try:
            await migrate.check_schema(database)
        except BaseException:
            await database.close()
            raise
    accounts = SqlAccountStore(database)
    accounts.cleanups.append(delete_account_data)  # blocklist, PEP, vCard (stores/client.py)
    crypto = archive = None
    if keyring is not None:
        from mbeon_chat.storage.crypto import ConversationCrypto
        from mbeon_chat.storage.stores.archive import SqlArchiveStore

        crypto = ConversationCrypto(database, keyring)
        archive = SqlArchiveStore(database, crypto, domain)
        accounts.cleanups.append(archive.delete_account_data)
        accounts.after_delete.append(lambda _username: archive.purge_orphans())
    return Storage(
        database=database,
        accounts=accounts,
        roster=SqlRosterStore(database),
        offline=SqlOfflineStore(database, crypto, domain),
        crypto=crypto,
        archive=archive,
    )
