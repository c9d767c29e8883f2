"""XEP-0198: Stream Management (``urn:xmpp:sm:3``): acknowledgements and stream resumption.

After binding, the client sends ``<enable/>`` (``resume="true"`` to be able to resume); from then on both
sides count stanzas. The server answers ``<r/>`` with ``<a h/>`` (h: stanzas handled from the client), asks
for acks itself (after ``ack_every`` unacknowledged stanzas, or ``ack_delay`` seconds after the first) and
keeps every stanza it sent until the client acknowledges it, in a bounded queue (``max_queue``: beyond it
the stream is closed with ``policy-violation``). An ack request unanswered for ``ack_timeout`` seconds
means the connection is dead (a phone that changed networks): it is dropped as if lost.

Resumption: when the connection is lost (no ``</stream:stream>``), a resumable session is not ended; it
hibernates for ``resume_timeout`` seconds (the client may ask for less with ``max``). It stays bound, its
presence stays as it was, and what is routed to it waits in the queue (a stand-in connection). The client
reconnects, authenticates and sends ``<resume previd h/>`` instead of binding: it gets ``<resumed/>`` and
every stanza it did not acknowledge, in order. An open old connection of that session is closed. The
timeout, a full queue, a new session with the same resource, a clean close or a stream error end the
session as usual (``session/ended``: unavailable presence ...).

A session that ends with stanzas unacknowledged treats them like stanzas for an unavailable resource (XEP-0198
5): messages go to offline storage (``message/offline``) when the user has no other available resource,
otherwise (or when storage refuses) the sender gets ``recipient-unavailable``; iq get/set get
``service-unavailable``; the rest is dropped.

The state lives in ``session.data["sm"]`` and ``connection.sm`` (the core calls ``sent``/``received``);
a stage in ``connection.outbound`` that holds stanzas back (XEP-0352) hands them over with ``drain()``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError, StreamCondition
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()

SM = f"{{{ns.SM}}}"
MAX_SEQ = 2**32
STATE_VERSION = 1  # bump when StreamState changes shape: a reload adopts only states of the same shape
_COPIES = frozenset({f"{{{ns.CARBONS}}}sent", f"{{{ns.CARBONS}}}received", f"{{{ns.MAM}}}result"})


@dataclass(frozen=True)
class Options:
    resume_timeout: int = 300  # seconds a session that lost its connection can be resumed (advertised: max)
    max_queue: int = 500  # unacknowledged stanzas kept per session
    ack_every: int = 5  # ask for an ack after this many unacknowledged stanzas ...
    ack_delay: float = 2.0  # ... or this many seconds after the first one
    ack_timeout: float = 60.0  # an ack request unanswered this long drops the connection (0: never)

    def validate(self) -> None:
        if self.resume_timeout < 0:
            raise ValueError("resume_timeout: must not be negative (0: no resumption)")
        if self.max_queue < 1:
            raise ValueError("max_queue: must be at least 1")
        if self.ack_every < 1:
            raise ValueError("ack_every: must be at least 1")
        if self.ack_delay <= 0:
            raise ValueError("ack_delay: must be positive")
        if self.ack_timeout < 0:
            raise ValueError("ack_timeout: must not be negative")


def _failed(condition: StanzaCondition) -> Element:
    return Element(SM + "failed", None, [Element(f"{{{ns.STANZA_ERRORS}}}{condition}")])


def _take_held(conn: Any) -> list[Element]:
    """Remove the connection's outbound stage (XEP-0352) and return what it still held back."""
    stage = conn.outbound
    conn.outbound = None
    drain = getattr(stage, "drain", None)
    return list(drain()) if drain is not None else []


