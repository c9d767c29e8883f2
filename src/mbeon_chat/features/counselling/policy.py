"""Counselling decisions as pure functions: who gets which request, queue order, positions, wait estimates.

No I/O and no asyncio: the service (``service.py``) builds these frozen views of its state, asks the
functions below what to do, and carries the answer out. Times are plain floats (seconds, any clock the
caller uses consistently).

The rules:
- a counsellor can take a request when they are available (presence available, show not away/xa/dnd),
  below capacity (active sessions plus pending offers), speak the request's language, cover its topic
  (an empty topic list means every topic) and have not declined or let an offer of this request expire;
- the queue is served in order: requeued sessions (a counsellor went offline) first, then oldest first;
  a request nobody can take right now does not block the requests behind it;
- among the counsellors who can take a request, the least loaded wins, then the one idle the longest,
  then the JID (so the choice is deterministic);
- an offer reserves a slot of the counsellor's capacity until it is accepted, declined or expires;
  an expired offer counts as a decline, so the request moves on to the next counsellor;
- in manual mode nothing is offered: counsellors pick requests from the queue themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "UNAVAILABLE_SHOWS",
    "Counsellor",
    "Mode",
    "Offer",
    "Request",
    "can_serve",
    "can_take",
    "estimate_wait",
    "expire_offers",
    "is_available",
    "loads",
    "pick_counsellor",
    "plan_offers",
    "positions",
    "queue_order",
]

UNAVAILABLE_SHOWS = frozenset({"away", "xa", "dnd"})


class Mode(StrEnum):
    AUTO = "auto"  # the service offers requests to counsellors
    MANUAL = "manual"  # counsellors pick from the queue


@dataclass(frozen=True, slots=True)
class Counsellor:
    jid: str  # bare JID
    languages: frozenset[str]
    topics: frozenset[str]  # empty: every topic
    capacity: int
    load: int = 0  # active sessions + pending offers
    last_assigned: float = 0.0  # when they last got an offer or a session; 0: never
    available: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    topic: str
    language: str
    created: float
    declined_by: frozenset[str] = frozenset()
    requeued: float | None = None  # set when a session went back to the head of the queue

    @property
    def order_key(self) -> tuple[int, float, float, str]:
        if self.requeued is not None:
            return (0, self.requeued, self.created, self.id)
        return (1, self.created, self.created, self.id)


@dataclass(frozen=True, slots=True)
class Offer:
    request_id: str
    counsellor: str
    expires: float
    # For a transfer: the counsellor handing over (None for an offer from the queue).
    transfer_from: str | None = field(default=None)


def is_available(available: bool, show: str | None) -> bool:
    """Presence that lets a counsellor receive offers: available, and not away / xa / dnd."""
    return available and (show or None) not in UNAVAILABLE_SHOWS


def _covers(counsellor: Counsellor, request: Request) -> bool:
    return request.language in counsellor.languages and (
        not counsellor.topics or request.topic in counsellor.topics
    )


def can_serve(counsellor: Counsellor, request: Request) -> bool:
    """Whether the request may be offered to the counsellor right now."""
    return (
        counsellor.available
        and counsellor.load < counsellor.capacity
        and counsellor.jid not in request.declined_by
        and _covers(counsellor, request)
    )


def can_take(counsellor: Counsellor, request: Request) -> str | None:
    """Whether a counsellor may pick a request themselves (manual mode, or an accept from the queue).

    Returns ``None`` when allowed, else the reason. Availability is not needed (they are acting), and an
    earlier decline does not stop them from changing their mind.
    """
    if counsellor.load >= counsellor.capacity:
        return f"you are at your capacity of {counsellor.capacity} sessions"
    if request.language not in counsellor.languages:
        return f"the request is in {request.language!r}, which is not one of your languages"
    if counsellor.topics and request.topic not in counsellor.topics:
        return f"the request's topic {request.topic!r} is not one of your topics"
    return None


def queue_order(requests: Iterable[Request]) -> list[Request]:
    """Requeued requests first (in the order they were requeued), then oldest first."""
    return sorted(requests, key=lambda r: r.order_key)


def _rank(counsellor: Counsellor) -> tuple[int, float, str]:
    return (counsellor.load, counsellor.last_assigned, counsellor.jid)


def pick_counsellor(counsellors: Iterable[Counsellor], request: Request) -> Counsellor | None:
    """The fairest counsellor who can serve the request: least loaded, then idle longest, then JID."""
    candidates = [c for c in counsellors if can_serve(c, request)]
    return min(candidates, key=_rank) if candidates else None


def plan_offers(
    counsellors: Sequence[Counsellor],
    waiting: Iterable[Request],
    now: float,
    timeout: float,
    mode: Mode = Mode.AUTO,
    pending: Iterable[Offer] = (),
) -> list[Offer]:
    """The offers to make now, in queue order.

    ``waiting`` are the requests in the queue (including those with a pending offer, which are skipped);
    ``counsellors[].load`` already counts the pending offers. Each new offer reserves a slot, so the plan
    never puts a counsellor over capacity and never offers one request twice.
    """
    if mode is Mode.MANUAL:
        return []
    offered = {o.request_id for o in pending}
    current: dict[str, Counsellor] = {c.jid: c for c in counsellors}
    plan: list[Offer] = []
    for request in queue_order(waiting):
        if request.id in offered:
            continue
        chosen = pick_counsellor(current.values(), request)
        if chosen is None:
            continue
        plan.append(Offer(request.id, chosen.jid, now + timeout))
        offered.add(request.id)
        current[chosen.jid] = replace(chosen, load=chosen.load + 1, last_assigned=now)
    return plan


def expire_offers(offers: Iterable[Offer], now: float) -> tuple[list[Offer], list[Offer]]:
    """Split offers into (expired, still pending). The service records each expired one as a decline."""
    expired: list[Offer] = []
    live: list[Offer] = []
    for offer in offers:
        (expired if offer.expires <= now else live).append(offer)
    return expired, live


def positions(waiting: Iterable[Request]) -> dict[str, int]:
    """1-based queue position of every waiting request."""
    return {r.id: i for i, r in enumerate(queue_order(waiting), start=1)}


def estimate_wait(
    request: Request,
    position: int,
    counsellors: Iterable[Counsellor],
    average_session: float,
) -> float | None:
    """Rough seconds until the request is served; ``None`` when no counsellor covers it at all.

    Counsellors who could serve it (ignoring load and availability) work through the queue in parallel,
    each finishing a session every ``average_session`` seconds per slot of capacity; a free slot now
    means no wait.
    """
    matching = [c for c in counsellors if _covers(c, request)]
    if not matching:
        return None
    free = sum(max(0, c.capacity - c.load) for c in matching if c.available)
    if position <= free:
        return 0.0
    slots = sum(c.capacity for c in matching) or 1
    return math.ceil((position - free) / slots) * average_session


def loads(jids: Iterable[str], sessions: Mapping[str, int], offers: Iterable[Offer]) -> dict[str, int]:
    """Load per counsellor: active sessions plus pending offers (a helper for building the views)."""
    out = {jid: sessions.get(jid, 0) for jid in jids}
    for offer in offers:
        if offer.counsellor in out:
            out[offer.counsellor] += 1
    return out
