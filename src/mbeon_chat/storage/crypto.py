"""Encryption at rest: per-conversation data keys (AES-256-GCM), wrapped by a master key.

Design (docs/storage.md has the operator's view):

- A *conversation* is the unordered pair of bare JIDs of a one-to-one chat, or a room's bare JID.
  Each has one live *data key* (256 bits, random) in ``conversation_keys``: its id (UUIDv7), the data key
  wrapped by a master key (AES-256-GCM, the associated data binds the wrapped key to its id and its
  conversation), and the id of that master key.
- The *master key* never touches the database: it is read from a file (``storage.master_key_file``) or an
  environment variable (``storage.master_key_env``); with neither, a key file is generated under the data
  directory (mode 0600) and a warning says so. A file or variable may hold several keys (one per line, or
  comma-separated): the first wraps new data keys, the others only unwrap (during a rotation).
  A master key's id is ``HMAC-SHA256(key, "mbeon-chat master key id v1")[:8]`` in hex: it names the key
  without revealing it.
- A sealed blob is ``0x01 | key id (16 bytes) | nonce (12) | ciphertext+tag``; the associated data is the
  version byte, the key id and a caller-chosen *context* (the archive uses the message id), so a blob
  cannot be moved to another row or conversation unnoticed. Nonces are random (96 bits): fine for far more
  than the 2**32 messages a single conversation will ever see.
- Destroying a data key (deleting its row) makes everything sealed under it unreadable at once
  (crypto-shredding), wherever copies of the rows are. Readers look the key up in the same transaction
  as the rows, so a key destroyed by another process (``mbeon-chat user remove``) is honoured at once;
  writers lock the key row (``FOR SHARE``) so a key cannot be destroyed under a message being written.
- Rotating the master key re-wraps the data keys (small rows) and never re-encrypts messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema_mam import conversation_keys
from mbeon_chat.storage.stores._sql import insert_ignore, now_ms

__all__ = [
    "BLOB_VERSION",
    "Conversation",
    "ConversationCrypto",
    "DataKey",
    "KeyUnavailable",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "blob_key_id",
    "is_sealed",
    "load_keyring",
]

log = structlog.get_logger("mbeon_chat.storage.crypto")

BLOB_VERSION = 1
_VERSION_BYTE = bytes([BLOB_VERSION])
_HEADER = 1 + 16 + 12  # version, key id, nonce
_KEY_BYTES = 32
_ID_LABEL = b"mbeon-chat master key id v1"
_WRAP_LABEL = b"mbeon-chat data key v1"
_REFRESH_EVERY_S = 10.0
_k = conversation_keys


class KeyringError(Exception):
    """The master key cannot be loaded (missing file, bad format); the message says what to fix."""


class KeyUnavailable(Exception):
    """A data key is wrapped by a master key the keyring does not hold (or the wrap is corrupt)."""


# --- master keys ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, repr=False)
class MasterKey:
    secret: bytes
    id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != _KEY_BYTES:
            raise KeyringError(f"a master key has {_KEY_BYTES} bytes, this one {len(self.secret)}")
        key_id = hmac.new(self.secret, _ID_LABEL, hashlib.sha256).hexdigest()[:16]
        object.__setattr__(self, "id", key_id)

    def __repr__(self) -> str:
        return f"<MasterKey {self.id}>"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        """From base64 (standard or URL-safe alphabet) or 64 hex digits."""
        value = text.strip()
        try:
            if len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value):
                raw = bytes.fromhex(value)
            else:
                raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError("a master key is 32 bytes in base64 (or 64 hex digits)") from None
        return cls(raw)

    def encode(self) -> str:
        return base64.b64encode(self.secret).decode()

    def _aead(self) -> AESGCM:
        return AESGCM(self.secret)


def parse_keys(text: str, where: str) -> list[MasterKey]:
    """Keys one per line (``#`` comments) or comma-separated; the first is the primary."""
    keys: list[MasterKey] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in line.split(","):
            if part.strip():
                try:
                    keys.append(MasterKey.parse(part))
                except KeyringError as exc:
                    raise KeyringError(f"{where}: {exc}") from None
    if not keys:
        raise KeyringError(f"{where}: no master key in it")
    return keys


def key_file_text(keys: Sequence[MasterKey]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    lines = [
        f"# mbeon-chat master keys, written {stamp} UTC. The first wraps new data keys;",
        "# the others are kept to read data keys not yet rotated. Never store this file in the database.",
    ]
    lines += [f"{key.encode()}  # id {key.id}" for key in keys]
    return "\n".join(lines) + "\n"


def write_key_file(path: Path, keys: Sequence[MasterKey], *, replace: bool = False) -> None:
    """Write ``keys`` to ``path`` with mode 0600 (atomically when replacing; never overwrites otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key_file_text(keys).encode()
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Keyring:
    """The master keys this process holds: ``primary`` wraps, any of them unwraps.

    With a file source, a changed file is re-read (checked at most every few seconds, and at once when a
    data key names a master key we lack), so ``mbeon-chat keys rotate`` reaches running servers.
    """

    def __init__(self, keys: Sequence[MasterKey], source: str = "memory", path: Path | None = None) -> None:
        self._keys = list(keys)  # empty: a locked keyring (destroys keys, cannot seal or open)
        self.source = source
        self.path = path
        self._mtime = self._stat()
        self._checked = time.monotonic()

    @property
    def primary(self) -> MasterKey:
        self._maybe_refresh()
        if not self._keys:
            raise KeyringError(f"no master key loaded ({self.source})")
        return self._keys[0]

    @property
    def keys(self) -> list[MasterKey]:
        return list(self._keys)

    def get(self, key_id: str) -> MasterKey | None:
        for key in self._keys:
            if key.id == key_id:
                return key
        if self._maybe_refresh(force=True):
            return self.get(key_id)
        return None

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def _maybe_refresh(self, force: bool = False) -> bool:
        if self.path is None:
            return False
        now = time.monotonic()
        if now - self._checked < (1.0 if force else _REFRESH_EVERY_S):
            return False
        self._checked = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return False
        try:
            keys = parse_keys(self.path.read_text(), str(self.path))
        except (OSError, KeyringError) as exc:
            log.error("storage.master_key_reload_failed", path=str(self.path), error=str(exc))
            return False
        changed = [k.id for k in keys] != [k.id for k in self._keys]
        self._keys, self._mtime = keys, mtime
        if changed:
            log.warning(
                "storage.master_keys_reloaded",
                path=str(self.path),
                primary=keys[0].id,
                keys=[k.id for k in keys],
            )
        return changed


def load_keyring(
    key_file: Path | None,
    env_name: str,
    default_file: Path,
    environ: Mapping[str, str] | None = None,
    *,
    create_default: bool = True,
) -> Keyring:
    """The configured keyring: ``key_file`` if set, else ``$env_name`` if set, else ``default_file``.

    Only ``default_file`` is created when missing (a development default, logged as a warning; not with
    ``create_default=False``): a configured file that is missing is an error, since a new key would make
    existing data unreadable.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        return _keyring_from_file(key_file, "storage.master_key_file")
    if env_name and env.get(env_name, "").strip():
        return Keyring(parse_keys(env[env_name], f"${env_name}"), source=f"${env_name}")
    if not default_file.exists() and not create_default:
        raise KeyringError(
            f"no master key: set storage.master_key_file or ${env_name}, or start the server once to "
            f"generate the development key {default_file}"
        )
    if not default_file.exists():
        write_key_file(default_file, [MasterKey.generate()])
        log.warning(
            "storage.master_key_generated",
            path=str(default_file),
            hint=f"generated a master key for this development setup; in production set "
            f"storage.master_key_file or ${env_name or 'MBEON_MASTER_KEY'} and keep a copy of the key "
            f"outside the database and its backups",
        )
    return _keyring_from_file(default_file, "master key file")


def _keyring_from_file(path: Path, what: str) -> Keyring:
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyringError(
            f"{what}: {path}: no such file (create one with `mbeon-chat keys generate --out {path}`)"
        ) from None
    except OSError as exc:
        raise KeyringError(f"{what}: {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        log.warning(
            "storage.master_key_file_readable",
            path=str(path),
            mode=oct(mode & 0o777),
            hint="chmod 600: only the server's user should read the master key",
        )
    return Keyring(parse_keys(text, str(path)), source=str(path), path=path)


# --- conversations and data keys --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Conversation:
    """Who a data key belongs to: a one-to-one chat (two bare JIDs, sorted) or a room (``b == ""``)."""

    kind: str
    a: str
    b: str

    @classmethod
    def chat(cls, one: str, other: str) -> Conversation:
        a, b = sorted((one, other))
        return cls("chat", a, b)

    @classmethod
    def room(cls, room: str) -> Conversation:
        return cls("room", room, "")

    def wrap_aad(self, key_id: str) -> bytes:
        return b"|".join((_WRAP_LABEL, key_id.encode(), self.kind.encode(), self.a.encode(), self.b.encode()))


class DataKey:
    """An unwrapped data key: seals and opens blobs."""

    __slots__ = ("_aead", "conversation", "key_id", "raw_id")

    def __init__(self, key_id: str, secret: bytes, conversation: Conversation) -> None:
        self.key_id = key_id
        self.raw_id = uuid.UUID(key_id).bytes
        self.conversation = conversation
        self._aead = AESGCM(secret)

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        header = _VERSION_BYTE + self.raw_id
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + context)

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        """Decrypt; raises ``InvalidTag`` if the blob was changed or belongs to another row."""
        header = blob[:17]
        if header != _VERSION_BYTE + self.raw_id:
            raise InvalidTag("sealed by another key")
        return self._aead.decrypt(blob[17:_HEADER], blob[_HEADER:], header + context)


def is_sealed(blob: bytes) -> bool:
    return len(blob) > _HEADER and blob[0] == BLOB_VERSION


def blob_key_id(blob: bytes) -> str:
    """The id of the data key a blob is sealed with."""
    return str(uuid.UUID(bytes=bytes(blob[1:17])))


@dataclass
class RotationReport:
    total: int = 0
    rewrapped: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)  # master key id -> data keys we cannot unwrap


