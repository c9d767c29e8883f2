"""The message archive store (XEP-0313 back end) on every backend: both owners' copies, idempotent writes,
preferences, RSM paging and filters, retention, and erasure by account deletion (crypto-shredding)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import func, select

from mbeon_chat.storage.api import ScramCredentials, Storage, open_storage
from mbeon_chat.storage.crypto import Keyring, MasterKey
from mbeon_chat.storage.ids import UUIDv7Generator
from mbeon_chat.storage.schema_mam import conversation_keys, mam_messages
from mbeon_chat.storage.stores.archive import (
    ArchiveFilter,
    ArchiveWrite,
    PageRequest,
    Prefs,
    SqlArchiveStore,
    UnknownId,
)

Creds = Callable[[str], tuple[ScramCredentials, ScramCredentials]]
DOMAIN = "example.org"
ALICE, BOB, CAROL = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol"))
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


@pytest.fixture
async def vault(backend_url: str, credentials: Creds) -> AsyncIterator[Storage]:
    opened = await open_storage(backend_url, keyring=Keyring([MasterKey.generate()]), domain=DOMAIN)
    for user in ("alice", "bob", "carol"):
        await opened.accounts.create(user, *credentials("pw"))
    yield opened
    await opened.close()


def ids_from(start_ms: int, step_ms: int = 1000) -> Callable[[], str]:
    clock = [start_ms * 1_000_000]
    gen = UUIDv7Generator(lambda: clock[0])

    def next_id() -> str:
        value = gen.new_id()
        clock[0] += step_ms * 1_000_000
        return value

    return next_id


def chat(message_id: str, sender: str, recipient: str, body: str) -> ArchiveWrite:
    stanza = (
        f"<message xmlns='jabber:client' from='{sender}/phone' to='{recipient}' type='chat'>"
        f"<body>{body}</body></message>"
    )
    return ArchiveWrite(
        id=message_id,
        sender=sender,
        recipient=recipient,
        stanza=stanza.encode(),
        sender_owner=sender.split("@")[0] if sender.endswith(DOMAIN) else None,
        recipient_owner=recipient.split("@")[0],
        sender_resource="phone",
    )


async def write_conversation(archive: SqlArchiveStore, n: int, start_ms: int = T0) -> list[str]:
    next_id = ids_from(start_ms)
    written = []
    for i in range(n):
        w = (
            chat(next_id(), ALICE, BOB, f"message {i}")
            if i % 2 == 0
            else chat(next_id(), BOB, ALICE, f"reply {i}")
        )
        assert await archive.archive(w) is not None
        written.append(w.id)
    return written


async def test_a_message_lands_in_both_archives_as_sent(vault: Storage) -> None:
    archive = vault.archive
    w = chat(ids_from(T0)(), ALICE, BOB, "Hello Bob")

    assert await archive.archive(w) == ("alice", "bob")

    for owner, with_jid, outgoing in (("alice", BOB, True), ("bob", ALICE, False)):
        page = await archive.query(owner, ArchiveFilter(), PageRequest())
        (msg,) = page.messages
        assert (msg.id, msg.with_jid, msg.outgoing, msg.created_at) == (w.id, with_jid, outgoing, T0)
        assert msg.stanza == w.stanza
        assert page.complete and page.count == 1 and page.first_index == 0
    assert (await archive.query("bob", ArchiveFilter(), PageRequest())).messages[0].with_resource == "phone"


async def test_writing_the_same_message_again_changes_nothing(vault: Storage) -> None:
    w = chat(ids_from(T0)(), ALICE, BOB, "once")
    assert await vault.archive.archive(w) == ("alice", "bob")

    assert await vault.archive.archive(w) == ("alice", "bob")  # a retry after a lost acknowledgement

    async with vault.database.transaction("test.count", readonly=True) as conn:
        assert await conn.scalar(select(func.count()).select_from(mam_messages)) == 2


async def test_messages_to_an_unknown_account_are_not_archived(vault: Storage) -> None:
    w = chat(ids_from(T0)(), ALICE, f"nobody@{DOMAIN}", "hello?")

    assert await vault.archive.archive(w) is None
    assert await vault.archive.count("alice") == 0


async def test_messages_from_a_component_are_archived_for_the_recipient_only(vault: Storage) -> None:
    w = chat(ids_from(T0)(), f"room@groups.{DOMAIN}", BOB, "private message")

    assert await vault.archive.archive(w) == ("bob",)
    assert (await vault.archive.query("bob", ArchiveFilter(), PageRequest())).messages[0].with_jid == (
        f"room@groups.{DOMAIN}"
    )


async def test_preferences_decide_whose_archive_keeps_a_message(vault: Storage) -> None:
    archive = vault.archive
    next_id = ids_from(T0)
    await archive.set_prefs("alice", Prefs("never", always=(CAROL,)))
    await archive.set_prefs("bob", Prefs("roster", never=()))

    assert await archive.archive(chat(next_id(), ALICE, BOB, "not kept by alice")) == ()  # bob: not in roster
    assert await archive.archive(chat(next_id(), ALICE, CAROL, "kept: carol is always")) == ("alice", "carol")
    from mbeon_chat.storage.api import RosterItem

    await vault.roster.put_item("bob", RosterItem(ALICE, subscription="both"))
    assert await archive.archive(chat(next_id(), ALICE, BOB, "bob keeps it now")) == ("bob",)
    assert await archive.get_prefs("alice") == Prefs("never", (CAROL,), ())
    assert await archive.get_prefs("carol", "roster") == Prefs("roster")


async def test_paging_forwards_and_backwards_returns_every_message_once_in_order(vault: Storage) -> None:
    written = await write_conversation(vault.archive, 23)

    forward: list[str] = []
    after = None
    while True:
        page = await vault.archive.query("alice", ArchiveFilter(), PageRequest(max=5, after=after))
        assert page.count == 23 and page.first_index == len(forward)
        forward += [m.id for m in page.messages]
        if page.complete:
            break
        after = page.messages[-1].id
    assert forward == written

    backward: list[str] = []
    before = ""
    while True:
        page = await vault.archive.query("bob", ArchiveFilter(), PageRequest(max=5, before=before))
        backward = [m.id for m in page.messages] + backward
        assert page.first_index == 23 - len(backward)
        if page.complete:
            break
        before = page.messages[0].id
    assert backward == written


async def test_index_skips_and_max_zero_only_counts(vault: Storage) -> None:
    written = await write_conversation(vault.archive, 6)

    page = await vault.archive.query("alice", ArchiveFilter(), PageRequest(max=2, index=3))
    assert [m.id for m in page.messages] == written[3:5] and page.first_index == 3 and not page.complete

    page = await vault.archive.query("alice", ArchiveFilter(), PageRequest(max=0))
    assert page.messages == [] and page.count == 6


async def test_filters_by_with_time_and_ids(vault: Storage) -> None:
    archive = vault.archive
    next_id = ids_from(T0, step_ms=60_000)  # one message a minute
    w = [
        chat(next_id(), ALICE, BOB, "0"),
        chat(next_id(), CAROL, ALICE, "1"),
        chat(next_id(), ALICE, BOB, "2"),
        chat(next_id(), ALICE, CAROL, "3"),
    ]
    for item in w:
        await archive.archive(item)

    def ids(page: object) -> list[str]:
        return [m.id for m in page.messages]  # type: ignore[attr-defined]

    q = archive.query
    assert ids(await q("alice", ArchiveFilter(with_jid=BOB), PageRequest())) == [w[0].id, w[2].id]
    assert ids(await q("alice", ArchiveFilter(with_jid=CAROL, with_resource="phone"), PageRequest())) == [
        w[1].id
    ]
    assert ids(await q("alice", ArchiveFilter(start_ms=T0 + 60_000, end_ms=T0 + 120_000), PageRequest())) == [
        w[1].id,
        w[2].id,
    ]
    assert ids(await q("alice", ArchiveFilter(after_id=w[0].id, before_id=w[3].id), PageRequest())) == [
        w[1].id,
        w[2].id,
    ]
    assert ids(await q("alice", ArchiveFilter(ids=(w[3].id, w[0].id)), PageRequest())) == [w[0].id, w[3].id]
    assert (await q("bob", ArchiveFilter(with_jid=CAROL), PageRequest())).count == 0


async def test_unknown_cursor_ids_are_reported(vault: Storage) -> None:
    written = await write_conversation(vault.archive, 2)
    with pytest.raises(UnknownId):
        await vault.archive.query(
            "alice", ArchiveFilter(), PageRequest(after="0190abcd-0000-7000-8000-000000000000")
        )
    with pytest.raises(UnknownId):  # another owner's message is not in this archive
        await vault.archive.query("carol", ArchiveFilter(), PageRequest(before=written[0]))


async def test_metadata_names_the_first_and_last_message(vault: Storage) -> None:
    assert await vault.archive.metadata("alice") == (None, None)
    written = await write_conversation(vault.archive, 3)
    first, last = await vault.archive.metadata("alice")
    assert first is not None and last is not None
    assert (first.id, last.id) == (written[0], written[-1])


async def test_retention_purges_old_messages_and_destroys_emptied_conversation_keys(vault: Storage) -> None:
    archive = vault.archive
    old = await write_conversation(archive, 4, start_ms=T0)
    await archive.archive(chat(ids_from(T0)(), ALICE, CAROL, "old, alice and carol"))
    recent = await write_conversation(archive, 2, start_ms=T0 + 86_400_000)

    assert await archive.purge_older_than(T0 + 3_600_000) == 2 * len(old) + 2

    assert [m.id for m in (await archive.query("alice", ArchiveFilter(), PageRequest())).messages] == recent
    assert (
        await archive.destroy_unused_keys(min_age_ms=0) == 1
    )  # alice-carol: nothing sealed with it any more
    async with vault.database.transaction("test.keys", readonly=True) as conn:
        pairs = {(r.jid_a, r.jid_b) for r in await conn.execute(select(conversation_keys))}
    assert pairs == {(ALICE, BOB)}


async def test_a_key_that_seals_an_offline_message_survives_retention(vault: Storage) -> None:
    payload = (
        f"<message xmlns='jabber:client' from='{ALICE}/x' to='{CAROL}'><body>hi</body></message>".encode()
    )
    assert await vault.offline.push("carol", payload, max_per_user=10)

    assert await vault.archive.destroy_unused_keys(min_age_ms=0) == 0
    assert [p for _, p in await vault.offline.fetch("carol")] == [payload]


async def test_deleting_an_account_shreds_its_history_in_every_archive(vault: Storage) -> None:
    archive = vault.archive
    await write_conversation(archive, 6)  # alice <-> bob
    keep = chat(ids_from(T0)(), BOB, CAROL, "bob and carol stay")
    await archive.archive(keep)
    await archive.set_prefs("alice", Prefs("always"))

    assert await vault.accounts.delete("alice")

    # Bob's copies of his conversation with alice are unreadable and gone; bob-carol is untouched.
    assert [m.id for m in (await archive.query("bob", ArchiveFilter(), PageRequest())).messages] == [keep.id]
    assert await archive.count("alice") == 0
    async with vault.database.transaction("test.rows", readonly=True) as conn:
        owners = sorted((await conn.scalars(select(mam_messages.c.owner))).all())
        keys = {(r.jid_a, r.jid_b) for r in await conn.execute(select(conversation_keys))}
    assert owners == ["bob", "carol"]
    assert keys == {(BOB, CAROL)}
    assert await archive.get_prefs("alice") == Prefs("always")  # the default again


async def test_shredded_rows_are_unreadable_even_before_they_are_purged(vault: Storage) -> None:
    await write_conversation(vault.archive, 2)
    async with vault.database.transaction("test.shred") as conn:
        await vault.crypto.destroy_for_jid(conn, ALICE)
    assert (await vault.archive.query("bob", ArchiveFilter(), PageRequest())).count == 0
    assert await vault.archive.purge_orphans() == 4


async def test_offline_messages_are_sealed_and_dropped_once_the_sender_is_erased(vault: Storage) -> None:
    payload = f"<message xmlns='jabber:client' from='{ALICE}/x' to='{BOB}'><body>secret text</body></message>"
    assert await vault.offline.push("bob", payload.encode(), max_per_user=10)
    async with vault.database.transaction("test.raw", readonly=True) as conn:
        from mbeon_chat.storage.schema import offline_messages

        raw = bytes(await conn.scalar(select(offline_messages.c.payload)))
    assert b"secret text" not in raw

    assert [p for _, p in await vault.offline.fetch("bob")] == [payload.encode()]
    assert await vault.accounts.delete("alice")
    assert await vault.offline.fetch("bob") == []
    assert await vault.offline.count("bob") == 0


async def test_export_returns_the_whole_archive_decrypted(vault: Storage) -> None:
    written = await write_conversation(vault.archive, 7)
    exported = await vault.archive.export("bob")
    assert [m.id for m in exported] == written
    assert b"reply 1" in exported[1].stanza


async def test_concurrent_writes_are_committed_together_and_each_gets_its_own_answer(vault: Storage) -> None:
    next_id = ids_from(T0, step_ms=1)
    writes = [chat(next_id(), ALICE, BOB if i % 3 else CAROL, f"burst {i}") for i in range(90)]
    writes.append(chat(next_id(), ALICE, f"ghost@{DOMAIN}", "to nobody"))

    results = await asyncio.gather(*(vault.archive.archive(w) for w in writes))

    assert results[-1] is None
    assert results[:-1] == [("alice", "bob") if i % 3 else ("alice", "carol") for i in range(90)]
    assert await vault.archive.count("alice") == 90
    assert await vault.archive.count("bob") == 60
