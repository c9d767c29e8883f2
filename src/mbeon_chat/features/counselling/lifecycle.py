"""The counselling lifecycle: request, offer, accept/decline, transfer, close, requeue; each one step.

Every operation runs under one lock, checks its input first (raising :class:`StanzaError` with a
clear text and changing nothing), writes the database, updates memory, tells the people involved, and
lets the policy make new offers. Timers (offer timeouts, grace periods) are ``loop.call_later`` handles
that start the matching operation; they are cancelled when the plugin unloads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mbeon_chat.storage.ids import new_id
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID

from . import policy, texts
from .state import CounsellorConf, OfferState, RequestState, SessionState, State, short_id
from .store import CounsellingStore, CounsellorRecord, SessionRecord, entry

C = StanzaCondition


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Lifecycle:
    def __init__(
        self,
        service: JID,
        options: Any,
        store: CounsellingStore,
        send: Callable[[Element], Any],
        availability: Callable[[str], tuple[bool, bool]],
        metrics: Any = None,
        log: Any = None,
        spawn: Callable[[Any], Any] = asyncio.ensure_future,
    ) -> None:
        self.service = service
        self.options = options
        self.store = store
        self._send = send
        #: bare JID -> (online: some resource available, offerable: one not away/xa/dnd)
        self.availability = availability
        self.metrics = metrics
        self.log = log
        self._spawn = spawn
        self.state = State()
        self.lock = asyncio.Lock()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    # --- helpers ------------------------------------------------------------------------------------------
    async def send(self, el: Element) -> None:
        await self._send(el)

    def is_counsellor(self, jid: str) -> bool:
        return jid in self.state.counsellors

    def views(self) -> list[policy.Counsellor]:
        return [
            self.state.counsellor_view(j, self.availability(j)[1]) for j in sorted(self.state.counsellors)
        ]

    def view_of(self, jid: str) -> policy.Counsellor:
        return self.state.counsellor_view(jid, self.availability(jid)[1])

    def positions(self) -> dict[str, int]:
        return policy.positions(r.view() for r in self.state.waiting())

    def wait_estimate(self, r: RequestState, position: int) -> float | None:
        return policy.estimate_wait(r.view(), position, self.views(), self.options.average_session)

    def _timer(self, key: str, delay: float, fn: Callable[[], Any]) -> None:
        self._cancel(key)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, delay), lambda: self._spawn(self._guard(fn)))

    async def _guard(self, fn: Callable[[], Any]) -> None:
        if self._closed:
            return
        try:
            await fn()
        except Exception:
            if self.log is not None:
                self.log.exception("counselling.timer_failed")

    def _cancel(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def shutdown(self) -> None:
        """Stop every timer (plugin unload / reload: the next version restarts them from the snapshot)."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def restart_timers(self) -> None:
        """After a restore: timers for every pending offer and grace period (expired ones fire at once)."""
        now = time.time()
        for o in self.state.offers.values():
            self._offer_timer(o, now)
        for sid, deadline in self.state.grace.items():
            self._grace_timer(sid, deadline - now)

    # --- loading ------------------------------------------------------------------------------------------
    async def load(self) -> None:
        """The queue and running sessions from the database (start-up; offers do not survive a restart)."""
        requests = await self.store.open_requests()
        sessions = await self.store.active_sessions()
        async with self.lock:
            for rec in requests:
                self.state.requests[rec.id] = RequestState.from_record(rec)
            for srec in sessions:
                if srec.request_id in self.state.requests:
                    self.state.sessions[srec.id] = SessionState.from_record(srec)
            for s in list(self.state.sessions.values()):
                if not self.availability(s.counsellor)[0]:
                    self._start_grace(s)
            await self._rebalance()

    # --- requests -----------------------------------------------------------------------------------------
    async def request_help(
        self, client: str, topic: str | None, language: str | None, text: str | None
    ) -> RequestState:
        opts = self.options
        topic = (topic or opts.default_topic or opts.topics[0]).strip()
        language = (language or opts.default_language or opts.languages[0]).strip()
        if topic not in opts.topics:
            raise StanzaError(
                C.BAD_REQUEST, f"unknown topic {topic!r}; choose one of: {', '.join(opts.topics)}"
            )
        if language not in opts.languages:
            raise StanzaError(
                C.BAD_REQUEST, f"unknown language {language!r}; choose one of: {', '.join(opts.languages)}"
            )
        if text is not None and len(text) > opts.max_first_message:
            raise StanzaError(
                C.NOT_ACCEPTABLE, f"the first message is longer than {opts.max_first_message} characters"
            )
        async with self.lock:
            existing = self.state.open_request_of(client)
            if existing is not None:
                raise StanzaError(C.CONFLICT, _already(existing, self.positions()))
            r = RequestState(new_id(), client, topic, language, text or None, now_ms())
            await self.store.add_request(r.record())
            self.state.requests[r.id] = r
            position = self.positions()[r.id]
            r.last_position = position
            await self.send(
                texts.queued(self.service, r, position, self.wait_estimate(r, position), first=True)
            )
            await self._rebalance()
            return r

    async def cancel(self, client: str) -> RequestState:
        async with self.lock:
            r = self.state.open_request_of(client)
            if r is None:
                raise StanzaError(C.ITEM_NOT_FOUND, "you have no open request")
            if r.state == "active" and r.session_id in self.state.sessions:
                await self._close(self.state.sessions[r.session_id], client, "canceled")
            else:
                await self.store.cancel_request(r.id, now_ms())
                self.state.requests.pop(r.id, None)
                await self._withdraw_offer(r.id, "the request was canceled")
                await self.send(
                    texts.notice(
                        self.service,
                        client,
                        f"Your request {r.short} was canceled.",
                        texts.event("request", id=r.id, state="canceled"),
                    )
                )
            await self._rebalance()
            return r

    # --- offers -------------------------------------------------------------------------------------------
    async def accept(self, counsellor: str, ref: str) -> SessionState:
        async with self.lock:
            r = self._request(ref)
            o = self.state.offers.get(r.id)
            if r.state == "active":
                if o is not None and o.transfer_from is not None and o.counsellor == counsellor:
                    return await self._complete_transfer(o, r)
                raise StanzaError(C.CONFLICT, f"request {r.short} has already been taken")
            if o is not None and o.counsellor != counsellor:
                raise StanzaError(C.CONFLICT, f"request {r.short} is offered to another counsellor right now")
            if o is None:
                reason = policy.can_take(self.view_of(counsellor), r.view())
                if reason is not None:
                    raise StanzaError(C.NOT_ACCEPTABLE, reason)
            now = now_ms()
            s = SessionState(new_id(), r.id, r.client, counsellor, now)
            event = "accepted" if o is not None else "picked"
            await self.store.start_session(
                SessionRecord(s.id, r.id, r.client, counsellor, "active", now),
                entry(r.id, counsellor, event, now, s.id),
            )
            self._cancel(f"offer:{r.id}")
            self.state.offers.pop(r.id, None)
            self.state.sessions[s.id] = s
            r.state, r.session_id, r.last_position = "active", s.id, None
            self.state.last_assigned[counsellor] = time.time()
            if self.metrics is not None:
                since = r.requeued_at if r.requeued_at is not None else r.created_at
                self.metrics.wait.observe(max(0.0, (now - since) / 1000))
            await self.send(texts.started_to_client(self.service, s, r))
            await self.send(texts.started_to_counsellor(self.service, s, r))
            await self._rebalance()
            return s

    async def decline(self, counsellor: str, ref: str) -> RequestState:
        async with self.lock:
            r = self._request(ref)
            o = self.state.offers.get(r.id)
            if o is None or o.counsellor != counsellor:
                raise StanzaError(C.ITEM_NOT_FOUND, f"request {r.short} is not offered to you")
            await self._drop_offer(o, r, "declined")
            await self._rebalance()
            return r

    async def expire(self, request_id: str, counsellor: str, expires_at: float) -> None:
        """The timer of one offer fired (ignored if that offer was answered in the meantime)."""
        async with self.lock:
            o = self.state.offers.get(request_id)
            r = self.state.requests.get(request_id)
            if o is None or r is None or (o.counsellor, o.expires_at) != (counsellor, expires_at):
                return
            await self._drop_offer(o, r, "expired")
            await self.send(
                texts.notice(
                    self.service,
                    o.counsellor,
                    f"The offer of request {r.short} expired.",
                    texts.event("offer-expired", request=r.id),
                )
            )
            await self._rebalance()

    async def _drop_offer(self, o: OfferState, r: RequestState, event: str) -> None:
        """A decline or a timeout: a transfer stays where it was; a queued request moves on."""
        self._cancel(f"offer:{r.id}")
        self.state.offers.pop(r.id, None)
        if o.transfer_from is not None:
            await self.store.log(entry(r.id, o.counsellor, f"transfer-{event}", now_ms(), o.session_id))
            await self.send(
                texts.notice(
                    self.service,
                    o.transfer_from,
                    f"{o.counsellor} {event} the transfer of session {short_id(o.session_id or '')}; "
                    "it stays with you.",
                    texts.event("transfer", session=o.session_id or "", to=o.counsellor, state=event),
                )
            )
            return
        r.declined_by.add(o.counsellor)
        await self.store.set_declined(r.id, sorted(r.declined_by), entry(r.id, o.counsellor, event, now_ms()))

    async def _withdraw_offer(self, request_id: str, why: str) -> None:
        o = self.state.offers.pop(request_id, None)
        self._cancel(f"offer:{request_id}")
        if o is not None:
            await self.store.log(entry(request_id, o.counsellor, "withdrawn", now_ms(), o.session_id))
            await self.send(
                texts.notice(
                    self.service,
                    o.counsellor,
                    f"The offer of request {short_id(request_id)} was withdrawn: {why}.",
                    texts.event("offer-withdrawn", request=request_id),
                )
            )

    # --- transfer -----------------------------------------------------------------------------------------
    async def transfer(self, counsellor: str, ref: str, target: str) -> OfferState:
        async with self.lock:
            s = self._own_session(counsellor, ref)
            r = self.state.requests[s.request_id]
            if target == counsellor:
                raise StanzaError(C.BAD_REQUEST, "you cannot transfer a session to yourself")
            if not self.is_counsellor(target):
                raise StanzaError(C.ITEM_NOT_FOUND, f"{target} is not a counsellor")
            if r.id in self.state.offers:
                raise StanzaError(
                    C.CONFLICT, f"a transfer of session {s.short} is already waiting for an answer"
                )
            if not self.availability(target)[0]:
                raise StanzaError(C.RECIPIENT_UNAVAILABLE, f"{target} is not online")
            reason = policy.can_take(self.view_of(target), r.view())
            if reason is not None:
                raise StanzaError(
                    C.NOT_ACCEPTABLE,
                    f"{target} cannot take it: "
                    + reason.replace("you are", "they are").replace("your", "their"),
                )
            o = OfferState(r.id, target, time.time() + self.options.offer_timeout, counsellor, s.id)
            await self.store.log(entry(r.id, target, "transfer-offered", now_ms(), s.id))
            self._add_offer(o)
            await self.send(texts.offer(self.service, o, r, self.options.offer_timeout))
            return o

    async def _complete_transfer(self, o: OfferState, r: RequestState) -> SessionState:
        s = self.state.sessions[r.session_id or ""]
        old = s.counsellor
        await self.store.transfer_session(
            s.id, o.counsellor, entry(r.id, o.counsellor, "transferred", now_ms(), s.id)
        )
        self._cancel(f"offer:{r.id}")
        self.state.offers.pop(r.id, None)
        self._cancel(f"grace:{s.id}")
        self.state.grace.pop(s.id, None)
        s.counsellor = o.counsellor
        self.state.last_assigned[o.counsellor] = time.time()
        await self.send(texts.started_to_client(self.service, s, r, transferred=True))
        await self.send(texts.started_to_counsellor(self.service, s, r, transferred=True))
        await self.send(
            texts.notice(
                self.service,
                old,
                f"Session {s.short} is now with {s.counsellor}.",
                texts.event("transfer", session=s.id, to=s.counsellor, state="accepted"),
            )
        )
        await self._rebalance()
        return s

    # --- closing ------------------------------------------------------------------------------------------
    async def close(self, who: str, ref: str | None) -> SessionState:
        async with self.lock:
            if ref:
                s = self.state.find_session(ref)
                if s is None:
                    raise StanzaError(C.ITEM_NOT_FOUND, f"no running session {ref!r}")
            else:
                mine = [x for x in self.state.sessions.values() if who in (x.client, x.counsellor)]
                if not mine:
                    raise StanzaError(C.ITEM_NOT_FOUND, "you have no running session")
                if len(mine) > 1:
                    raise StanzaError(
                        C.BAD_REQUEST,
                        "you have several sessions: say which one (" + ", ".join(x.short for x in mine) + ")",
                    )
                s = mine[0]
            if who not in (s.client, s.counsellor):
                raise StanzaError(C.FORBIDDEN, f"session {s.short} is not yours")
            await self._close(s, who, "closed")
            await self._rebalance()
            return s

    async def _close(self, s: SessionState, by: str, reason: str) -> None:
        r = self.state.requests[s.request_id]
        now = now_ms()
        await self.store.close_session(
            s.id, r.id, now, by, reason, entry(r.id, s.counsellor, "closed", now, s.id)
        )
        await self._withdraw_offer(r.id, "the session was closed")
        self._cancel(f"grace:{s.id}")
        self.state.grace.pop(s.id, None)
        self.state.sessions.pop(s.id, None)
        self.state.requests.pop(r.id, None)
        for to in (s.client, s.counsellor):
            await self.send(texts.closed(self.service, to, s, r, by, reason))

    # --- counsellors coming and going ---------------------------------------------------------------------
    async def presence_changed(self, jid: str) -> None:
        """A counsellor's presence changed or their last resource went away."""
        async with self.lock:
            if self._closed or not self.is_counsellor(jid):
                return
            online, offerable = self.availability(jid)
            if online:
                for s in self.state.sessions_of(jid):
                    self._cancel(f"grace:{s.id}")
                    self.state.grace.pop(s.id, None)
            else:
                for s in self.state.sessions_of(jid):
                    if s.id not in self.state.grace:
                        self._start_grace(s)
            if not offerable:
                for o in [o for o in self.state.offers.values() if o.counsellor == jid]:
                    await self._withdraw_offer(o.request_id, "you are not available")
                    if o.transfer_from is not None:
                        await self.send(
                            texts.notice(
                                self.service,
                                o.transfer_from,
                                f"{jid} is no longer available; the session stays with you.",
                            )
                        )
            await self._rebalance()

    def _start_grace(self, s: SessionState) -> None:
        deadline = time.time() + self.options.grace_period
        self.state.grace[s.id] = deadline
        self._grace_timer(s.id, self.options.grace_period)

    def _grace_timer(self, session_id: str, delay: float) -> None:
        self._timer(f"grace:{session_id}", delay, lambda: self.grace_over(session_id))

    async def grace_over(self, session_id: str) -> None:
        async with self.lock:
            self.state.grace.pop(session_id, None)
            self._timers.pop(f"grace:{session_id}", None)
            s = self.state.sessions.get(session_id)
            if s is None or self.availability(s.counsellor)[0]:
                return
            r = self.state.requests[s.request_id]
            now = now_ms()
            await self.store.requeue_session(
                s.id, r.id, now, entry(r.id, s.counsellor, "requeued", now, s.id)
            )
            await self._withdraw_offer(r.id, "the session went back to the queue")
            self.state.sessions.pop(s.id, None)
            r.state, r.session_id, r.requeued_at, r.declined_by = "waiting", None, now, set()
            position = self.positions()[r.id]
            r.last_position = position
            await self.send(texts.requeued(self.service, r, s.counsellor, position))
            await self.send(
                texts.closed(self.service, s.counsellor, s, r, s.counsellor, "counsellor-offline")
            )
            await self._rebalance()

    # --- the counsellor list (admins) -------------------------------------------------------------------
    async def set_counsellor(self, conf: CounsellorConf) -> None:
        """Add or change a counsellor in the database table (those in the configuration cannot be changed)."""
        async with self.lock:
            current = self.state.counsellors.get(conf.jid)
            if current is not None and current.source == "config":
                raise StanzaError(
                    C.NOT_ALLOWED, f"{conf.jid} is set in the server configuration; change it there"
                )
            record = CounsellorRecord(
                conf.jid, tuple(sorted(conf.languages)), tuple(sorted(conf.topics)), conf.capacity
            )
            await self.store.put_counsellor(record, now_ms())
            self.state.counsellors[conf.jid] = conf
            await self._rebalance()

    async def remove_counsellor(self, jid: str) -> None:
        """Remove a counsellor of the database table; their running sessions go on, offers are withdrawn."""
        async with self.lock:
            current = self.state.counsellors.get(jid)
            if current is None:
                raise StanzaError(C.ITEM_NOT_FOUND, f"{jid} is not a counsellor")
            if current.source == "config":
                raise StanzaError(C.NOT_ALLOWED, f"{jid} is set in the server configuration; change it there")
            await self.store.delete_counsellor(jid)
            for o in [o for o in self.state.offers.values() if o.counsellor == jid]:
                await self._withdraw_offer(o.request_id, "you are no longer on the counsellor list")
            del self.state.counsellors[jid]
            await self._rebalance()

    # --- the policy at work -------------------------------------------------------------------------------
    def _add_offer(self, o: OfferState) -> None:
        self.state.offers[o.request_id] = o
        self._offer_timer(o, time.time())

    def _offer_timer(self, o: OfferState, now: float) -> None:
        self._timer(
            f"offer:{o.request_id}",
            o.expires_at - now,
            lambda: self.expire(o.request_id, o.counsellor, o.expires_at),
        )

    async def rebalance(self) -> None:
        async with self.lock:
            await self._rebalance()

    async def _rebalance(self) -> None:
        """Make the offers the policy plans, then tell waiting clients where they are now."""
        now = time.time()
        plan = policy.plan_offers(
            self.views(),
            [r.view() for r in self.state.waiting()],
            now,
            self.options.offer_timeout,
            policy.Mode(self.options.mode),
            [o.view() for o in self.state.offers.values()],
        )
        for p in plan:
            r = self.state.requests[p.request_id]
            o = OfferState(p.request_id, p.counsellor, p.expires)
            await self.store.log(entry(r.id, o.counsellor, "offered", now_ms()))
            self._add_offer(o)
            self.state.last_assigned[o.counsellor] = now
            await self.send(texts.offer(self.service, o, r, self.options.offer_timeout))
        positions = self.positions()
        for rid, position in positions.items():
            r = self.state.requests[rid]
            if r.last_position != position:
                r.last_position = position
                await self.send(
                    texts.queued(self.service, r, position, self.wait_estimate(r, position), first=False)
                )
        if self.metrics is not None:
            self.metrics.queue.set(len(positions))

    # --- lookups ------------------------------------------------------------------------------------------
    def _request(self, ref: str) -> RequestState:
        r = self.state.find_request(ref)
        if r is None:
            raise StanzaError(
                C.ITEM_NOT_FOUND, f"no open request {ref!r} (it may have been taken or canceled)"
            )
        return r

    def _own_session(self, counsellor: str, ref: str) -> SessionState:
        s = self.state.find_session(ref)
        if s is None:
            raise StanzaError(C.ITEM_NOT_FOUND, f"no running session {ref!r}")
        if s.counsellor != counsellor:
            raise StanzaError(C.FORBIDDEN, f"session {s.short} is not yours")
        return s


def _already(r: RequestState, positions: dict[str, int]) -> str:
    if r.state == "active":
        sid = short_id(r.session_id or "")
        return f"you already have a running session ({sid}); send 'close' to end it"
    return (
        f"you already have request {r.short} in the queue (position {positions.get(r.id, '?')}); "
        "send 'cancel' to withdraw it"
    )
