"""TCP client listeners: STARTTLS (RFC 6120 5) and direct TLS (XEP-0368). A thin adapter around the core.

Writes are batched: everything written to a connection during one turn of the event loop (a routed
message, its carbons, the replies of a whole read chunk ...) leaves in one ``transport.write`` at the end
of the turn, so one TLS record and one send() carry many stanzas under load.

TLS (STARTTLS and direct TLS) runs here over memory BIOs (``ssl.SSLObject``) on the plain TCP transport,
not through ``loop.start_tls``: the event loops' TLS protocols keep a 256 KiB read buffer per connection,
which made an idle TLS connection cost about a third more memory; here a connection holds OpenSSL's state
and nothing more, and a batch of stanzas is encrypted in one ``SSL_write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
from collections.abc import Callable
from typing import Any, cast

from mbeon_chat.core.c2s import ClientConnection
from mbeon_chat.core.context import ServerContext
from mbeon_chat.stream.framing import TcpFraming
from mbeon_chat.stream.negotiation import ServerStream, StreamPolicy

_FRAMING = TcpFraming()
_TLS_READ = 16384  # one TLS record's plaintext at most
_HANDSHAKE_TIMEOUT = 30.0
_ids = itertools.count(1)
_PREFIX = os.urandom(3).hex()


def new_conn_id() -> str:
    return f"{_PREFIX}-{next(_ids)}"


class TcpClientProtocol(asyncio.Protocol):
    """One TCP client connection; also the :class:`Wire` the connection driver writes to."""

    def __init__(
        self,
        ctx: ServerContext,
        policy: Callable[[], StreamPolicy],
        tls_context: Callable[[], ssl.SSLContext | None],
        direct_tls: bool,
    ) -> None:
        self.ctx = ctx
        self._policy = policy
        self._tls_context = tls_context
        self._direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self.conn: ClientConnection | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        #: whether the transport still held unsent bytes after our last flush (only a flush adds to them)
        self._backlog = False
        # TLS over memory BIOs, once STARTTLS is accepted (or from the start for direct TLS)
        self._tls: ssl.SSLObject | None = None
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._handshaking = False
        self._handshake_waiter: asyncio.Future[None] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else str(peer)
        if self._direct_tls:
            ctx = self._tls_context()
            if ctx is None:
                transport.close()
                return
            self._begin_tls(ctx)  # the client speaks first; its stanzas arrive once the handshake is done
        machine = ServerStream(self._policy(), _FRAMING, tls_active=self._direct_tls)
        self.conn = ClientConnection(self.ctx, self, machine, new_conn_id(), remote)

    def data_received(self, data: bytes) -> None:
        if self._tls is None:
            if self.conn is not None:
                self.conn.feed(data)
            return
        self._tls_in.write(data)
        if self._handshaking and not self._handshake_step():
            return
        self._tls_read()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshaking:
            self._handshake_done(ConnectionError("connection lost during the TLS handshake"))
        if self.conn is not None:
            self.conn.lost()

    # --- TLS over memory BIOs ---------------------------------------------------------------------
    def _begin_tls(self, ctx: ssl.SSLContext) -> None:
        self._tls = ctx.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        self._handshaking = True
        self._handshake_timer = asyncio.get_running_loop().call_later(
            _HANDSHAKE_TIMEOUT, self._handshake_expired
        )

    def _handshake_step(self) -> bool:
        """Advance the handshake with what has arrived; True once it is complete."""
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_records()
            return False
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._send_records()  # the alert
            self._handshake_done(exc)
            self._abort()
            return False
        self._send_records()
        self._handshake_done(None)
        return True

    def _handshake_done(self, exc: BaseException | None) -> None:
        self._handshaking = False
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        waiter, self._handshake_waiter = self._handshake_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        if exc is None:
            self.flush()  # what was written while the handshake ran (direct TLS)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._handshaking:
            self._handshake_done(TimeoutError("TLS handshake timed out"))
            self._abort()

    def _tls_read(self) -> None:
        sslobj = self._tls
        assert sslobj is not None
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunk = sslobj.read(_TLS_READ)
                if not chunk:  # close_notify
                    closed = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ValueError):
            closed = True  # a broken record: what came before it is still delivered, then the end
        if self._tls_out.pending:
            self._send_records()  # e.g. a key update answer
        if chunks and self.conn is not None:
            self.conn.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if closed and self.transport is not None:
            self.transport.close()

    def _send_records(self) -> None:
        if self._tls_out.pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._tls_out.read())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- Wire -------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data:
            return
        pending = self._pending
        if not pending:
            if self.transport is None or self.transport.is_closing():
                return
            asyncio.get_running_loop().call_soon(self.flush)
        pending.append(data)
        self._pending_size += len(data)

    def flush(self) -> None:
        """Hand the batched writes to the transport (at the end of the loop turn, or before TLS/close)."""
        pending = self._pending
        if not pending:
            return
        if self._handshaking:
            return  # written once the handshake is done
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        if self.transport is None or self.transport.is_closing():
            return
        if self._tls is not None:
            try:
                self._tls.write(data)
            except (ssl.SSLError, ValueError):
                self._abort()
                return
            data = self._tls_out.read()
        self.transport.write(data)
        self._backlog = self.transport.get_write_buffer_size() > 0

    def write_buffer_size(self) -> int:
        # Exact, without asking the transport per stanza: its buffer grows only when we flush, so when it
        # was empty after the last flush it is still empty now.
        if not self._backlog or self.transport is None:
            return self._pending_size
        return self.transport.get_write_buffer_size() + self._pending_size

    async def start_tls(self) -> None:
        ctx = self._tls_context()
        if ctx is None or self.transport is None:
            raise RuntimeError("TLS is not configured")
        self.flush()  # <proceed/> goes out in the clear, before the handshake
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handshake_waiter = waiter
        self._begin_tls(ctx)
        if self._tls_in.pending:  # the ClientHello came in the same read as <starttls/> (not usual)
            self._handshake_step()
        await waiter

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            if self._tls is not None and not self._handshaking and not self.transport.is_closing():
                with contextlib.suppress(ssl.SSLError, ValueError):
                    self._tls.unwrap()  # queues our close_notify; the peer's is not waited for
                self._send_records()
            self.transport.close()


async def start_tcp_listener(
    ctx: ServerContext,
    host: str,
    port: int,
    policy: Callable[[], StreamPolicy],
    tls_context: Callable[[], ssl.SSLContext | None],
    direct_tls: bool,
    reuse_port: bool = False,
) -> asyncio.Server:
    """``reuse_port``: several worker processes listen on the same address (SO_REUSEPORT); the kernel
    spreads the connections over them."""
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return TcpClientProtocol(ctx, policy, tls_context, direct_tls)

    if direct_tls:
        # One context for the listener, made now as create_server(ssl=...) did; its SNI hook (app.py) moves
        # each handshake to the current certificate.
        listener_ctx = tls_context()
        if listener_ctx is None:
            raise RuntimeError("direct TLS needs a certificate")
        tls_context = lambda: listener_ctx  # noqa: E731
    # TLS, direct or after STARTTLS, is done by the protocol itself (see the module docstring).
    return await loop.create_server(
        factory, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=1024
    )