class ConversationCrypto:
    """Data keys per conversation, cached unwrapped in memory (bounded), checked against the database."""

    def __init__(self, database: Database, keyring: Keyring, *, cache_size: int = 20000) -> None:
        self.db = database
        self.keyring = keyring
        self.cache_size = cache_size
        self._by_id: OrderedDict[str, DataKey] = OrderedDict()
        self._by_conversation: dict[Conversation, str] = {}

    # --- inside a caller's transaction -------------------------------------------------------------
    async def key_for_write(self, conn: AsyncConnection, conversation: Conversation) -> DataKey:
        """The conversation's live data key, created if it has none; the key row is share-locked."""
        cached_id = self._by_conversation.get(conversation)
        if cached_id is not None:
            found = await conn.scalar(
                select(_k.c.key_id).where(_k.c.key_id == cached_id).with_for_update(read=True)
            )
            cached = self._by_id.get(cached_id)
            if found is not None and cached is not None:
                self._by_id.move_to_end(cached_id)
                return cached
            self.forget([cached_id])
        row = await self._select_conversation(conn, conversation)
        if row is None:
            await self._create(conn, conversation)
            row = await self._select_conversation(conn, conversation)
            if row is None:  # pragma: no cover - destroyed between our insert and select
                raise KeyUnavailable(f"no data key for {conversation}")
        return self._remember(self._unwrap(row))

    async def keys_for_read(self, conn: AsyncConnection, key_ids: Iterable[str]) -> dict[str, DataKey]:
        """The live keys among ``key_ids`` (a destroyed key is simply absent)."""
        wanted = sorted(set(key_ids))
        out: dict[str, DataKey] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            rows = await conn.execute(select(_k).where(_k.c.key_id.in_(batch)))
            for row in rows:
                out[row.key_id] = self.key_from_row(row)
        for key_id in wanted:
            if key_id not in out:
                self.forget([key_id])
        return out

    def key_from_row(self, row: Any) -> DataKey:
        """The data key of a ``conversation_keys`` row (from the cache when it is there)."""
        cached = self._by_id.get(row.key_id)
        if cached is not None:
            return cached
        return self._remember(self._unwrap(row))

    async def destroy_conversation(self, conn: AsyncConnection, conversation: Conversation) -> list[str]:
        query = select(_k.c.key_id).where(_k.c.jid_a == conversation.a, _k.c.jid_b == conversation.b)
        return await self.destroy_keys(conn, list((await conn.scalars(query)).all()))

    async def destroy_for_jid(self, conn: AsyncConnection, jid: str) -> list[str]:
        """Destroy every one-to-one data key ``jid`` is part of (crypto-shredding on account deletion)."""
        query = select(_k.c.key_id).where(_k.c.kind == "chat", or_(_k.c.jid_a == jid, _k.c.jid_b == jid))
        return await self.destroy_keys(conn, list((await conn.scalars(query)).all()))

    async def destroy_keys(self, conn: AsyncConnection, key_ids: list[str]) -> list[str]:
        """Delete these data keys: what they sealed is unreadable from now on, everywhere."""
        for start in range(0, len(key_ids), 500):
            await conn.execute(delete(_k).where(_k.c.key_id.in_(key_ids[start : start + 500])))
        self.forget(key_ids)
        return key_ids

    # --- on their own ------------------------------------------------------------------------------
    async def seal(self, conversation: Conversation, plaintext: bytes, context: bytes = b"") -> bytes:
        """Seal with the conversation's key (in a transaction of its own; stores use ``key_for_write``)."""
        key = await self.db.run("crypto.key_for_write", self.key_for_write, conversation)
        return key.seal(plaintext, context)

    async def open(self, blob: bytes, context: bytes = b"") -> bytes | None:
        """Decrypt, or None when the data key was destroyed. Raises ``InvalidTag`` for a tampered blob."""
        key_id = blob_key_id(blob)
        keys = await self.db.run("crypto.keys_for_read", self.keys_for_read, [key_id], readonly=True)
        key = keys.get(key_id)
        return None if key is None else key.open(blob, context)

    async def master_key_usage(self) -> dict[str, int]:
        """How many data keys each master key (by id) wraps."""

        async def count(conn: AsyncConnection) -> dict[str, int]:
            query = select(_k.c.master_key_id, func.count()).group_by(_k.c.master_key_id)
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

        return await self.db.run("crypto.usage", count, readonly=True)

    async def rotate(
        self,
        target: MasterKey,
        *,
        batch: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> RotationReport:
        """Re-wrap every data key not wrapped by ``target`` (batches of ``batch``, one transaction each).

        Resumable: keys already under ``target`` are skipped, so running it again finishes the job.
        Data keys whose master key is not in the keyring are counted in ``unreadable`` and left as they are.
        """
        report = RotationReport()
        usage = await self.master_key_usage()
        report.total = sum(n for key_id, n in usage.items() if key_id != target.id)
        after = ""
        while True:
            done, after = await self.db.run("crypto.rotate_batch", self._rotate_batch, target, after, batch)
            report.rewrapped += done
            if progress is not None:
                progress(report.rewrapped, max(report.total, report.rewrapped))
            if not after:
                break
        for master_id, n in (await self.master_key_usage()).items():
            if master_id != target.id and self.keyring.get(master_id) is None:
                report.unreadable[master_id] = n
        return report

    async def _rotate_batch(
        self, conn: AsyncConnection, target: MasterKey, after: str, limit: int
    ) -> tuple[int, str]:
        query = (
            select(_k)
            .where(_k.c.master_key_id != target.id, _k.c.key_id > after)
            .order_by(_k.c.key_id)
            .limit(limit)
            .with_for_update()
        )
        rows = list(await conn.execute(query))
        done = 0
        for row in rows:
            try:
                secret = self._unwrap_secret(row)
            except KeyUnavailable:
                continue  # counted in the report's ``unreadable`` at the end
            conversation = Conversation(row.kind, row.jid_a, row.jid_b)
            wrapped = _wrap(target, secret, row.key_id, conversation)
            await conn.execute(
                update(_k)
                .where(_k.c.key_id == row.key_id, _k.c.master_key_id == row.master_key_id)
                .values(wrapped_key=wrapped, master_key_id=target.id)
            )
            done += 1
        next_after = rows[-1].key_id if len(rows) == limit else ""
        return done, next_after

    def forget(self, key_ids: Iterable[str]) -> None:
        for key_id in key_ids:
            key = self._by_id.pop(key_id, None)
            if key is not None and self._by_conversation.get(key.conversation) == key_id:
                del self._by_conversation[key.conversation]

    # --- internals ---------------------------------------------------------------------------------
    async def _select_conversation(self, conn: AsyncConnection, conversation: Conversation) -> Any:
        query = (
            select(_k)
            .where(_k.c.jid_a == conversation.a, _k.c.jid_b == conversation.b)
            .with_for_update(read=True)
        )
        return (await conn.execute(query)).first()

    async def _create(self, conn: AsyncConnection, conversation: Conversation) -> None:
        key_id = new_id()
        master = self.keyring.primary
        secret = AESGCM.generate_key(bit_length=256)
        values = {
            "key_id": key_id,
            "kind": conversation.kind,
            "jid_a": conversation.a,
            "jid_b": conversation.b,
            "master_key_id": master.id,
            "wrapped_key": _wrap(master, secret, key_id, conversation),
            "created_at": now_ms(),
        }
        await insert_ignore(conn, _k, values)  # a concurrent creator may win: we then use its key

    def _unwrap_secret(self, row: Any) -> bytes:
        master = self.keyring.get(row.master_key_id)
        if master is None:
            raise KeyUnavailable(
                f"data key {row.key_id} is wrapped by master key {row.master_key_id}, which is not in the "
                f"keyring ({self.keyring.source}); add that key (see `mbeon-chat keys status`)"
            )
        wrapped = bytes(row.wrapped_key)
        conversation = Conversation(row.kind, row.jid_a, row.jid_b)
        try:
            return master._aead().decrypt(wrapped[:12], wrapped[12:], conversation.wrap_aad(row.key_id))
        except InvalidTag:
            raise KeyUnavailable(
                f"data key {row.key_id}: the wrapped key does not verify (tampered?)"
            ) from None

    def _unwrap(self, row: Any) -> DataKey:
        return DataKey(row.key_id, self._unwrap_secret(row), Conversation(row.kind, row.jid_a, row.jid_b))

    def _remember(self, key: DataKey) -> DataKey:
        self._by_id[key.key_id] = key
        self._by_id.move_to_end(key.key_id)
        self._by_conversation[key.conversation] = key.key_id
        while len(self._by_id) > self.cache_size:
            old_id, old = self._by_id.popitem(last=False)
            if self._by_conversation.get(old.conversation) == old_id:
                del self._by_conversation[old.conversation]
        return key


def _wrap(master: MasterKey, secret: bytes, key_id: str, conversation: Conversation) -> bytes:
    nonce = os.urandom(12)
    return nonce + master._aead().encrypt(nonce, secret, conversation.wrap_aad(key_id))


def keyring_from_config(config: Any, *, create_default: bool = True) -> Keyring:
    """The keyring the configuration names (``storage.master_key_file`` / ``storage.master_key_env``),
    with ``<data_dir>/master.key`` as the generated development default."""
    section = config.storage
    key_file = config.path(section.master_key_file) if section.master_key_file else None
    return load_keyring(
        key_file, section.master_key_env, config.data_dir / "master.key", create_default=create_default
    )
