"""The message archive (XEP-0313) for one-to-one messages: sealed per-owner copies, preferences, paging,
retention and erasure.

One write (``archive``) is one named transaction: it share-locks the owners' account rows (so it cannot
interleave with the deletion of one of them), applies each owner's preferences, seals the stanza once with
the conversation's data key and inserts a row per owner archive. The id is chosen by the caller before
the transaction, and the insert ignores an existing row, so a retry after a lost acknowledgement finds
the rows of the attempt that did commit instead of writing them twice.

Reads join ``conversation_keys``: rows whose data key was destroyed (an erased account) vanish from
results and counts at once, before the sweeper (``purge_orphans``) deletes them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.api import StorageError
from mbeon_chat.storage.crypto import Conversation, ConversationCrypto
from mbeon_chat.storage.database import Database, classify_error
from mbeon_chat.storage.ids import id_timestamp_ms
from mbeon_chat.storage.schema import accounts, offline_messages, roster_items
from mbeon_chat.storage.schema_mam import conversation_keys, mam_messages, mam_prefs
from mbeon_chat.storage.stores._sql import insert_ignore, now_ms, upsert

__all__ = [
    "MODES",
    "ArchiveFilter",
    "ArchiveWrite",
    "ArchivedMessage",
    "Page",
    "PageRequest",
    "Prefs",
    "SqlArchiveStore",
    "UnknownId",
    "id_prefix",
]

log = structlog.get_logger("mbeon_chat.storage.archive")

MODES = ("always", "never", "roster")
_m = mam_messages
_k = conversation_keys
_BATCH = 500
ARCHIVE_ATTEMPTS = 20  # within Database.timeout (10 s by default)
MAX_BATCH = 64  # messages per group-commit transaction


class UnknownId(StorageError):
    """An ``after``/``before`` id that is not in the archive (XEP-0313: item-not-found)."""


@dataclass(frozen=True, slots=True)
class Prefs:
    default: str = "always"
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.default not in MODES:
            raise ValueError(f"default must be one of {MODES}: {self.default!r}")


@dataclass(frozen=True, slots=True)
class ArchiveWrite:
    """One message to archive. Owners are local usernames (None: not a local account, no copy)."""

    id: str  # UUIDv7, the stanza-id
    sender: str  # bare JIDs
    recipient: str
    stanza: bytes
    sender_owner: str | None = None
    recipient_owner: str | None = None
    sender_resource: str | None = None
    recipient_resource: str | None = None


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    id: str
    owner: str
    with_jid: str
    with_resource: str | None
    outgoing: bool
    created_at: int  # ms since the epoch
    stanza: bytes


@dataclass(frozen=True, slots=True)
class ArchiveFilter:
    with_jid: str | None = None  # bare
    with_resource: str | None = None  # with a full JID in ``with``
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # inclusive
    after_id: str | None = None  # exclusive (mam:2#extended)
    before_id: str | None = None
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """RSM (XEP-0059): ``before=""`` asks for the last page; ``index`` skips items (forward only)."""

    max: int = 50
    after: str | None = None
    before: str | None = None
    index: int | None = None


@dataclass
class Page:
    messages: list[ArchivedMessage] = field(default_factory=list)
    complete: bool = True  # the page reaches the end of the result set in its direction
    count: int = 0
    first_index: int | None = None


def id_prefix(ms: int) -> str:
    """The first 13 characters of every UUIDv7 of millisecond ``ms``: ids of ``ms`` sort at or after it."""
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:]}"


class SqlArchiveStore:
    """Group commit: writes that arrive while a transaction runs go together into the next one (at most
    ``MAX_BATCH``), and each caller resumes only once its row is committed, so archiving keeps up with
    many concurrent senders without delaying a lone one."""

    def __init__(
        self, database: Database, crypto: ConversationCrypto, domain: str, *, group_commit: bool = True
    ) -> None:
        self._db = database
        self.crypto = crypto
        self.domain = domain
        self.group_commit = group_commit
        self._queue: list[tuple[ArchiveWrite, str, asyncio.Future[tuple[str, ...] | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- writing -----------------------------------------------------------------------------------
    async def archive(self, write: ArchiveWrite, default_mode: str = "always") -> tuple[str, ...] | None:
        """Store the owners' copies; returns the owners whose archive has the message (maybe none), or
        None when the recipient is a local account that does not exist (nothing stored)."""
        if not self.group_commit:
            return (await self._write([(write, default_mode)]))[0]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[str, ...] | None] = loop.create_future()
        self._queue.append((write, default_mode, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            items = [(write, mode) for write, mode, _ in batch]
            try:
                results = await self._write(items)
            except Exception as exc:
                if len(batch) == 1 or isinstance(exc, TimeoutError) or classify_error(exc) is not None:
                    for _, _, done in batch:  # the database is unavailable: all of them fail now
                        _settle(done, error=exc)
                    continue
                for item, (_, _, done) in zip(items, batch, strict=True):  # find the one that fails
                    try:
                        _settle(done, (await self._write([item]))[0])
                    except Exception as single:
                        _settle(done, error=single)
                continue
            for (_, _, done), result in zip(batch, results, strict=True):
                _settle(done, result)

    async def _write(self, items: list[tuple[ArchiveWrite, str]]) -> list[tuple[str, ...] | None]:
        name = "mam.archive" if len(items) == 1 else "mam.archive_batch"
        # A message waits for its archive row: keep retrying transient errors up to the deadline.
        return await self._db.run(name, self._archive, items, attempts=ARCHIVE_ATTEMPTS)

    async def _archive(
        self, conn: AsyncConnection, items: list[tuple[ArchiveWrite, str]]
    ) -> list[tuple[str, ...] | None]:
        owners = sorted({o for w, _ in items for o in (w.sender_owner, w.recipient_owner) if o})
        # The owners' account rows, share-locked (an account being deleted makes us wait, then we see it
        # gone), with their preferences in the same round trip.
        query = (
            select(accounts.c.username, *_PREF_COLUMNS)
            .select_from(accounts.outerjoin(mam_prefs, mam_prefs.c.username == accounts.c.username))
            .where(accounts.c.username.in_(owners))
            .with_for_update(read=True, of=accounts)
        )
        stored = {row.username: row for row in await conn.execute(query)}
        plans: list[list[tuple[str, str, str | None, bool]] | None] = []
        for w, mode in items:
            if w.recipient_owner is not None and w.recipient_owner not in stored:
                plans.append(None)
                continue
            sender = w.sender_owner if w.sender_owner in stored else None
            recipient = w.recipient_owner if w.recipient_owner in stored else None
            prefs = {o: _prefs_row(stored[o], mode) for o in (sender, recipient) if o is not None}
            copies: list[tuple[str, str, str | None, bool]] = []
            if sender is not None and await _wants(conn, sender, w.recipient, prefs):
                copies.append((sender, w.recipient, w.recipient_resource, True))
            if (
                recipient is not None
                and recipient != sender
                and await _wants(conn, recipient, w.sender, prefs)
            ):
                copies.append((recipient, w.sender, w.sender_resource, False))
            plans.append(copies)
        # One data key per conversation, fetched in a fixed order (no lock-order deadlocks between nodes).
        wanted = {
            Conversation.chat(w.sender, w.recipient) for (w, _), p in zip(items, plans, strict=True) if p
        }
        keys = {c: await self.crypto.key_for_write(conn, c) for c in sorted(wanted, key=lambda c: (c.a, c.b))}
        rows = []
        for (w, _), plan in zip(items, plans, strict=True):
            if not plan:
                continue
            key = keys[Conversation.chat(w.sender, w.recipient)]
            sealed = key.seal(w.stanza, _context(w.id))
            created = id_timestamp_ms(w.id)
            rows += [
                {
                    "owner": owner,
                    "id": w.id,
                    "with_jid": with_jid,
                    "with_resource": with_resource,
                    "outgoing": outgoing,
                    "created_at": created,
                    "key_id": key.key_id,
                    "payload": sealed,
                }
                for owner, with_jid, with_resource, outgoing in plan
            ]
        # Ignoring existing rows makes a retry after a lost acknowledgement a no-op: the ids are the same.
        for start in range(0, len(rows), 100):
            await insert_ignore(conn, _m, rows[start : start + 100])
        return [None if p is None else tuple(c[0] for c in p) for p in plans]

    # --- preferences -------------------------------------------------------------------------------
    async def get_prefs(self, owner: str, default_mode: str = "always") -> Prefs:
        prefs = await self._db.run("mam.get_prefs", _prefs_of, [owner], default_mode, readonly=True)
        return prefs[owner]

    async def set_prefs(self, owner: str, prefs: Prefs) -> None:
        values = {
            "username": owner,
            "default_mode": prefs.default,
            "always_jids": json.dumps(sorted(set(prefs.always))),
            "never_jids": json.dumps(sorted(set(prefs.never))),
            "updated_at": now_ms(),
        }
        await self._db.run("mam.set_prefs", upsert, mam_prefs, values, ["username"])

    # --- reading -----------------------------------------------------------------------------------
    async def query(self, owner: str, flt: ArchiveFilter, page: PageRequest) -> Page:
        """One page of ``owner``'s archive; raises ``UnknownId`` for an unknown cursor id."""
        return await self._db.run("mam.query", self._query, owner, flt, page, readonly=True)

    async def _query(self, conn: AsyncConnection, owner: str, flt: ArchiveFilter, page: PageRequest) -> Page:
        cursors = [i for i in (flt.after_id, flt.before_id, page.after, page.before) if i]
        if cursors:
            found = set(
                (await conn.scalars(select(_m.c.id).where(_m.c.owner == owner, _m.c.id.in_(cursors)))).all()
            )
            missing = [i for i in cursors if i not in found]
            if missing:
                raise UnknownId(missing[0])
        conds = _conditions(owner, flt)
        joined = _m.join(_k, _m.c.key_id == _k.c.key_id)
        count = int(await conn.scalar(select(func.count()).select_from(joined).where(*conds)) or 0)
        if page.max <= 0:
            return Page([], count == 0, count, None)
        query = select(*_COLUMNS).select_from(joined).where(*conds)
        if page.after:
            query = query.where(_m.c.id > page.after)
        if page.before is not None:
            if page.before:
                query = query.where(_m.c.id < page.before)
            rows = list(await conn.execute(query.order_by(_m.c.id.desc()).limit(page.max + 1)))
            more = len(rows) > page.max
            rows = rows[: page.max]
            rows.reverse()
        else:
            query = query.order_by(_m.c.id).limit(page.max + 1)
            if page.index and not page.after:
                query = query.offset(page.index)
            rows = list(await conn.execute(query))
            more = len(rows) > page.max
            rows = rows[: page.max]
        messages = self._open_rows(owner, rows)
        first_index = None
        if rows:
            before_first = select(func.count()).select_from(joined).where(*conds, _m.c.id < rows[0].id)
            first_index = int(await conn.scalar(before_first) or 0)
        return Page(messages, not more, count, first_index)

    async def metadata(self, owner: str) -> tuple[ArchivedMessage | None, ArchivedMessage | None]:
        """The oldest and the newest message of ``owner``'s archive (None when it is empty)."""

        async def ends(conn: AsyncConnection) -> tuple[ArchivedMessage | None, ArchivedMessage | None]:
            joined = _m.join(_k, _m.c.key_id == _k.c.key_id)
            base = select(*_COLUMNS).select_from(joined).where(_m.c.owner == owner).limit(1)
            first = list(await conn.execute(base.order_by(_m.c.id)))
            last = list(await conn.execute(base.order_by(_m.c.id.desc())))
            opened = self._open_rows(owner, first + last)
            return (opened[0], opened[-1]) if len(opened) == 2 else (None, None)

        return await self._db.run("mam.metadata", ends, readonly=True)

    async def export(self, owner: str) -> list[ArchivedMessage]:
        """Every readable message of ``owner``'s archive, oldest first (for data-subject requests)."""
        out: list[ArchivedMessage] = []
        after: str | None = None
        while True:
            page = await self.query(owner, ArchiveFilter(), PageRequest(max=_BATCH, after=after))
            out += page.messages
            if page.complete or not page.messages:
                return out
            after = page.messages[-1].id

    async def count(self, owner: str) -> int:
        return (await self.query(owner, ArchiveFilter(), PageRequest(max=0))).count

    def _open_rows(self, owner: str, rows: Sequence[Any]) -> list[ArchivedMessage]:
        out = []
        for row in rows:
            try:
                stanza = self.crypto.key_from_row(row).open(bytes(row.payload), _context(row.id))
            except InvalidTag:
                log.error("mam.unreadable_row", owner=owner, message_id=row.id)
                continue
            out.append(
                ArchivedMessage(
                    row.id,
                    owner,
                    row.with_jid,
                    row.with_resource,
                    bool(row.outgoing),
                    int(row.created_at),
                    stanza,
                )
            )
        return out

    # --- retention and erasure ---------------------------------------------------------------------
    async def purge_older_than(self, cutoff_ms: int, batch: int = _BATCH) -> int:
        """Delete every archived message older than ``cutoff_ms`` (batches, one transaction each)."""
        total = 0
        while True:
            n = await self._db.run("mam.purge_batch", _purge_batch, id_prefix(cutoff_ms), batch)
            total += n
            if n < batch:
                return total

    async def purge_orphans(self, batch: int = _BATCH) -> int:
        """Delete the rows whose data key was destroyed (unreadable already; this frees the space)."""
        total = 0
        while True:
            n = await self._db.run("mam.purge_orphans", _purge_orphans, batch)
            total += n
            if n < batch:
                return total

    async def destroy_unused_keys(self, min_age_ms: int = 60_000) -> int:
        """Destroy the one-to-one data keys that seal nothing any more (no archived or offline message)."""
        cutoff = now_ms() - min_age_ms
        total = 0
        after = ""
        while True:
            destroyed, after = await self._db.run(
                "mam.destroy_unused_keys", self._destroy_unused, cutoff, after
            )
            total += destroyed
            if not after:
                return total

    async def _destroy_unused(self, conn: AsyncConnection, cutoff: int, after: str) -> tuple[int, str]:
        used = select(_m.c.key_id).where(_m.c.key_id == _k.c.key_id).exists()
        query = (
            select(_k.c.key_id, _k.c.jid_a, _k.c.jid_b)
            .where(_k.c.kind == "chat", _k.c.created_at < cutoff, _k.c.key_id > after, ~used)
            .order_by(_k.c.key_id)
            .limit(100)
            .with_for_update()
        )
        rows = list(await conn.execute(query))
        doomed = []
        for row in rows:
            if await conn.scalar(select(_m.c.id).where(_m.c.key_id == row.key_id).limit(1)) is not None:
                continue  # written meanwhile (the row lock made that writer wait or finish first)
            if await self._sealed_offline(conn, row.key_id, (row.jid_a, row.jid_b)):
                continue
            doomed.append(row.key_id)
        if doomed:
            await self.crypto.destroy_keys(conn, doomed)
        return len(doomed), (rows[-1].key_id if len(rows) == 100 else "")

    async def _sealed_offline(self, conn: AsyncConnection, key_id: str, jids: Sequence[str]) -> bool:
        """Whether an offline message of either party is sealed with ``key_id``."""
        suffix = "@" + self.domain
        users = [j[: -len(suffix)] for j in jids if j.endswith(suffix)]
        if not users:
            return False
        header = bytes([1]) + uuid.UUID(key_id).bytes
        query = select(func.substr(offline_messages.c.payload, 1, 17)).where(
            offline_messages.c.username.in_(users)
        )
        return any(bytes(prefix) == header for prefix in (await conn.scalars(query)).all())

    async def delete_account_data(self, conn: AsyncConnection, username: str) -> None:
        """In the account deletion transaction: shred the user's conversation keys (every copy of their
        one-to-one history, the peers' included, becomes unreadable at once), delete their archive rows and
        preferences. The peers' now unreadable rows are deleted right after by ``purge_orphans``."""
        await self.crypto.destroy_for_jid(conn, f"{username}@{self.domain}")
        await conn.execute(delete(_m).where(_m.c.owner == username))
        await conn.execute(delete(mam_prefs).where(mam_prefs.c.username == username))


