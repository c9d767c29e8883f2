"""Persistence of the counselling service: counsellors, requests, sessions, the assignment log.

Every operation is one named transaction (``counselling.*``) on any backend. The state changes that
touch several tables (accept, close, requeue, transfer) are each one transaction, so a crash leaves
either the old or the new state. Ids are chosen by the caller before the call, so a retried
transaction never creates a second row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mbeon_chat.storage.database import Database
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.schema_counselling import (
    counselling_assignments as assignments_t,
)
from mbeon_chat.storage.schema_counselling import (
    counselling_counsellors as counsellors_t,
)
from mbeon_chat.storage.schema_counselling import (
    counselling_requests as requests_t,
)
from mbeon_chat.storage.schema_counselling import (
    counselling_sessions as sessions_t,
)
from mbeon_chat.storage.stores._sql import upsert

__all__ = ["CounsellingStore", "CounsellorRecord", "LogEntry", "RequestRecord", "SessionRecord"]

OPEN_REQUEST_STATES = ("waiting", "active")


@dataclass(frozen=True, slots=True)
class CounsellorRecord:
    jid: str
    languages: tuple[str, ...]
    topics: tuple[str, ...]
    capacity: int


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: str
    client: str
    topic: str
    language: str
    first_message: str | None
    state: str  # waiting | active | closed | canceled
    created_at: int  # ms
    requeued_at: int | None = None
    declined_by: tuple[str, ...] = ()
    session_id: str | None = None
    closed_at: int | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    request_id: str
    client: str
    counsellor: str
    state: str  # active | closed
    started_at: int
    ended_at: int | None = None
    closed_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: str
    request_id: str
    session_id: str | None
    counsellor: str
    event: str
    at: int


def _request(row: Any) -> RequestRecord:
    return RequestRecord(
        id=row.id,
        client=row.client,
        topic=row.topic,
        language=row.language,
        first_message=row.first_message,
        state=row.state,
        created_at=int(row.created_at),
        requeued_at=None if row.requeued_at is None else int(row.requeued_at),
        declined_by=tuple(json.loads(row.declined_by)),
        session_id=row.session_id,
        closed_at=None if row.closed_at is None else int(row.closed_at),
    )


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        request_id=row.request_id,
        client=row.client,
        counsellor=row.counsellor,
        state=row.state,
        started_at=int(row.started_at),
        ended_at=None if row.ended_at is None else int(row.ended_at),
        closed_by=row.closed_by,
        reason=row.reason,
    )


class CounsellingStore:
    """``database`` may be a callable returning it (the plugin is set up before storage exists when only
    the configuration is checked)."""

    def __init__(self, database: Database | Callable[[], Database]) -> None:
        self._database = database

    @property
    def _db(self) -> Database:
        return self._database if isinstance(self._database, Database) else self._database()

    # --- counsellors ---------------------------------------------------------------------------------
    async def put_counsellor(self, record: CounsellorRecord, now: int) -> None:
        values = {
            "jid": record.jid,
            "languages": json.dumps(list(record.languages)),
            "topics": json.dumps(list(record.topics)),
            "capacity": record.capacity,
            "created_at": now,
        }
        update_ = {k: v for k, v in values.items() if k not in ("jid", "created_at")}

        async def run(conn: AsyncConnection) -> None:
            await upsert(conn, counsellors_t, values, ["jid"], update_)

        await self._db.run("counselling.put_counsellor", run)

    async def delete_counsellor(self, jid: str) -> bool:
        async def run(conn: AsyncConnection) -> bool:
            result = await conn.execute(delete(counsellors_t).where(counsellors_t.c.jid == jid))
            return bool(result.rowcount)

        return await self._db.run("counselling.delete_counsellor", run)

    async def counsellors(self) -> list[CounsellorRecord]:
        async def run(conn: AsyncConnection) -> list[CounsellorRecord]:
            rows = await conn.execute(select(counsellors_t).order_by(counsellors_t.c.jid))
            return [
                CounsellorRecord(
                    r.jid, tuple(json.loads(r.languages)), tuple(json.loads(r.topics)), r.capacity
                )
                for r in rows
            ]

        return await self._db.run("counselling.counsellors", run, readonly=True)

    # --- requests --------------------------------------------------------------------------------------
    async def add_request(self, record: RequestRecord) -> None:
        values = {
            "id": record.id,
            "client": record.client,
            "topic": record.topic,
            "language": record.language,
            "first_message": record.first_message,
            "state": record.state,
            "created_at": record.created_at,
            "requeued_at": record.requeued_at,
            "declined_by": json.dumps(list(record.declined_by)),
            "session_id": record.session_id,
            "closed_at": record.closed_at,
        }

        async def run(conn: AsyncConnection) -> None:
            if await conn.scalar(select(requests_t.c.id).where(requests_t.c.id == record.id)) is None:
                await conn.execute(insert(requests_t).values(values))

        await self._db.run("counselling.add_request", run)

    async def set_declined(self, request_id: str, declined_by: Sequence[str], entry: LogEntry) -> None:
        """Record a decline or an expired offer: the request's declined list and the log line."""

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                update(requests_t)
                .where(requests_t.c.id == request_id)
                .values(declined_by=json.dumps(sorted(declined_by)))
            )
            await _log(conn, entry)

        await self._db.run("counselling.decline", run)

    async def cancel_request(self, request_id: str, now: int) -> None:
        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                update(requests_t)
                .where(requests_t.c.id == request_id)
                .values(state="canceled", closed_at=now)
            )

        await self._db.run("counselling.cancel", run)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        async def run(conn: AsyncConnection) -> RequestRecord | None:
            row = (await conn.execute(select(requests_t).where(requests_t.c.id == request_id))).first()
            return None if row is None else _request(row)

        return await self._db.run("counselling.get_request", run, readonly=True)

    async def open_requests(self) -> list[RequestRecord]:
        """Waiting and active requests, oldest first (the service sorts the queue with the policy)."""

        async def run(conn: AsyncConnection) -> list[RequestRecord]:
            query = (
                select(requests_t)
                .where(requests_t.c.state.in_(OPEN_REQUEST_STATES))
                .order_by(requests_t.c.created_at, requests_t.c.id)
            )
            return [_request(r) for r in await conn.execute(query)]

        return await self._db.run("counselling.open_requests", run, readonly=True)

    # --- sessions ------------------------------------------------------------------------------------
    async def start_session(self, session: SessionRecord, entry: LogEntry) -> None:
        """Accept: the request becomes active with this session, the session row, the log line."""

        async def run(conn: AsyncConnection) -> None:
            if await conn.scalar(select(sessions_t.c.id).where(sessions_t.c.id == session.id)) is not None:
                return  # an earlier attempt committed
            await conn.execute(
                update(requests_t)
                .where(requests_t.c.id == session.request_id)
                .values(state="active", session_id=session.id)
            )
            await conn.execute(
                insert(sessions_t).values(
                    id=session.id,
                    request_id=session.request_id,
                    client=session.client,
                    counsellor=session.counsellor,
                    state="active",
                    started_at=session.started_at,
                )
            )
            await _log(conn, entry)

        await self._db.run("counselling.accept", run)

    async def transfer_session(self, session_id: str, counsellor: str, entry: LogEntry) -> None:
        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                update(sessions_t).where(sessions_t.c.id == session_id).values(counsellor=counsellor)
            )
            await _log(conn, entry)

        await self._db.run("counselling.transfer", run)

    async def close_session(
        self, session_id: str, request_id: str, now: int, closed_by: str | None, reason: str, entry: LogEntry
    ) -> None:
        """Close the session and its request."""

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                update(sessions_t)
                .where(sessions_t.c.id == session_id)
                .values(state="closed", ended_at=now, closed_by=closed_by, reason=reason)
            )
            await conn.execute(
                update(requests_t).where(requests_t.c.id == request_id).values(state="closed", closed_at=now)
            )
            await _log(conn, entry)

        await self._db.run("counselling.close", run)

    async def requeue_session(self, session_id: str, request_id: str, now: int, entry: LogEntry) -> None:
        """The counsellor went away: close the session, put the request back at the head of the queue."""

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                update(sessions_t)
                .where(sessions_t.c.id == session_id)
                .values(state="closed", ended_at=now, reason="counsellor-offline")
            )
            await conn.execute(
                update(requests_t)
                .where(requests_t.c.id == request_id)
                .values(state="waiting", requeued_at=now, session_id=None, declined_by="[]")
            )
            await _log(conn, entry)

        await self._db.run("counselling.requeue", run)

    async def active_sessions(self) -> list[SessionRecord]:
        async def run(conn: AsyncConnection) -> list[SessionRecord]:
            query = select(sessions_t).where(sessions_t.c.state == "active").order_by(sessions_t.c.id)
            return [_session(r) for r in await conn.execute(query)]

        return await self._db.run("counselling.active_sessions", run, readonly=True)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async def run(conn: AsyncConnection) -> SessionRecord | None:
            row = (await conn.execute(select(sessions_t).where(sessions_t.c.id == session_id))).first()
            return None if row is None else _session(row)

        return await self._db.run("counselling.get_session", run, readonly=True)

    # --- the log ---------------------------------------------------------------------------------------
    async def log(self, entry: LogEntry) -> None:
        async def run(conn: AsyncConnection) -> None:
            await _log(conn, entry)

        await self._db.run("counselling.log", run)

    async def history(self, request_id: str) -> list[LogEntry]:
        async def run(conn: AsyncConnection) -> list[LogEntry]:
            query = (
                select(assignments_t)
                .where(assignments_t.c.request_id == request_id)
                .order_by(assignments_t.c.id)
            )
            return [
                LogEntry(r.id, r.request_id, r.session_id, r.counsellor, r.event, int(r.at))
                for r in await conn.execute(query)
            ]

        return await self._db.run("counselling.history", run, readonly=True)


def entry(request_id: str, counsellor: str, event: str, at: int, session_id: str | None = None) -> LogEntry:
    """A new log line (its id chosen now, so a retried transaction does not write it twice)."""
    return LogEntry(new_id(), request_id, session_id, counsellor, event, at)


async def _log(conn: AsyncConnection, e: LogEntry) -> None:
    if await conn.scalar(select(assignments_t.c.id).where(assignments_t.c.id == e.id)) is not None:
        return
    await conn.execute(
        insert(assignments_t).values(
            id=e.id,
            request_id=e.request_id,
            session_id=e.session_id,
            counsellor=e.counsellor,
            event=e.event,
            at=e.at,
        )
    )
