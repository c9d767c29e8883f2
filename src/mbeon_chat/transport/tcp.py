"""TCP client listeners: STARTTLS (RFC 6120 5) and direct TLS (XEP-0368). A thin adapter around the core.

Writes are batched: everything written to a connection during one turn of the event loop (a routed
message, its carbons, the replies of a whole read chunk ...) leaves in one ``transport.write`` at the end
of the turn, so one TLS record and one send() carry many stanzas under load.
"""

from __future__ import annotations

import asyncio
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

    # --- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else str(peer)
        machine = ServerStream(self._policy(), _FRAMING, tls_active=self._direct_tls)
        self.conn = ClientConnection(self.ctx, self, machine, new_conn_id(), remote)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.feed(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.lost()

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
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        if self.transport is not None and not self.transport.is_closing():
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
        loop = asyncio.get_running_loop()
        self.flush()  # <proceed/> goes out in the clear, before the handshake
        new = await loop.start_tls(self.transport, self, ctx, server_side=True, ssl_handshake_timeout=30)
        if new is None:
            raise ConnectionError("TLS handshake failed")
        self.transport = new

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()


async def start_tcp_listener(
    ctx: ServerContext,
    host: str,
    port: int,
    policy: Callable[[], StreamPolicy],
    tls_context: Callable[[], ssl.SSLContext | None],
    direct_tls: bool,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return TcpClientProtocol(ctx, policy, tls_context, direct_tls)

    ssl_ctx: ssl.SSLContext | None = None
    if direct_tls:
        ssl_ctx = tls_context()
        if ssl_ctx is None:
            raise RuntimeError("direct TLS needs a certificate")
    return await loop.create_server(
        factory, host, port, ssl=ssl_ctx, reuse_address=True, backlog=1024, ssl_handshake_timeout=30 if ssl_ctx else None
    )
