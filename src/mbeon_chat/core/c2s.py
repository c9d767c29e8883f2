"""The client connection driver: runs one :class:`ServerStream` over a transport and plugs it into the core.

Transport adapters (TCP, WebSocket) call :meth:`ClientConnection.feed` with bytes and :meth:`lost` when
the peer is gone; they provide a :class:`Wire` to write, upgrade to TLS and close. One worker task per
connection handles the machine's events in order (credentials lookup, bind, routing), so a sender's
stanzas keep their order. Inbound data is bounded: reading pauses while the queue is full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from mbeon_chat.core.context import ServerContext as Services
from mbeon_chat.core.session import ResourceConflict, Session, TooManyResources
from mbeon_chat.stream import events as ev
from mbeon_chat.stream.negotiation import ServerStream, State
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError, StreamCondition
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

log = structlog.get_logger("mbeon_chat.c2s")
SERVICE_UNAVAILABLE = StanzaCondition.SERVICE_UNAVAILABLE
_LOST = object()


class Inbox:
    """The worker's bounded FIFO: what it needs of ``asyncio.Queue`` (one reader, non-blocking puts) for a
    fraction of the memory (one list instead of four deques and an event) and of the time per item."""

    __slots__ = ("_items", "_waiter", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._items.pop(0)

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def empty(self) -> bool:
        return not self._items


class Wire(Protocol):
    def write(self, data: bytes) -> None: ...

    def write_buffer_size(self) -> int: ...

    async def start_tls(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


class ClientConnection:
    def __init__(
        self, services: Services, wire: Wire, machine: ServerStream, conn_id: str, remote: str
    ) -> None:
        self.services = services
        self.wire = wire
        self.machine = machine
        self.conn_id = conn_id
        self.remote = remote
        self.transport_name = machine.framing.name
        self.session: Session | None = None
        self.closed = False
        #: XEP-0198 stream management (a plugin's object): ``sent(el)`` after each stanza transmitted (also
        #: once the connection is gone: nothing is lost before it hibernates), ``received()`` for each one in.
        self.sm: Any = None
        #: An outbound stage that may hold stanzas back (XEP-0352): it gets every stanza written to the
        #: session and passes them on, in order, with :meth:`transmit`.
        self.outbound: Callable[[Element], None] | None = None
        self._message_oriented = machine.framing.message_oriented
        self._element_bytes: Callable[[Element], bytes] = machine.framing.element
        limits = services.config.limits
        self._write_limit = limits.write_buffer
        self._queue = Inbox(limits.inbound_queue)
        self._paused = False
        self._log = log.bind(conn_id=conn_id, remote=remote, transport=self.transport_name)
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self._auth_timer = asyncio.get_running_loop().call_later(limits.auth_timeout, self._auth_timeout)
        self.opened_at = time.monotonic()
        services.connections.add(self)
        services.metrics.connection_opened(self.transport_name)
        self._log.info("session.opened")

    # --- transport side -------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self._close(StreamCondition.POLICY_VIOLATION, "inbound queue overflow")
            return
        if not self._paused and self._queue.full():
            self._paused = True
            self.wire.pause_reading()

    def lost(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._queue.put_nowait(_LOST)
            except asyncio.QueueFull:
                self._worker.cancel()
                self.services.spawn(self._end("connection lost"))

    # --- Connection protocol (used by Session) ---------------------------------------------------------
    def write_element(self, el: Element) -> None:
        if self.outbound is not None:
            self.outbound(el)
            return
        self.transmit(el)

    def transmit(self, el: Element) -> None:
        """Write a stanza now (past any outbound stage)."""
        if self.closed:
            if self.sm is not None:
                self.sm.sent(el)  # kept for a resumption
            return
        self.wire.write(self._element_bytes(el))
        self.services.metrics.stanza_out(el)
        if self.sm is not None:
            self.sm.sent(el)
        if self.wire.write_buffer_size() > self._write_limit:
            self._log.warning("session.slow_reader", buffered=self.wire.write_buffer_size())
            self._close(StreamCondition.POLICY_VIOLATION, "too much unread data: the client does not keep up")

    def write_serialized(self, data: bytes, tag: str) -> bool:
        """Write a stanza that arrives already serialised for a client stream (a cluster bus payload).

        Returns False, writing nothing, when this connection needs the element itself: an outbound stage
        (XEP-0352), stream management (XEP-0198 keeps the elements) or WebSocket framing.
        """
        if self.outbound is not None or self.sm is not None or self._message_oriented:
            return False
        if self.closed:
            return True
        self.wire.write(data)
        self.services.metrics.stanza_out(Element(tag))
        if self.wire.write_buffer_size() > self._write_limit:
            self._log.warning("session.slow_reader", buffered=self.wire.write_buffer_size())
            self._close(StreamCondition.POLICY_VIOLATION, "too much unread data: the client does not keep up")
        return True

    def write_nonza(self, el: Element) -> None:
        """Write a top-level element that is no stanza (XEP-0198 ``<r/>``, ``<a/>``) now, in stanza order."""
        if not self.closed:
            self.wire.write(self._element_bytes(el))

    def close_stream(self, condition: StreamCondition | None = None, text: str | None = None) -> None:
        self._close(condition, text)

    def resume(self, session: Session, h: int) -> None:
        """Attach a kept session to this stream (XEP-0198 resumption): the answer to ``stream/resume``."""
        self.session = session
        session.conn = self
        self._auth_timer.cancel()
        self.machine.resume_succeeded(session.jid, h)
        self._flush()  # <resumed/> before the stanzas the plugin sends again
        structlog.contextvars.bind_contextvars(jid=str(session.jid))
        self._log.info("session.resumed", jid=str(session.jid))

    # --- the worker --------------------------------------------------------------------------------
    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(conn_id=self.conn_id)
        reason = "closed"
        try:
            while True:
                item = await self._queue.get()
                if self._paused and self._queue.qsize() < self._queue.maxsize // 2:
                    self._paused = False
                    self.wire.resume_reading()
                if item is _LOST:
                    reason = "connection lost"
                    break
                if isinstance(item, tuple):  # a close requested from outside the worker
                    events = self.machine.close(*item)
                else:
                    events = self.machine.receive_data(item)
                done = await self._handle(events)
                self._flush()
                if done or self.machine.state is State.CLOSED:  # also when a handler closed the stream
                    reason = done or "closed by the server"
                    break
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception:
            self._log.exception("session.driver_failed")
            self.machine.close(StreamCondition.INTERNAL_SERVER_ERROR)
            self._flush()
            reason = "internal error"
        finally:
            await self._end(reason)

    async def _handle(self, events: list[ev.Event]) -> str | None:
        for event in events:
            if isinstance(event, ev.StanzaReceived):
                await self._on_stanza(event.element)
            elif isinstance(event, ev.CredentialsNeeded):
                await self._on_credentials(event)
            elif isinstance(event, ev.TlsRequested):
                self._flush()
                try:
                    await self.wire.start_tls()
                except Exception as exc:
                    self._log.info("session.tls_failed", error=str(exc))
                    return "tls handshake failed"
                self.machine.tls_established()
            elif isinstance(event, ev.BindRequested):
                await self._on_bind(event)
            elif isinstance(event, ev.ResumeRequested):
                if not await self.services.hooks.fire("stream/resume", self, event.previd, event.h):
                    self.machine.resume_failed()
            elif isinstance(event, ev.Authenticated):
                self._log.info("auth.succeeded", username=event.username)
                self.services.metrics.auth(True)
                self.services.throttle.success(self.remote)
            elif isinstance(event, ev.AuthFailed):
                await self._on_auth_failed(event)
            elif isinstance(event, ev.PreAuthIq):
                await self._on_preauth_iq(event.element)
            elif isinstance(event, ev.NonzaReceived):
                handled = await self.services.hooks.fire("nonza/in", self, event.element)
                if not handled:
                    self.machine.close(
                        StreamCondition.UNSUPPORTED_STANZA_TYPE, f"unexpected <{event.element.local}/>"
                    )
                    self._flush()
                    return "unsupported element"
            elif isinstance(event, ev.StreamClosed):
                if event.condition is not None:
                    self.services.metrics.stream_error(str(event.condition))
                    self._log.info("stream.error", condition=str(event.condition), detail=event.text)
                return f"stream error {event.condition}" if event.condition else "closed by peer"
        return None

    async def _on_stanza(self, el: Element) -> None:
        session = self.session
        if session is None:  # replaced by a newer session with the same full JID; the close is queued
            return
        if self.sm is not None:
            self.sm.received()
        self.services.metrics.stanza_in(el)
        from_attr = el.attrs.get("from")
        if from_attr is not None and from_attr != str(session.jid) and from_attr != str(session.bare):
            closed = self.machine.close(StreamCondition.INVALID_FROM, "the 'from' address is not yours")
            await self._handle(closed)
            return
        try:
            stanza = Stanza.parse(el)
        except StanzaError as error:
            el.attrs.pop("to", None)
            stanza = Stanza.unaddressed(el)
            stanza.set_from(session.jid)
            await self.services.router.reply_error(stanza, error)
            return
        stanza.set_from(session.jid)
        if stanza.kind == "iq" and (problem := stanza.iq_problem()) is not None:
            await self.services.router.reply_error(stanza, problem)
            return
        hooks = self.services.hooks
        if hooks.has("stanza/in"):
            dropped = hooks.dispatch("stanza/in", stanza, session)
            if not isinstance(dropped, bool):
                dropped = await dropped
            if dropped:
                return
        await self.services.router.route(stanza, session)

    async def _on_credentials(self, event: ev.CredentialsNeeded) -> None:
        creds = await self.services.accounts.credentials(event.username, event.mechanism)
        if event.mechanism == "PLAIN":
            loop = asyncio.get_running_loop()
            events = await loop.run_in_executor(
                self.services.hash_pool, self.machine.provide_credentials, creds
            )
        else:
            events = self.machine.provide_credentials(creds)
        await self._handle(events)

    async def _on_auth_failed(self, event: ev.AuthFailed) -> None:
        self.services.metrics.auth(False)
        self._log.info("auth.failed", username=event.username, condition=event.condition)
        delay = self.services.throttle.failure(self.remote)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _on_bind(self, event: ev.BindRequested) -> None:
        services = self.services
        username = self.machine.username
        assert username is not None
        bare = JID(username, self.machine.domain, None)
        iq_id = self.machine.pending_bind_id
        try:
            session, displaced = services.registry.bind(self, bare, event.resource)
        except TooManyResources:  # RFC 6120 7.6.2.1
            error = StanzaError(StanzaCondition.RESOURCE_CONSTRAINT, "too many resources")
            self.machine.bind_failed(error, iq_id)
            return
        except ResourceConflict:  # 7.7.2.2, with the "refuse" conflict policy
            self.machine.bind_failed(StanzaError(StanzaCondition.CONFLICT), iq_id)
            return
        if displaced is not None:
            await self._end_displaced(displaced)
        self.session = session
        self._auth_timer.cancel()
        self.machine.bind_succeeded(session.jid, iq_id)
        self._flush()
        structlog.contextvars.bind_contextvars(jid=str(session.jid))
        self._log.info("session.bound", jid=str(session.jid))
        services.metrics.session_bound(len(services.registry))
        services.spawn(services.hooks.fire("session/bound", session))

    async def _end_displaced(self, displaced: Session) -> None:
        """The older session with this full JID: close it with <conflict/> and end it (unavailable presence,
        leaving rooms) now, before the new session's bind result, so its end never follows the new start."""
        old = displaced.conn
        if isinstance(old, ClientConnection) and old.session is displaced:
            old.session = None  # its own end must not fire session/ended a second time
        displaced.close(StreamCondition.CONFLICT, "replaced by a new session with the same resource")
        try:
            await self.services.hooks.fire("session/ended", displaced, "replaced")
        except Exception:
            self._log.exception("session.end_hook_failed")

    async def _on_preauth_iq(self, el: Element) -> None:
        handler = self.services.preauth_iq
        if handler is None:  # registration was switched off meanwhile: answer rather than leave it hanging
            if el.get("type") in ("get", "set"):
                self.machine.send_element(
                    Stanza.unaddressed(el).error_reply(StanzaError(SERVICE_UNAVAILABLE)).el
                )
            return
        reply = await handler(el, self)
        if reply is not None:
            self.machine.send_element(reply)

    # --- closing -------------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.closed:
            self.machine.data_to_send()
            return
        if self._message_oriented:
            for chunk in self.machine.data_chunks():
                self.wire.write(chunk)
        else:
            data = self.machine.data_to_send()
            if data:
                self.wire.write(data)
        if self.machine.state is State.CLOSED:
            self.closed = True
            self.wire.close()

    def _close(self, condition: StreamCondition | None, text: str | None) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait((condition, text))
        except asyncio.QueueFull:
            self.machine.close(condition, text)
            self._flush()
            self.closed = True
            self.wire.close()

    def _auth_timeout(self) -> None:
        if self.session is None:
            self._close(StreamCondition.CONNECTION_TIMEOUT, "authentication took too long")

    async def _end(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.wire.close()
        self._auth_timer.cancel()
        services = self.services
        services.metrics.connection_closed(self.transport_name)
        session = self.session
        # A plugin may keep a session whose connection was lost (XEP-0198: it hibernates, resumable).
        if session is not None and (
            reason != "connection lost" or not await services.hooks.fire("session/lost", session, self)
        ):
            await end_session(services, session, reason)
        # Only now: App.stop() waits for the workers of the connections in this set, so a shutdown waits
        # for the session/ended handlers (unavailable presence, their database work) of closing sessions.
        services.connections.discard(self)
        self._log.info("session.closed", reason=reason, jid=str(session.jid) if session else None)


async def end_session(services: Services, session: Session, reason: str) -> None:
    """Unregister a session and fire ``session/ended`` (unless it was already ended or replaced)."""
    if services.registry.unbind(session):
        services.metrics.session_bound(len(services.registry))
        try:
            await services.hooks.fire("session/ended", session, reason)
        except Exception:
            log.exception("session.end_hook_failed", jid=str(session.jid))
