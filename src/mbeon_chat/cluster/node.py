"""One server node on the bus: a directory of the other nodes' sessions, and routing to them.

Every node tells the others about its sessions (bound, presence, ended) and keeps theirs in a
:class:`RemoteSessions` directory. The session registry consults it after its own sessions, so the
router and the plugins find a session on another node the way they find a local one: it is a
:class:`~mbeon_chat.core.session.Session` whose connection is a :class:`RemoteConnection`, and writing
to it sends a DELIVER frame to its node. Nothing else in the core knows about nodes.

Components (MUC) keep their state in one place: stanzas for a component domain are forwarded to the home
node (``home``, by default node "0") and routed there.

Known limits of this first version, all per node rather than cluster-wide: ``limits.max_resources``, a
session's plugin data (``session.data``: carbons, CSI ...), and whether a remote session asked for its
roster (``interested`` is taken as true, so it gets roster pushes).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from mbeon_chat.cluster.bus import BROADCAST, Bus, BusMessage, Kind, PayloadParser, stanza_payload
from mbeon_chat.core.context import ServerContext
from mbeon_chat.core.session import Session
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StreamCondition
from mbeon_chat.xmpp.jid import JID, jid_from_str
from mbeon_chat.xmpp.stanza import Stanza

log = structlog.get_logger("mbeon_chat.cluster")
OWNER = "cluster"


class RemoteConnection:
    """The connection of a session bound on another node: what is written to it goes over the bus."""

    transport_name = "cluster"

    def __init__(self, node: ClusterNode, node_id: str, full: str) -> None:
        self.node = node
        self.node_id = node_id
        self.full = full
        self.conn_id = f"{node_id}/{full}"
        self.remote = f"node {node_id}"

    def write_element(self, el: Element) -> None:
        header = {"to": self.full, "tag": el.tag}
        self.node.bus.send(
            BusMessage(Kind.DELIVER, self.node.node_id, self.node_id, header, stanza_payload(el))
        )

    def close_stream(self, condition: StreamCondition | None = None, text: str | None = None) -> None:
        header: dict[str, Any] = {"to": self.full}
        if condition is not None:
            header["condition"] = str(condition)
        if text:
            header["text"] = text
        self.node.bus.send(BusMessage(Kind.KICK, self.node.node_id, self.node_id, header))


class RemoteSessions:
    """Sessions of the other nodes, by full and by bare JID (the registry's ``remote`` directory)."""

    def __init__(self) -> None:
        self.by_full: dict[JID, Session] = {}
        self.by_bare: dict[JID, dict[JID, Session]] = {}

    def get(self, full: JID) -> Session | None:
        return self.by_full.get(full)

    def resources(self, bare: JID) -> list[Session]:
        found = self.by_bare.get(bare)
        return list(found.values()) if found else []

    def available(self, bare: JID) -> list[Session]:
        found = self.by_bare.get(bare)
        return [s for s in found.values() if s.available] if found else []

    def put(self, session: Session) -> None:
        self.remove(session.jid)
        self.by_full[session.jid] = session
        self.by_bare.setdefault(session.bare, {})[session.jid] = session

    def remove(self, full: JID) -> Session | None:
        session = self.by_full.pop(full, None)
        if session is not None:
            resources = self.by_bare.get(session.bare)
            if resources is not None:
                resources.pop(full, None)
                if not resources:
                    del self.by_bare[session.bare]
        return session

    def drop_node(self, node_id: str) -> None:
        for full, session in list(self.by_full.items()):
            if isinstance(session.conn, RemoteConnection) and session.conn.node_id == node_id:
                self.remove(full)

    def __len__(self) -> int:
        return len(self.by_full)


class ClusterNode:
    def __init__(self, ctx: ServerContext, bus: Bus, home: str = "0") -> None:
        self.ctx = ctx
        self.bus = bus
        self.node_id = bus.node_id
        self.home = home
        self.directory = RemoteSessions()
        self._parsers: dict[str, PayloadParser] = {}
        self._regs: list[Any] = []

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Before the listeners open: join the bus, announce this node, learn the others' sessions."""
        hooks = self.ctx.hooks
        self.ctx.registry.remote = self.directory
        if self.node_id != self.home:
            self.ctx.router.forward = self._forward_to_home
        for event, handler in (
            ("session/bound", self._on_bound),
            ("presence/initial", self._on_presence),
            ("presence/changed", self._on_presence),
            ("presence/unavailable", self._on_presence),
            ("session/ended", self._on_ended),
        ):
            self._regs.append(hooks.add(event, handler, priority=10_000, owner=OWNER))
        await self.bus.start(self._on_message)
        self.bus.send(BusMessage(Kind.HELLO, self.node_id))

    async def stop(self) -> None:
        for reg in self._regs:
            self.ctx.hooks.remove(reg)
        self._regs.clear()
        self.ctx.router.forward = None
        self.ctx.registry.remote = None
        await self.bus.stop()

    # --- local sessions -> the other nodes ----------------------------------------------------------
    def _publish(self, session: Session, op: str, dst: str = BROADCAST) -> None:
        if isinstance(session.conn, RemoteConnection):
            return
        header: dict[str, Any] = {"op": op, "jid": str(session.jid)}
        payload = b""
        if op == "presence":
            header["available"] = session.available
            header["priority"] = session.priority
            if session.available and session.presence is not None:
                payload = stanza_payload(session.presence)
        self.bus.send(BusMessage(Kind.SESSION, self.node_id, dst, header, payload))

    def _on_bound(self, session: Session) -> None:
        self._publish(session, "bound")

    def _on_presence(self, session: Session, *_: Any) -> None:
        self._publish(session, "presence")

    def _on_ended(self, session: Session, *_: Any) -> None:
        self._publish(session, "ended")

    # --- the other nodes -> here --------------------------------------------------------------------
    def _on_message(self, msg: BusMessage) -> None:
        if msg.kind is Kind.DELIVER:
            self._on_deliver(msg)
        elif msg.kind is Kind.SESSION:
            self._on_session(msg)
        elif msg.kind is Kind.ROUTE:
            self._on_route(msg)
        elif msg.kind is Kind.KICK:
            self._on_kick(msg)
        elif msg.kind is Kind.HELLO:
            self._on_hello(msg)

    def _parse(self, msg: BusMessage) -> Element:
        parser = self._parsers.get(msg.src)
        if parser is None:
            parser = self._parsers[msg.src] = PayloadParser()
        return parser.parse(msg.payload)

    def _on_deliver(self, msg: BusMessage) -> None:
        session = self.ctx.registry.get_local(jid_from_str(msg.header["to"]))
        if session is None:
            log.debug("cluster.deliver_missed", to=msg.header["to"], node=msg.src)
            return
        # The payload is what a client stream carries: most connections take the bytes as they are, which
        # saves a parse and a serialisation per remote delivery.
        write = getattr(session.conn, "write_serialized", None)
        if write is not None and write(msg.payload, msg.header.get("tag", "")):
            return
        session.send(self._parse(msg))

    def _on_session(self, msg: BusMessage) -> None:
        op = msg.header["op"]
        full = jid_from_str(msg.header["jid"])
        if op == "ended":
            self.directory.remove(full)
            return
        session = self.directory.get(full)
        conn = session.conn if session is not None else None
        if session is None or not isinstance(conn, RemoteConnection) or conn.node_id != msg.src:
            session = Session(RemoteConnection(self, msg.src, str(full)), full)
            session.interested = True
            self.directory.put(session)
        if op == "bound":
            local = self.ctx.registry.get_local(full)
            if local is not None:  # the newer bind wins, as with resource_conflict = "replace" on one node
                local.close(StreamCondition.CONFLICT, "replaced by a new session with the same resource")
        elif op == "presence":
            session.available = bool(msg.header.get("available"))
            session.priority = int(msg.header.get("priority", 0))
            session.presence = self._parse(msg) if msg.payload else None

    def _on_route(self, msg: BusMessage) -> None:
        try:
            stanza = Stanza.parse(self._parse(msg))
        except Exception:
            log.warning("cluster.bad_route", node=msg.src)
            return
        self.ctx.spawn(self.ctx.router.route(stanza, None))

    def _on_kick(self, msg: BusMessage) -> None:
        session = self.ctx.registry.get_local(jid_from_str(msg.header["to"]))
        if session is not None:
            condition = msg.header.get("condition")
            session.close(StreamCondition(condition) if condition else None, msg.header.get("text"))

    def _on_hello(self, msg: BusMessage) -> None:
        """A node (re)started: forget what it had, tell it what we have."""
        self.directory.drop_node(msg.src)
        self._parsers.pop(msg.src, None)
        for session in list(self.ctx.registry):
            if isinstance(session.conn, RemoteConnection):
                continue
            self._publish(session, "bound", msg.src)
            if session.available:
                self._publish(session, "presence", msg.src)

    # --- components live on the home node -----------------------------------------------------------
    def _forward_to_home(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        if to is None or to.domain not in self.ctx.router.components:
            return False
        self.bus.send(BusMessage(Kind.ROUTE, self.node_id, self.home, {}, stanza_payload(stanza.el)))
        return True


async def wait_connected(bus: Bus, timeout: float = 30.0) -> None:
    """For carriers that connect in the background (SocketBus): wait until every peer is reachable."""
    event = getattr(bus, "connected", None)
    if event is not None:
        await asyncio.wait_for(event.wait(), timeout)
