"""Encryption at rest (storage/crypto.py): master keys and keyrings, sealing, per-conversation data keys on
every backend, crypto-shredding and master key rotation."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select, update

from mbeon_chat.storage.crypto import (
    Conversation,
    ConversationCrypto,
    DataKey,
    Keyring,
    KeyringError,
    KeyUnavailable,
    MasterKey,
    blob_key_id,
    load_keyring,
    parse_keys,
    write_key_file,
)
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema_mam import conversation_keys

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"


# --- master keys and keyrings (no database) ----------------------------------------------------------
def test_a_master_key_round_trips_through_its_text_form_and_keeps_its_id() -> None:
    key = MasterKey.generate()
    again = MasterKey.parse(key.encode())
    assert again.secret == key.secret and again.id == key.id and len(key.id) == 16
    assert MasterKey.parse(key.secret.hex()).id == key.id
    assert key.encode() not in repr(key)


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", "00" * 31])
def test_malformed_master_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyringError):
        parse_keys(text, "test")


def test_a_key_file_lists_keys_primary_first_with_comments(tmp_path: Path) -> None:
    new, old = MasterKey.generate(), MasterKey.generate()
    path = tmp_path / "keys"
    write_key_file(path, [new, old])

    assert [k.id for k in parse_keys(path.read_text(), "keys")] == [new.id, old.id]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(path, [new])  # never overwritten by accident


def test_the_development_default_key_is_generated_once_and_said_so(
    tmp_path: Path, log_events: list[Any]
) -> None:
    default = tmp_path / "var" / "master.key"
    first = load_keyring(None, "MBEON_TEST_NO_SUCH_VAR", default, environ={})
    second = load_keyring(None, "MBEON_TEST_NO_SUCH_VAR", default, environ={})

    assert first.primary.id == second.primary.id
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert [e["event"] for e in log_events].count("storage.master_key_generated") == 1


def test_the_environment_variable_comes_before_the_default_and_a_configured_file_first(
    tmp_path: Path,
) -> None:
    env_key, file_key = MasterKey.generate(), MasterKey.generate()
    path = tmp_path / "k"
    write_key_file(path, [file_key])
    environ = {"MK": f"{env_key.encode()}, {file_key.encode()}"}

    from_env = load_keyring(None, "MK", tmp_path / "default.key", environ=environ)
    assert [k.id for k in from_env.keys] == [env_key.id, file_key.id]
    assert not (tmp_path / "default.key").exists()
    assert load_keyring(path, "MK", tmp_path / "default.key", environ=environ).primary.id == file_key.id


def test_a_configured_key_file_that_is_missing_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="keys generate"):
        load_keyring(tmp_path / "missing.key", "MK", tmp_path / "default.key", environ={})
    assert not (tmp_path / "missing.key").exists()


def test_a_keyring_rereads_its_file_when_it_meets_an_unknown_master_key(tmp_path: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    path = tmp_path / "keys"
    write_key_file(path, [old])
    ring = load_keyring(path, "", tmp_path / "x", environ={})
    write_key_file(path, [new, old], replace=True)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    ring._checked -= 60

    assert ring.get(new.id) is not None
    assert ring.primary.id == new.id


def test_a_sealed_blob_opens_only_with_its_key_and_context() -> None:
    conv = Conversation.chat(BOB, ALICE)
    key = DataKey(new_id(), os.urandom(32), conv)
    blob = key.seal(b"the message", b"mam|1")

    assert key.open(blob, b"mam|1") == b"the message"
    assert blob_key_id(blob) == key.key_id
    assert b"the message" not in blob
    with pytest.raises(InvalidTag):
        key.open(blob, b"mam|2")  # moved to another row
    with pytest.raises(InvalidTag):
        DataKey(key.key_id, os.urandom(32), conv).open(blob, b"mam|1")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(InvalidTag):
        key.open(bytes(tampered), b"mam|1")


def test_a_conversation_is_the_unordered_pair() -> None:
    assert Conversation.chat(ALICE, BOB) == Conversation.chat(BOB, ALICE)
    assert Conversation.room("room@groups.example.org") != Conversation.chat("room@groups.example.org", "")


# --- data keys in the database (every backend) -------------------------------------------------------
@pytest.fixture
async def database(backend_url: str) -> AsyncIterator[Database]:
    db = Database(backend_url)
    yield db
    await db.close()


async def test_each_conversation_gets_its_own_key_and_reuses_it(database: Database) -> None:
    crypto = ConversationCrypto(database, Keyring([MasterKey.generate()]))
    ab1 = await crypto.seal(Conversation.chat(ALICE, BOB), b"1")
    ab2 = await crypto.seal(Conversation.chat(BOB, ALICE), b"2")
    ac = await crypto.seal(Conversation.chat(ALICE, CAROL), b"3")
    room = await crypto.seal(Conversation.room("room@groups.example.org"), b"4")

    assert blob_key_id(ab1) == blob_key_id(ab2)
    assert len({blob_key_id(ab1), blob_key_id(ac), blob_key_id(room)}) == 3
    fresh = ConversationCrypto(database, crypto.keyring)  # another process: nothing cached
    assert [await fresh.open(b) for b in (ab1, ab2, ac, room)] == [b"1", b"2", b"3", b"4"]


async def test_concurrent_writers_agree_on_one_key_per_conversation(database: Database) -> None:
    ring = Keyring([MasterKey.generate()])
    writers = [ConversationCrypto(database, ring) for _ in range(4)]
    blobs = await asyncio.gather(*(w.seal(Conversation.chat(ALICE, BOB), b"x") for w in writers))
    assert len({blob_key_id(b) for b in blobs}) == 1


async def test_destroying_the_keys_of_a_jid_makes_its_conversations_unreadable(database: Database) -> None:
    crypto = ConversationCrypto(database, Keyring([MasterKey.generate()]))
    ab = await crypto.seal(Conversation.chat(ALICE, BOB), b"alice and bob")
    bc = await crypto.seal(Conversation.chat(BOB, CAROL), b"bob and carol")
    other = ConversationCrypto(database, crypto.keyring)
    assert await other.open(ab) == b"alice and bob"  # now cached over there

    async with database.transaction("test.shred") as conn:
        assert len(await crypto.destroy_for_jid(conn, ALICE)) == 1

    assert await other.open(ab) is None  # the cache does not outlive the key
    assert await other.open(bc) == b"bob and carol"
    fresh = await other.seal(Conversation.chat(ALICE, BOB), b"after")  # a new key for new messages
    assert blob_key_id(fresh) != blob_key_id(ab)


async def test_a_writer_with_a_cached_key_notices_its_destruction(database: Database) -> None:
    crypto = ConversationCrypto(database, Keyring([MasterKey.generate()]))
    first = await crypto.seal(Conversation.chat(ALICE, BOB), b"1")
    async with database.transaction("test.shred") as conn:
        await conn.execute(conversation_keys.delete())  # another process erased it

    second = await crypto.seal(Conversation.chat(ALICE, BOB), b"2")
    assert blob_key_id(second) != blob_key_id(first)
    assert await crypto.open(second) == b"2"


async def test_the_wrapped_key_is_bound_to_its_conversation(database: Database) -> None:
    crypto = ConversationCrypto(database, Keyring([MasterKey.generate()]))
    ab = await crypto.seal(Conversation.chat(ALICE, BOB), b"x")
    await crypto.seal(Conversation.chat(ALICE, CAROL), b"y")
    async with database.transaction("test.swap") as conn:
        wrapped = {r.jid_b: bytes(r.wrapped_key) for r in await conn.execute(select(conversation_keys))}
        await conn.execute(
            update(conversation_keys)
            .where(conversation_keys.c.jid_b == BOB)
            .values(wrapped_key=wrapped[CAROL])
        )
    with pytest.raises(KeyUnavailable, match="does not verify"):
        await ConversationCrypto(database, crypto.keyring).open(ab)


async def test_rotation_rewraps_every_key_and_history_stays_readable(database: Database) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    crypto = ConversationCrypto(database, Keyring([old]))
    blobs = [
        await crypto.seal(Conversation.chat(ALICE, f"u{i}@example.org"), f"m{i}".encode()) for i in range(7)
    ]
    progress: list[tuple[int, int]] = []

    rotator = ConversationCrypto(database, Keyring([old]))
    report = await rotator.rotate(new, batch=3, progress=lambda done, total: progress.append((done, total)))

    assert (report.total, report.rewrapped, report.unreadable) == (7, 7, {})
    assert progress[-1] == (7, 7) and len(progress) >= 3
    assert await rotator.master_key_usage() == {new.id: 7}
    only_new = ConversationCrypto(database, Keyring([new]))
    assert [await only_new.open(b) for b in blobs] == [f"m{i}".encode() for i in range(7)]
    assert (await rotator.rotate(new)).rewrapped == 0  # nothing left to do


async def test_rotation_leaves_keys_of_unknown_master_keys_alone_and_says_so(database: Database) -> None:
    lost, kept, new = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    await ConversationCrypto(database, Keyring([lost])).seal(Conversation.chat(ALICE, BOB), b"x")
    await ConversationCrypto(database, Keyring([kept])).seal(Conversation.chat(ALICE, CAROL), b"y")

    report = await ConversationCrypto(database, Keyring([kept])).rotate(new)

    assert report.rewrapped == 1 and report.unreadable == {lost.id: 1}
