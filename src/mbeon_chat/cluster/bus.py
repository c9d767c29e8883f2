"""The bus between server nodes: worker processes on one machine now, server machines over Redis later.

One message format for every carrier (:func:`encode` / :func:`decode`), so the in-process bus of the
tests, the Unix-socket mesh between worker processes and a Redis pub/sub bus all move the same bytes::

    frame   = "MB" version:u8 kind:u8 length:u32   (length of what follows)
              header_length:u16 header:JSON payload
    header  = {"src": node, "dst": node | "*", ...kind-specific keys}
    payload = a stanza serialised in the jabber:client namespace without a root xmlns (what a client
              stream carries), or nothing

The receiving node parses payloads with a long-lived stream parser per peer (:class:`PayloadParser`),
as it parses a client's stream, so a routed stanza costs one parse and one serialisation.

Carriers implement :class:`Bus`: ``send`` is fire-and-forget and never blocks (frames to one peer keep
their order); ``start`` takes the handler called with each decoded :class:`BusMessage` from other nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.parser import StreamParser
from mbeon_chat.xmpp.element import Element

log = structlog.get_logger("mbeon_chat.cluster")

VERSION = 1
BROADCAST = "*"
_PREFIX = struct.Struct("!2sBBI")  # magic, version, kind, length of the rest
_HLEN = struct.Struct("!H")
_MAX_QUEUED = 10_000  # frames kept for a peer that is not connected
_STREAM_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


class Kind(IntEnum):
    HELLO = 1  # a node announces itself (and asks for the others' sessions)
    SESSION = 2  # directory: a session was bound, changed presence or ended
    DELIVER = 3  # hand a stanza to the local session with the full JID header["to"]
    ROUTE = 4  # route a stanza on the receiving node (components homed there, e.g. MUC)
    KICK = 5  # close the local session header["to"] (a newer bind of the same full JID elsewhere)


@dataclass(frozen=True, slots=True)
class BusMessage:
    kind: Kind
    src: str
    dst: str = BROADCAST
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


class BusError(ValueError):
    pass


def encode(msg: BusMessage) -> bytes:
    header = json.dumps({**msg.header, "src": msg.src, "dst": msg.dst}, separators=(",", ":")).encode()
    body = _HLEN.pack(len(header)) + header + msg.payload
    return _PREFIX.pack(b"MB", VERSION, int(msg.kind), len(body)) + body


def frame_length(buf: bytes | bytearray, offset: int = 0) -> int | None:
    """The total length of the frame starting at ``offset``, or None if its prefix is not complete yet."""
    if len(buf) - offset < _PREFIX.size:
        return None
    magic, version, _kind, length = _PREFIX.unpack_from(buf, offset)
    if magic != b"MB" or version != VERSION:
        raise BusError(f"not a bus frame (magic {magic!r}, version {version})")
    return _PREFIX.size + int(length)


def decode(frame: bytes | bytearray | memoryview) -> BusMessage:
    _magic, _version, kind, length = _PREFIX.unpack_from(frame, 0)
    start = _PREFIX.size
    (hlen,) = _HLEN.unpack_from(frame, start)
    header = json.loads(bytes(frame[start + _HLEN.size : start + _HLEN.size + hlen]))
    payload = bytes(frame[start + _HLEN.size + hlen : start + length])
    src = header.pop("src")
    dst = header.pop("dst")
    return BusMessage(Kind(kind), src, dst, header, payload)


def stanza_payload(el: Element) -> bytes:
    """A stanza as bus payload: its client-stream serialisation (no root xmlns)."""
    return el.to_string("jabber:client").encode()


class PayloadParser:
    """Parses stanza payloads from one peer with a long-lived stream parser (as a client stream is)."""

    def __init__(self) -> None:
        self._parser = StreamParser(max_stanza_size=16 * 1048576, max_depth=1000)
        self._parser.receive_data(_STREAM_HEADER)

    def parse(self, payload: bytes) -> Element:
        events = self._parser.receive_data(payload)
        if len(events) != 1 or not isinstance(events[0], ElementParsed):
            raise BusError("a payload must be exactly one element")
        return events[0].element


Handler = Callable[[BusMessage], None]


class Bus(Protocol):
    node_id: str

    async def start(self, handler: Handler) -> None: ...

    async def stop(self) -> None: ...

    def send(self, msg: BusMessage) -> None: ...

    def peers(self) -> Iterable[str]: ...


# --- one process: tests, and the shape of the others ------------------------------------------------------
class LocalHub:
    """Connects :class:`LocalBus` nodes in one process (tests; several Apps in one event loop)."""

    def __init__(self) -> None:
        self.nodes: dict[str, LocalBus] = {}


class LocalBus:
    """In-process carrier. Frames still go through :func:`encode`/:func:`decode` so tests cover the format."""

    def __init__(self, hub: LocalHub, node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self.hub.nodes[self.node_id] = self

    async def stop(self) -> None:
        self.hub.nodes.pop(self.node_id, None)
        self._handler = None

    def peers(self) -> Iterable[str]:
        return [n for n in self.hub.nodes if n != self.node_id]

    def send(self, msg: BusMessage) -> None:
        frame = encode(msg)
        loop = asyncio.get_running_loop()
        targets = self.peers() if msg.dst == BROADCAST else [msg.dst]
        for node_id in targets:
            node = self.hub.nodes.get(node_id)
            if node is not None and node._handler is not None:
                loop.call_soon(node._receive, frame)

    def _receive(self, frame: bytes) -> None:
        if self._handler is not None:
            self._handler(decode(frame))


# --- worker processes on one machine: a mesh of Unix sockets ---------------------------------------------
class _PeerLink(asyncio.Protocol):
    """One connection to or from a peer node; writes batched per loop turn, frames split on read."""

    def __init__(self, bus: SocketBus) -> None:
        self.bus = bus
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        offset = 0
        try:
            while True:
                total = frame_length(buf, offset)
                if total is None or len(buf) - offset < total:
                    break
                self.bus._deliver(bytes(buf[offset : offset + total]))
                offset += total
        except BusError as exc:
            log.error("bus.bad_frame", error=str(exc))
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            if offset:
                del buf[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        self.bus._link_lost(self)

    def write(self, frame: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(frame)

    def flush(self) -> None:
        if self._pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._pending))
        self._pending.clear()


class SocketBus:
    """Worker processes of one server: node ``i`` listens on ``<directory>/bus-<i>.sock`` and connects to
    every other node's socket. A frame goes straight to its destination (or to all for broadcasts)."""

    def __init__(self, directory: Path, node_id: str, nodes: Iterable[str]) -> None:
        self.directory = directory
        self.node_id = node_id
        self.nodes = [n for n in nodes if n != node_id]
        self._handler: Handler | None = None
        self._server: asyncio.AbstractServer | None = None
        self._out: dict[str, _PeerLink] = {}
        self._links: set[_PeerLink] = set()
        self._connecting: dict[str, asyncio.Task[None]] = {}
        self._queued: dict[str, list[bytes]] = {}  # frames for a peer not (yet, again) connected
        self._running = False
        self.connected = asyncio.Event()

    def _path(self, node_id: str) -> Path:
        return self.directory / f"bus-{node_id}.sock"

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(self.node_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: self._track(_PeerLink(self)), str(path))
        self._running = True
        for node_id in self.nodes:
            self._connect(node_id)
        if not self.nodes:
            self.connected.set()

    def _track(self, link: _PeerLink) -> _PeerLink:
        self._links.add(link)
        return link

    def _connect(self, node_id: str) -> None:
        if self._running and node_id not in self._connecting and node_id not in self._out:
            task = asyncio.get_running_loop().create_task(self._connect_one(node_id))
            self._connecting[node_id] = task
            task.add_done_callback(lambda _t: self._connecting.pop(node_id, None))

    async def _connect_one(self, node_id: str) -> None:
        """Connect to a peer, retrying while it is not up (it may start later or restart)."""
        loop = asyncio.get_running_loop()
        delay = 0.02
        while self._running and node_id not in self._out:
            try:
                _, link = await loop.create_unix_connection(
                    lambda: self._track(_PeerLink(self)), str(self._path(node_id))
                )
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._out[node_id] = link
            for frame in self._queued.pop(node_id, []):
                link.write(frame)
        if all(n in self._out for n in self.nodes):
            self.connected.set()

    async def stop(self) -> None:
        self._running = False
        for task in list(self._connecting.values()):
            task.cancel()
        for link in list(self._links):
            link.flush()
            if link.transport is not None:
                link.transport.close()
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self._path(self.node_id).unlink()
        self._handler = None

    def peers(self) -> Iterable[str]:
        return list(self._out)

    def send(self, msg: BusMessage) -> None:
        frame = encode(msg)
        if msg.dst == BROADCAST:
            for node_id in self.nodes:
                link = self._out.get(node_id)
                if link is not None:
                    link.write(frame)
                else:
                    queued = self._queued.setdefault(node_id, [])
                    if len(queued) < _MAX_QUEUED:
                        queued.append(frame)
                    self._connect(node_id)
            return
        link = self._out.get(msg.dst)
        if link is None:
            if msg.dst not in self.nodes:
                log.warning("bus.no_route", node=msg.dst, kind=msg.kind.name)
                return
            queued = self._queued.setdefault(msg.dst, [])
            if len(queued) < _MAX_QUEUED:
                queued.append(frame)
            self._connect(msg.dst)
            return
        link.write(frame)

    def _deliver(self, frame: bytes) -> None:
        if self._handler is not None:
            try:
                self._handler(decode(frame))
            except Exception:
                log.exception("bus.handler_failed")

    def _link_lost(self, link: _PeerLink) -> None:
        self._links.discard(link)
        for node_id, out in list(self._out.items()):
            if out is link:
                del self._out[node_id]
                self.connected.clear()
                self._connect(node_id)  # the peer restarts: frames queue until it is back
