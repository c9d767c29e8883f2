"""OfflineStore on every backend: limits, arrival order, opaque payloads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mbeon_chat.storage import ids
from mbeon_chat.storage.api import ScramCredentials, Storage

Creds = Callable[[str], tuple[ScramCredentials, ScramCredentials]]


async def test_messages_come_back_in_arrival_order_with_their_payloads(storage: Storage) -> None:
    payloads = [f"<message id='{n}'/>".encode() for n in range(5)]
    for payload in payloads:
        assert await storage.offline.push("alice", payload, max_per_user=100)

    fetched = await storage.offline.fetch("alice")

    assert [payload for _, payload in fetched] == payloads
    assert [message_id for message_id, _ in fetched] == sorted(message_id for message_id, _ in fetched)
    assert await storage.offline.count("alice") == 5
    assert await storage.offline.fetch("bob") == []


async def test_order_holds_within_one_millisecond(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = ids.default_generator.clock_ns()
    monkeypatch.setattr(ids.default_generator, "clock_ns", lambda: frozen)
    payloads = [n.to_bytes(2, "big") for n in range(30)]

    for payload in payloads:
        await storage.offline.push("alice", payload, max_per_user=100)

    fetched = await storage.offline.fetch("alice")
    assert [payload for _, payload in fetched] == payloads
    assert {ids.id_timestamp_ms(message_id) for message_id, _ in fetched} == {frozen // 1_000_000}


async def test_push_refuses_once_the_user_has_max_messages(storage: Storage) -> None:
    assert await storage.offline.push("alice", b"1", max_per_user=2)
    assert await storage.offline.push("alice", b"2", max_per_user=2)

    assert await storage.offline.push("alice", b"3", max_per_user=2) is False
    assert await storage.offline.push("bob", b"for bob", max_per_user=2)  # limits are per user
    assert [payload for _, payload in await storage.offline.fetch("alice")] == [b"1", b"2"]


async def test_concurrent_pushes_never_exceed_the_limit(storage: Storage, credentials: Creds) -> None:
    await storage.accounts.create("alice", *credentials("x"))

    results = await asyncio.gather(*(storage.offline.push("alice", b"x", max_per_user=5) for _ in range(10)))

    assert sorted(results) == [False] * 5 + [True] * 5
    assert await storage.offline.count("alice") == 5


async def test_payloads_are_opaque_bytes_of_any_size(storage: Storage) -> None:
    every_byte = bytes(range(256))
    large = every_byte * 1024  # 256 KiB: more than a MySQL BLOB holds
    await storage.offline.push("alice", every_byte, max_per_user=10)
    await storage.offline.push("alice", large, max_per_user=10)
    await storage.offline.push("alice", b"", max_per_user=10)

    assert [payload for _, payload in await storage.offline.fetch("alice")] == [every_byte, large, b""]


async def test_delete_removes_only_the_given_ids_of_that_user(storage: Storage) -> None:
    for n in range(4):
        await storage.offline.push("alice", bytes([n]), max_per_user=10)
    await storage.offline.push("bob", b"bob", max_per_user=10)
    alice_ids = [message_id for message_id, _ in await storage.offline.fetch("alice")]
    bob_ids = [message_id for message_id, _ in await storage.offline.fetch("bob")]

    await storage.offline.delete("alice", [alice_ids[0], alice_ids[2], *bob_ids, "not-an-id"])
    await storage.offline.delete("alice", [])

    assert await storage.offline.fetch("alice") == [(alice_ids[1], b"\x01"), (alice_ids[3], b"\x03")]
    assert await storage.offline.count("bob") == 1


async def test_deleting_many_ids_at_once_works(storage: Storage) -> None:
    for _ in range(30):
        await storage.offline.push("alice", b"m", max_per_user=1000)
    message_ids = [message_id for message_id, _ in await storage.offline.fetch("alice")]

    await storage.offline.delete("alice", message_ids + [ids.new_id() for _ in range(1200)])

    assert await storage.offline.count("alice") == 0