class StreamState:
    """Stream management of one session; it outlives a lost connection and moves to the resuming one."""

    __slots__ = (
        "acked",
        "awaiting",
        "conn",
        "ended",
        "handled",
        "id",
        "queue",
        "service",
        "session",
        "timeout",
        "timer",
        "version",
    )

    def __init__(
        self, service: StreamManagement, session: Session, conn: Any, resume_id: str | None, timeout: int
    ) -> None:
        self.version = STATE_VERSION
        self.service = service
        self.session = session
        self.conn: Any = conn  # the ClientConnection; None while hibernating
        self.id = resume_id  # None: not resumable
        self.timeout = timeout
        self.queue: deque[Element] = deque()  # sent (or waiting to be), not acknowledged, oldest first
        self.acked = 0  # the client's last h
        self.handled = 0  # stanzas handled from the client
        self.awaiting = False  # an <r/> is out
        self.timer: asyncio.TimerHandle | None = None  # ack request / ack timeout / hibernation, by state
        self.ended = False

    # --- called by the core for every stanza --------------------------------------------------------
    def sent(self, el: Element) -> None:
        if self.ended:
            self.service.api.spawn(self.service.bounce(self.session, [el]))
            return
        queue = self.queue
        queue.append(el)
        options = self.service.options
        if len(queue) > options.max_queue:
            if len(queue) == options.max_queue + 1:  # once: the end is on its way
                self.service.overflow(self)
            return
        conn = self.conn
        if conn is None or self.awaiting or conn.closed:
            return
        if len(queue) >= options.ack_every:
            self.request()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(options.ack_delay, self._request_due)

    def received(self) -> None:
        self.handled = (self.handled + 1) % MAX_SEQ

    # --- acks ------------------------------------------------------------------------------------------
    def request(self) -> None:
        self.cancel_timer()
        conn = self.conn
        if conn is None or conn.closed:
            return
        conn.write_nonza(Element(SM + "r"))
        self.awaiting = True
        timeout = self.service.options.ack_timeout
        if timeout:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._ack_overdue)

    def _request_due(self) -> None:
        self.timer = None
        if self.queue and not self.awaiting:
            self.request()

    def _ack_overdue(self) -> None:
        self.timer = None
        conn = self.conn
        if conn is not None and not conn.closed:
            self.service.api.log.info("sm.ack_timeout", jid=str(self.session.jid), unacked=len(self.queue))
            conn.lost()  # as if the network had told us: hibernates when resumable
            conn.wire.close()

    def acknowledge(self, h: int) -> bool:
        """Drop what the client confirmed; False if ``h`` counts more than was sent."""
        count = (h - self.acked) % MAX_SEQ
        if count > len(self.queue):
            return False
        for _ in range(count):
            self.queue.popleft()
        self.acked = h
        return True

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Hibernating:
    """The connection of a hibernating session: what is written to it waits in the queue."""

    __slots__ = ("closed", "conn_id", "remote", "state", "transport_name")

    def __init__(self, state: StreamState, conn: Any) -> None:
        self.state = state
        self.conn_id = conn.conn_id
        self.transport_name = conn.transport_name
        self.remote = conn.remote
        self.closed = False

    def write_element(self, el: Element) -> None:
        self.state.sent(el)

    def close_stream(self, condition: StreamCondition | None = None, text: str | None = None) -> None:
        service = self.state.service
        service.api.spawn(service.finish(self.state, f"closed while hibernating: {condition or 'no error'}"))