_COLUMNS = (
    _m.c.id,
    _m.c.with_jid,
    _m.c.with_resource,
    _m.c.outgoing,
    _m.c.created_at,
    _m.c.payload,
    _k.c.key_id,
    _k.c.kind,
    _k.c.jid_a,
    _k.c.jid_b,
    _k.c.master_key_id,
    _k.c.wrapped_key,
)


def _context(message_id: str) -> bytes:
    return b"mam|" + message_id.encode()


def _conditions(owner: str, flt: ArchiveFilter) -> list[Any]:
    conds: list[Any] = [_m.c.owner == owner]
    if flt.with_jid is not None:
        conds.append(_m.c.with_jid == flt.with_jid)
    if flt.with_resource is not None:
        conds.append(_m.c.with_resource == flt.with_resource)
    if flt.start_ms is not None:
        conds.append(_m.c.id >= id_prefix(flt.start_ms))
    if flt.end_ms is not None:
        conds.append(_m.c.id < id_prefix(flt.end_ms + 1))
    if flt.after_id:
        conds.append(_m.c.id > flt.after_id)
    if flt.before_id:
        conds.append(_m.c.id < flt.before_id)
    if flt.ids is not None:
        conds.append(_m.c.id.in_(list(flt.ids)))
    return conds


_PREF_COLUMNS = (mam_prefs.c.default_mode, mam_prefs.c.always_jids, mam_prefs.c.never_jids)


