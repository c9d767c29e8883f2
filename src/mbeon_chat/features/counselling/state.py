"""The service's in-memory state: requests, sessions, offers, counsellors; and its reload snapshot.

Requests and sessions mirror the database rows (the database is the truth after a restart); offers,
grace periods and "last assigned" times live only here and are handed to the next plugin version on a
reload as plain data (``snapshot`` / ``restore``, with a ``version``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .policy import Counsellor, Offer, Request
from .store import CounsellorRecord, RequestRecord, SessionRecord

SNAPSHOT_VERSION = 1
T = TypeVar("T")


@dataclass
class CounsellorConf:
    jid: str
    languages: frozenset[str]
    topics: frozenset[str]
    capacity: int
    source: str = "config"  # config | database

    @classmethod
    def from_record(cls, record: CounsellorRecord, source: str) -> CounsellorConf:
        return cls(record.jid, frozenset(record.languages), frozenset(record.topics), record.capacity, source)


@dataclass
class RequestState:
    id: str
    client: str  # bare JID
    topic: str
    language: str
    first_message: str | None
    created_at: int  # ms
    state: str = "waiting"  # waiting | active (closed and canceled ones are dropped from memory)
    requeued_at: int | None = None
    declined_by: set[str] = field(default_factory=set)
    session_id: str | None = None
    last_position: int | None = None  # the position the client was last told

    @property
    def short(self) -> str:
        return short_id(self.id)

    def view(self) -> Request:
        return Request(
            self.id,
            self.topic,
            self.language,
            self.created_at / 1000,
            frozenset(self.declined_by),
            None if self.requeued_at is None else self.requeued_at / 1000,
        )

    @classmethod
    def from_record(cls, r: RequestRecord) -> RequestState:
        return cls(
            r.id,
            r.client,
            r.topic,
            r.language,
            r.first_message,
            r.created_at,
            r.state,
            r.requeued_at,
            set(r.declined_by),
            r.session_id,
        )

    def record(self) -> RequestRecord:
        return RequestRecord(
            self.id,
            self.client,
            self.topic,
            self.language,
            self.first_message,
            self.state,
            self.created_at,
            self.requeued_at,
            tuple(sorted(self.declined_by)),
            self.session_id,
        )


@dataclass
class SessionState:
    id: str
    request_id: str
    client: str
    counsellor: str
    started_at: int  # ms

    @property
    def short(self) -> str:
        return short_id(self.id)

    @classmethod
    def from_record(cls, s: SessionRecord) -> SessionState:
        return cls(s.id, s.request_id, s.client, s.counsellor, s.started_at)


@dataclass
class OfferState:
    request_id: str
    counsellor: str
    expires_at: float  # wall clock, seconds
    transfer_from: str | None = None  # a transfer of a running session
    session_id: str | None = None

    def view(self) -> Offer:
        return Offer(self.request_id, self.counsellor, self.expires_at, self.transfer_from)


def short_id(value: str) -> str:
    """The last 8 characters of a UUIDv7 (its random part): what people type in "accept 3f9a2b1c"."""
    return value[-8:]


@dataclass
class State:
    requests: dict[str, RequestState] = field(default_factory=dict)
    sessions: dict[str, SessionState] = field(default_factory=dict)
    offers: dict[str, OfferState] = field(default_factory=dict)  # by request id (one at a time)
    counsellors: dict[str, CounsellorConf] = field(default_factory=dict)
    last_assigned: dict[str, float] = field(default_factory=dict)
    grace: dict[str, float] = field(default_factory=dict)  # session id -> deadline (wall clock, s)

    # --- lookups -------------------------------------------------------------------------------------
    def open_request_of(self, client: str) -> RequestState | None:
        for r in self.requests.values():
            if r.client == client:
                return r
        return None

    def waiting(self) -> list[RequestState]:
        return [r for r in self.requests.values() if r.state == "waiting"]

    def sessions_of(self, counsellor: str) -> list[SessionState]:
        return [s for s in self.sessions.values() if s.counsellor == counsellor]

    def find_request(self, ref: str) -> RequestState | None:
        return _find(self.requests, ref)

    def find_session(self, ref: str) -> SessionState | None:
        return _find(self.sessions, ref)

    def counsellor_view(self, jid: str, available: bool) -> Counsellor:
        conf = self.counsellors[jid]
        load = len(self.sessions_of(jid)) + sum(1 for o in self.offers.values() if o.counsellor == jid)
        return Counsellor(
            jid,
            conf.languages,
            conf.topics,
            conf.capacity,
            load,
            self.last_assigned.get(jid, 0.0),
            available,
        )

    # --- reload handover -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "requests": [{**asdict(r), "declined_by": sorted(r.declined_by)} for r in self.requests.values()],
            "sessions": [asdict(s) for s in self.sessions.values()],
            "offers": [asdict(o) for o in self.offers.values()],
            "database_counsellors": [
                {**asdict(c), "languages": sorted(c.languages), "topics": sorted(c.topics)}
                for c in self.counsellors.values()
                if c.source == "database"
            ],
            "last_assigned": dict(self.last_assigned),
            "grace": dict(self.grace),
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> State | None:
        """The state from a snapshot of a compatible version, else ``None`` (reload from the database)."""
        if data.get("version") != SNAPSHOT_VERSION:
            return None
        state = cls()
        for r in data["requests"]:
            state.requests[r["id"]] = RequestState(**{**r, "declined_by": set(r["declined_by"])})
        for s in data["sessions"]:
            state.sessions[s["id"]] = SessionState(**s)
        for o in data["offers"]:
            state.offers[o["request_id"]] = OfferState(**o)
        for c in data["database_counsellors"]:
            conf = CounsellorConf(
                **{**c, "languages": frozenset(c["languages"]), "topics": frozenset(c["topics"])}
            )
            state.counsellors[conf.jid] = conf
        state.last_assigned = dict(data["last_assigned"])
        state.grace = dict(data["grace"])
        return state


def _find(table: dict[str, T], ref: str) -> T | None:
    ref = ref.strip().lower()
    if not ref:
        return None
    if ref in table:
        return table[ref]
    if len(ref) < 4:
        return None
    matches = [v for k, v in table.items() if k.endswith(ref)]
    return matches[0] if len(matches) == 1 else None