class StreamManagement:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self.by_id: dict[str, StreamState] = {}

    # --- nonzas ------------------------------------------------------------------------------------------
    def on_nonza(self, conn: Any, el: Element) -> bool:
        tag = el.tag
        if not tag.startswith(SM):
            return False
        state: StreamState | None = conn.sm
        name = tag[len(SM) :]
        if name == "r" and state is not None:
            conn.write_nonza(Element(SM + "a", {"h": str(state.handled)}))
        elif name == "a" and state is not None:
            self.on_ack(conn, state, el.get("h") or "")
        elif name == "enable":
            self.enable(conn, el)
        elif name == "resume":  # after binding: too late
            conn.write_nonza(_failed(StanzaCondition.UNEXPECTED_REQUEST))
        else:
            return False
        return True

    def enable(self, conn: Any, el: Element) -> None:
        session = conn.session
        if conn.sm is not None or session is None:
            conn.write_nonza(_failed(StanzaCondition.UNEXPECTED_REQUEST))
            return
        timeout = self.options.resume_timeout
        wanted = el.get("max") or ""
        if wanted.isascii() and wanted.isdigit() and int(wanted) > 0:
            timeout = min(timeout, int(wanted))
        resume = el.get("resume") in ("true", "1") and timeout > 0
        state = StreamState(self, session, conn, secrets.token_urlsafe(24) if resume else None, timeout)
        attrs = {"id": state.id, "resume": "true", "max": str(timeout)} if state.id else None
        conn.write_nonza(Element(SM + "enabled", attrs))  # counting starts here: before any later stanza
        conn.sm = state
        session.data["sm"] = state
        if state.id:
            self.by_id[state.id] = state

    def on_ack(self, conn: Any, state: StreamState, h: str) -> None:
        if not (h.isascii() and h.isdigit()) or int(h) >= MAX_SEQ:
            conn.close_stream(StreamCondition.BAD_FORMAT, "h must be a number below 2^32")
            return
        if not state.acknowledge(int(h)):
            conn.close_stream(StreamCondition.UNDEFINED_CONDITION, "handled-count-too-high")
            return
        state.awaiting = False
        state.cancel_timer()
        if state.queue:  # sent after the request: ask again in a while
            state.timer = asyncio.get_running_loop().call_later(self.options.ack_delay, state._request_due)

    def overflow(self, state: StreamState) -> None:
        self.api.log.warning("sm.queue_full", jid=str(state.session.jid), unacked=len(state.queue))
        if state.conn is not None:
            state.conn.close_stream(StreamCondition.POLICY_VIOLATION, "too many unacknowledged stanzas")
        else:
            state.cancel_timer()
            self.api.spawn(self.finish(state, "stream management queue full"))

    # --- hibernation and resumption ------------------------------------------------------------------------
    def on_lost(self, session: Session, conn: Any) -> bool:
        """``session/lost``: keep a resumable session bound, without its connection."""
        state: StreamState | None = conn.sm
        if state is None or state.id is None or state.ended or state.session is not session:
            return False
        if self.api.sessions.get(session.jid) is not session:
            return False
        state.queue.extend(_take_held(conn))
        conn.sm = None
        state.conn = None
        state.awaiting = False
        state.cancel_timer()
        session.conn = Hibernating(state, conn)
        state.timer = asyncio.get_running_loop().call_later(state.timeout, self.expire, state)
        self.api.log.info(
            "sm.hibernating", jid=str(session.jid), unacked=len(state.queue), seconds=state.timeout
        )
        return True

    def expire(self, state: StreamState) -> None:
        state.timer = None
        self.api.spawn(self.finish(state, "resumption timeout"))

    async def finish(self, state: StreamState, reason: str) -> None:
        """End a hibernating session (its unacknowledged stanzas are handled by ``session/ended``)."""
        state.cancel_timer()
        if state.ended:
            return
        await self.api.end_session(state.session, reason)
        if not state.ended:  # this plugin's session/ended handler is gone (unloaded)
            await self.on_ended(state.session, reason)

    async def on_resume(self, conn: Any, previd: str, h: int) -> bool:
        """``stream/resume``: attach the session ``previd`` of the authenticated user to ``conn``."""
        state = self.by_id.get(previd)
        machine = conn.machine
        if state is None or state.ended:
            return False
        session = state.session
        if session.bare.local != machine.username or session.bare.domain != machine.domain:
            return False
        if self.api.sessions.get(session.jid) is not session:
            return False
        if (h - state.acked) % MAX_SEQ > len(state.queue):
            self.api.log.info("sm.resume_bad_h", jid=str(session.jid), h=h, acked=state.acked)
            return False
        old = state.conn
        if old is not None and old is not conn:  # the old connection is still open (or not closed yet)
            state.queue.extend(_take_held(old))
            old.sm = None
            if old.session is session:
                old.session = None  # its end must not end the session
            old.close_stream(StreamCondition.CONFLICT, "the session was resumed on another connection")
        state.cancel_timer()
        state.awaiting = False
        state.acknowledge(h)
        pending = list(state.queue)
        state.queue.clear()
        state.conn = conn
        conn.sm = state
        conn.resume(session, state.handled)
        for el in pending:  # again, in order; queued again until acknowledged
            conn.transmit(el)
        if pending and not state.awaiting:
            state.request()
        self.api.log.info("sm.resumed", jid=str(session.jid), resent=len(pending))
        return True

    # --- the end of a session ----------------------------------------------------------------------------
    async def on_ended(self, session: Session, reason: str) -> None:
        state: StreamState | None = session.data.get("sm")
        if state is None or state.ended:
            return
        state.ended = True
        state.cancel_timer()
        if state.id is not None and self.by_id.get(state.id) is state:
            del self.by_id[state.id]
        unacked = list(state.queue)
        state.queue.clear()
        if state.conn is not None:
            unacked.extend(_take_held(state.conn))
        if unacked:
            self.api.log.info("sm.unacked_on_end", jid=str(session.jid), count=len(unacked), reason=reason)
            await self.bounce(session, unacked)

    async def bounce(self, session: Session, elements: list[Element]) -> None:
        """XEP-0198 5: as if sent to an unavailable resource: stored offline or an error to the sender."""
        alone = not any(s is not session for s in self.api.sessions.available(session.bare))
        router = self.api.router
        for el in elements:
            try:
                stanza = Stanza.parse(el)
            except (StanzaError, ValueError):
                continue
            if stanza.kind == "message":
                if stanza.type in ("error", "groupchat", "headline"):
                    continue
                if any(c.tag in _COPIES for c in el.elements()):
                    continue  # a carbon copy or an archive result: the original is handled elsewhere
                error = StanzaError(StanzaCondition.RECIPIENT_UNAVAILABLE)
                if alone:
                    try:
                        if await self.api.hooks.fire("message/offline", stanza, None):
                            continue
                    except StanzaError as refused:
                        error = refused
                await router.reply_error(stanza, error)
            elif stanza.kind == "iq" and stanza.type in ("get", "set"):
                await router.reply_error(stanza, StanzaError(StanzaCondition.SERVICE_UNAVAILABLE))

    # --- reload and unload ------------------------------------------------------------------------------
    def adopt(self) -> None:
        """After a reload: take over the states of the previous version (same shape only)."""
        for session in self.api.sessions:
            state: Any = session.data.get("sm")
            if getattr(state, "version", None) == STATE_VERSION and not state.ended:
                state.service = self
                if state.id:
                    self.by_id[state.id] = state

    async def unload(self) -> None:
        """Unloaded for good (states nobody adopted): hibernating sessions end, live ones stop counting."""
        for session in list(self.api.sessions):
            state: Any = session.data.get("sm")
            if state is None or getattr(state, "service", None) is not self:
                continue
            if state.conn is None:
                await self.finish(state, "stream management unloaded")
            else:
                state.cancel_timer()
                state.conn.sm = None
                state.ended = True
                session.data.pop("sm", None)


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    service = StreamManagement(api, options)
    api.export(service)
    api.add_stream_feature(lambda: Element(SM + "sm"))
    api.on("nonza/in", service.on_nonza)
    api.on("session/lost", service.on_lost)
    api.on("stream/resume", service.on_resume)
    # Before the unavailable presence goes out: whoever sees the session gone finds its messages stored.
    api.on("session/ended", service.on_ended, priority=100)
    api.on_activate(service.adopt)
    api.on_unload(service.unload)
