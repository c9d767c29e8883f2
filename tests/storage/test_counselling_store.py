"""The counselling store over every backend: counsellors, the queue in order, sessions, the log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from mbeon_chat.features.counselling.store import (
    CounsellingStore,
    CounsellorRecord,
    RequestRecord,
    SessionRecord,
    entry,
)
from mbeon_chat.storage import schema_counselling  # noqa: F401  (its tables join the metadata)
from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema import metadata


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[CounsellingStore]:
    database = Database(backend_url)
    yield CounsellingStore(database)
    await database.close()


def waiting(client: str, created: int, topic: str = "school", language: str = "en") -> RequestRecord:
    return RequestRecord(new_id(), client, topic, language, "hello, I need to talk", "waiting", created)


def _counselling_only(conn: Connection) -> list[object]:
    ours = MetaData()
    for table in metadata.sorted_tables:
        if table.name.startswith("counselling_"):
            table.to_metadata(ours)
    diffs = compare_metadata(MigrationContext.configure(conn), ours)
    return [d for d in diffs if "counselling_" in repr(d)]


async def test_counselling_tables_match_the_migration(backend_url: str) -> None:
    database = Database(backend_url)
    async with database.engine.connect() as conn:
        differences = await conn.run_sync(_counselling_only)
    await database.close()
    assert differences == []


async def test_counsellors_are_stored_updated_and_deleted(store: CounsellingStore) -> None:
    await store.put_counsellor(CounsellorRecord("anna@example.org", ("en", "de"), (), 2), now=1)
    await store.put_counsellor(CounsellorRecord("ben@example.org", ("fr",), ("school",), 1), now=2)
    await store.put_counsellor(CounsellorRecord("anna@example.org", ("de",), ("family",), 3), now=3)
    assert await store.counsellors() == [
        CounsellorRecord("anna@example.org", ("de",), ("family",), 3),
        CounsellorRecord("ben@example.org", ("fr",), ("school",), 1),
    ]
    assert await store.delete_counsellor("ben@example.org")
    assert not await store.delete_counsellor("ben@example.org")
    assert [c.jid for c in await store.counsellors()] == ["anna@example.org"]


async def test_open_requests_come_back_in_order_with_their_declines(store: CounsellingStore) -> None:
    first = waiting("zoe@example.org", 1000, language="de")
    second = waiting("ali@example.org", 1000)
    third = waiting("émile@example.org", 2000, topic="family")
    for record in (third, first, second):
        await store.add_request(record)
    await store.add_request(first)  # a retry after a lost acknowledgement stores nothing twice
    await store.set_declined(first.id, ["b@x", "a@x"], entry(first.id, "b@x", "declined", 1500))

    loaded = await store.open_requests()
    assert [r.id for r in loaded] == [*sorted([first.id, second.id]), third.id]
    by_id = {r.id: r for r in loaded}
    assert by_id[first.id].declined_by == ("a@x", "b@x")
    assert by_id[third.id].client == "émile@example.org"
    assert by_id[third.id].first_message == "hello, I need to talk"

    await store.cancel_request(second.id, now=3000)
    assert second.id not in {r.id for r in await store.open_requests()}
    canceled = await store.get_request(second.id)
    assert canceled is not None and canceled.state == "canceled" and canceled.closed_at == 3000


async def test_session_lifecycle_accept_transfer_requeue_close(store: CounsellingStore) -> None:
    request = waiting("zoe@example.org", 1000)
    await store.add_request(request)
    session = SessionRecord(new_id(), request.id, request.client, "anna@x", "active", 2000)
    accepted = entry(request.id, "anna@x", "accepted", 2000, session.id)
    await store.start_session(session, accepted)
    await store.start_session(session, accepted)  # idempotent
    (active,) = await store.active_sessions()
    assert active == session
    stored = await store.get_request(request.id)
    assert stored is not None and stored.state == "active" and stored.session_id == session.id

    await store.transfer_session(
        session.id, "ben@x", entry(request.id, "ben@x", "transferred", 2500, session.id)
    )
    (active,) = await store.active_sessions()
    assert active.counsellor == "ben@x"

    await store.requeue_session(session.id, request.id, 3000, entry(request.id, "ben@x", "requeued", 3000))
    assert await store.active_sessions() == []
    (back,) = await store.open_requests()
    assert back.state == "waiting" and back.requeued_at == 3000 and back.session_id is None
    old = await store.get_session(session.id)
    assert old is not None and old.state == "closed" and old.reason == "counsellor-offline"

    second = SessionRecord(new_id(), request.id, request.client, "carl@x", "active", 4000)
    await store.start_session(second, entry(request.id, "carl@x", "accepted", 4000, second.id))
    await store.close_session(
        second.id, request.id, 5000, "zoe@example.org", "closed", entry(request.id, "carl@x", "closed", 5000)
    )
    assert await store.open_requests() == []
    closed = await store.get_session(second.id)
    assert closed is not None and closed.closed_by == "zoe@example.org" and closed.ended_at == 5000
    events = [(e.counsellor, e.event) for e in await store.history(request.id)]
    assert events == [
        ("anna@x", "accepted"),
        ("ben@x", "transferred"),
        ("ben@x", "requeued"),
        ("carl@x", "accepted"),
        ("carl@x", "closed"),
    ]
