"""XMPP over WebSocket (RFC 7395) on the aiohttp listener: a thin adapter around the shared stream core.

The same :class:`ServerStream` and :class:`ClientConnection` as TCP; only the framing (``<open/>`` and
``<close/>``, one element per text message) and this :class:`WebSocketWire` differ. aiohttp writes
asynchronously, so outgoing messages wait in a per-connection queue drained by one writer task;
:meth:`WebSocketWire.write_buffer_size` reports the queued bytes so the core's slow-reader policy
(``limits.write_buffer``) closes a client that does not keep up. Reading pauses by not reading (aiohttp
then stops reading the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web

from mbeon_chat.core.c2s import ClientConnection
from mbeon_chat.core.context import ServerContext
from mbeon_chat.stream.framing import WebSocketFraming
from mbeon_chat.stream.negotiation import ServerStream, StreamPolicy
from mbeon_chat.transport.tcp import new_conn_id
from mbeon_chat.xmpp.errors import StreamCondition

log = structlog.get_logger("mbeon_chat.websocket")

SUBPROTOCOL = "xmpp"
_FRAMING = WebSocketFraming()
#: How long a closing connection may take to flush its last messages and finish the closing handshake.
CLOSE_TIMEOUT = 5.0
#: Allowance over ``limits.max_stanza_size`` before aiohttp itself drops a message (code 1009): between
#: the two, the stream core answers with a ``policy-violation`` stream error like on TCP.
_FRAME_SLACK = 65536
_BACKLOG_AT_CLOSE = 65536


class WebSocketWire:
    """The :class:`~mbeon_chat.core.c2s.Wire` over an aiohttp :class:`~aiohttp.web.WebSocketResponse`."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self._ws = ws
        self._transport = transport
        self._out: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self._writer = self._loop.create_task(self._drain())

    # --- Wire -------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closing:
            return
        self._out.append(data)
        self._queued += len(data)
        self._wake.set()

    def write_buffer_size(self) -> int:
        pending = (
            self._transport.get_write_buffer_size() if isinstance(self._transport, asyncio.Transport) else 0
        )
        return self._queued + pending

    async def start_tls(self) -> None:
        raise RuntimeError("no STARTTLS inside a WebSocket (RFC 7395 3.4)")

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def close(self) -> None:
        """Send what is queued (the last ones are ``<close/>``), then close the WebSocket; never blocks."""
        if self._closing:
            return
        self._closing = True
        self._readable.set()
        self._wake.set()
        # A peer that has this much unread is the slow reader being closed: it gets a short grace only.
        grace = CLOSE_TIMEOUT if self._queued < _BACKLOG_AT_CLOSE else 1.0
        self._deadline = self._loop.call_later(grace, self._abort)

    # --- the adapter's side --------------------------------------------------------------------------
    async def readable(self) -> None:
        if not self._readable.is_set():
            await self._readable.wait()

    async def finished(self) -> None:
        """Wait (bounded) for the writer task: the handler must not return before the close is sent."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT + 1)
        if self._deadline is not None:
            self._deadline.cancel()

    async def _drain(self) -> None:
        ws, out = self._ws, self._out
        try:
            while True:
                while out:
                    data = out[0]
                    await ws.send_str(data.decode())
                    out.popleft()
                    self._queued -= len(data)
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionError, RuntimeError):
            pass  # the peer is gone; the read loop reports the loss
        finally:
            out.clear()
            self._queued = 0
            self._closing = True
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()

    def _abort(self) -> None:
        if not self._writer.done():
            self._writer.cancel()
        if isinstance(self._transport, asyncio.Transport):
            self._transport.abort()
        elif self._transport is not None:
            self._transport.close()


# --- the HTTP side ------------------------------------------------------------------------------------
def requested_protocols(request: web.Request) -> list[str]:
    header = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [p.strip() for p in header.split(",") if p.strip()]


def origin_allowed(origin: str | None, request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Cross-site WebSocket hijacking guard: which pages may open a session with the user's browser.

    Requests without ``Origin`` come from non-browser clients (apps, bots) and pass; so do pages served by
    this server itself (same host). Any other page passes only when ``allowed`` lists its origin exactly
    (``"null"`` for sandboxed or file:// pages).
    """
    if origin is None:
        return True
    if origin.rstrip("/").lower() in {a.lower() for a in allowed}:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.netloc != ""
        and parts.netloc.lower() == request.host.lower()
    )


def is_secure(request: web.Request, trust_proxy_tls: bool) -> bool:
    """True when this request came over TLS, or through a TLS-terminating proxy we were told to trust."""
    if trust_proxy_tls:
        return True
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


def public_url(request: web.Request, path: str, configured: str, trust_proxy_tls: bool) -> str:
    """The WebSocket URL to announce (XEP-0156, web client): configured, or derived from the Host header."""
    if configured:
        return configured
    scheme = "wss" if is_secure(request, trust_proxy_tls) else "ws"
    return f"{scheme}://{request.host}{path}"


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class WebSocketEndpoint:
    """The ``websocket.path`` handler: checks, handshake, then one :class:`ClientConnection` per socket."""

    def __init__(self, ctx: ServerContext, policy: Callable[[], StreamPolicy], metrics: Any = None) -> None:
        self.ctx = ctx
        self._policy = policy
        self._metrics = metrics

    def _refuse(
        self, reason: str, status: int, text: str, request: web.Request, **extra: Any
    ) -> web.Response:
        log.info(
            "websocket.refused", reason=reason, remote=request.remote, origin=request.headers.get("Origin")
        )
        if self._metrics is not None:
            self._metrics.websocket_refused(reason)
        return web.Response(status=status, text=text + "\n", **extra)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        config = self.ctx.config
        wsconf = config.websocket
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request, wsconf.allowed_origins):
            return self._refuse("origin", 403, "this origin may not open XMPP WebSocket sessions", request)
        if SUBPROTOCOL not in requested_protocols(request):
            return self._refuse(
                "subprotocol", 400, "XMPP over WebSocket needs the 'xmpp' subprotocol (RFC 7395 3.1)", request
            )
        policy = self._policy()
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            heartbeat=min(float(wsconf.ping_interval), 50.0),
            max_msg_size=policy.max_stanza_size + _FRAME_SLACK,
            timeout=CLOSE_TIMEOUT,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return self._refuse(
                "not-websocket",
                426,
                "this is an XMPP WebSocket endpoint (RFC 7395)",
                request,
                headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            )
        await ws.prepare(request)
        tls = is_secure(request, wsconf.trust_proxy_tls)
        wire = WebSocketWire(ws, request.transport)
        machine = ServerStream(policy, _FRAMING, tls_active=tls)
        conn_id = new_conn_id()
        log.info(
            "websocket.accepted",
            conn_id=conn_id,
            transport="websocket",
            remote=request.remote,
            origin=origin,
            tls=tls,
        )
        conn = ClientConnection(self.ctx, wire, machine, conn_id, request.remote or "")
        try:
            while not conn.closed:
                await wire.readable()
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    conn.feed(msg.data.encode())
                elif msg.type is WSMsgType.BINARY:
                    conn.close_stream(
                        StreamCondition.POLICY_VIOLATION, "XMPP over WebSocket uses text messages"
                    )
                else:  # CLOSE / CLOSING / CLOSED / ERROR: the peer is gone or the socket is closing
                    break
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            conn.lost()
            await wire.finished()
        return ws