def _prefs_row(row: Any, default_mode: str) -> Prefs:
    if row.default_mode is None:
        return Prefs(default_mode)
    return Prefs(row.default_mode, tuple(json.loads(row.always_jids)), tuple(json.loads(row.never_jids)))


async def _prefs_of(conn: AsyncConnection, owners: Sequence[str], default_mode: str) -> dict[str, Prefs]:
    out = {owner: Prefs(default_mode) for owner in owners}
    if owners:
        query = select(mam_prefs.c.username, *_PREF_COLUMNS).where(mam_prefs.c.username.in_(list(owners)))
        for row in await conn.execute(query):
            out[row.username] = _prefs_row(row, default_mode)
    return out


async def _wants(conn: AsyncConnection, owner: str, peer: str, prefs: dict[str, Prefs]) -> bool:
    p = prefs[owner]
    if peer in p.never:
        return False
    if peer in p.always:
        return True
    if p.default == "roster":
        query = select(roster_items.c.contact).where(
            roster_items.c.username == owner, roster_items.c.contact == peer, roster_items.c.in_roster
        )
        return await conn.scalar(query) is not None
    return p.default == "always"


async def _purge_batch(conn: AsyncConnection, bound: str, batch: int) -> int:
    ids = list(
        (await conn.scalars(select(_m.c.id).where(_m.c.id < bound).order_by(_m.c.id).limit(batch))).all()
    )
    if ids:
        await conn.execute(delete(_m).where(_m.c.id.in_(sorted(set(ids)))))
    return len(ids)


async def _purge_orphans(conn: AsyncConnection, batch: int) -> int:
    query = (
        select(_m.c.owner, _m.c.id)
        .select_from(_m.outerjoin(_k, _m.c.key_id == _k.c.key_id))
        .where(_k.c.key_id.is_(None))
        .limit(batch)
    )
    rows = list(await conn.execute(query))
    by_owner: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_owner[row.owner].append(row.id)
    for owner, ids in by_owner.items():
        await conn.execute(delete(_m).where(and_(_m.c.owner == owner, _m.c.id.in_(ids))))
    return len(rows)


def _settle(
    done: asyncio.Future[tuple[str, ...] | None],
    result: tuple[str, ...] | None = None,
    error: BaseException | None = None,
) -> None:
    if done.done():  # the caller gave up (cancelled); the row is written all the same
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
