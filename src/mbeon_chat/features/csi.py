"""XEP-0352: Client State Indication (``urn:xmpp:csi:0``).

A client in the background sends ``<inactive/>``; until it sends ``<active/>`` the server holds back what
can wait: presence updates (available/unavailable, MUC occupants included) and messages that carry nothing a
user would be woken up for (chat states, receipts, chat markers, PEP notifications). A stanza that matters
(an iq, a message with a body or any payload not known to be noise, a subscription request, an error)
goes out at once, after everything held before it, so the order never changes. ``<active/>`` and a full
buffer (``max_held``) send all of it.

The buffer is the connection's outbound stage (``connection.outbound``); when the connection is lost with
stream management (XEP-0198) on, that plugin takes what is held with ``drain()`` and sends it on resumption.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.stanza import MESSAGE, PRESENCE

DEPENDS = ()

CSI = f"{{{ns.CSI}}}"
ACTIVE, INACTIVE = CSI + "active", CSI + "inactive"
#: Message payloads that can wait for the client to become active.
NOISE = frozenset(
    {
        "http://jabber.org/protocol/chatstates",
        "urn:xmpp:receipts",
        "urn:xmpp:chat-markers:0",
        "urn:xmpp:hints",
        ns.SID,
        ns.DELAY,
        "http://jabber.org/protocol/pubsub#event",
    }
)
_THREAD = f"{{{ns.CLIENT}}}thread"
_CARBONS = frozenset({f"{{{ns.CARBONS}}}sent", f"{{{ns.CARBONS}}}received"})
_FORWARDED = f"{{{ns.FORWARD}}}forwarded"
_URGENT_PRESENCE = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed", "error"})


@dataclass(frozen=True)
class Options:
    max_held: int = 256  # stanzas held back per inactive connection; one more sends them all

    def validate(self) -> None:
        if self.max_held < 0:
            raise ValueError("max_held: must not be negative")


def urgent(el: Element) -> bool:
    """Whether a stanza for an inactive client goes out now (and takes what was held with it)."""
    tag = el.tag
    if tag == PRESENCE:
        return el.attrs.get("type") in _URGENT_PRESENCE
    if tag != MESSAGE:
        return True  # iq: someone waits for the answer
    if el.attrs.get("type") == "error":
        return True
    for child in el.elements():
        if child.tag in _CARBONS:  # a carbon copy matters as much as the message it carries
            forwarded = child.find(_FORWARDED)
            inner = forwarded.find(MESSAGE) if forwarded is not None else None
            if inner is not None and urgent(inner):
                return True
        elif child.ns not in NOISE and child.tag != _THREAD:
            return True  # a body, an encrypted payload, an invitation, anything unknown
    return False


class Buffer:
    """The outbound stage of an inactive connection."""

    __slots__ = ("conn", "held", "limit", "owner")

    def __init__(self, conn: Any, limit: int, owner: Any, held: deque[Element] | None = None) -> None:
        self.conn = conn
        self.limit = limit
        self.owner = owner  # the plugin version that installed it (a reload hands buffers over)
        self.held: deque[Element] = held if held is not None else deque()

    def __call__(self, el: Element) -> None:
        if urgent(el):
            self.flush()
            self.conn.transmit(el)
            return
        self.held.append(el)
        if len(self.held) > self.limit:
            self.flush()

    def flush(self) -> None:
        held = self.held
        while held:  # popleft: a stanza written meanwhile queues behind the others
            self.conn.transmit(held.popleft())

    def drain(self) -> list[Element]:
        held = list(self.held)
        self.held.clear()
        return held


class ClientState:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options

    def on_nonza(self, conn: Any, el: Element) -> bool:
        if el.tag == INACTIVE:
            if not isinstance(conn.outbound, Buffer):
                conn.outbound = Buffer(conn, self.options.max_held, self)
            return True
        if el.tag == ACTIVE:
            stage = conn.outbound
            if isinstance(stage, Buffer):
                stage.flush()
                conn.outbound = None
            return True
        return False

    def _buffers(self) -> list[tuple[Any, Any]]:
        out = []
        for session in self.api.sessions:
            conn = session.conn
            stage = getattr(conn, "outbound", None)
            if stage is not None and getattr(stage, "owner", None) is not None and hasattr(stage, "drain"):
                out.append((conn, stage))
        return out

    def adopt(self) -> None:
        """After a reload: the previous version's buffers become this version's (same held stanzas)."""
        for conn, stage in self._buffers():
            if stage.owner is not self:
                conn.outbound = Buffer(conn, self.options.max_held, self, stage.held)

    def unload(self) -> None:
        """Unloaded for good: every client is treated as active again."""
        for conn, stage in self._buffers():
            if stage.owner is self:
                stage.flush()
                conn.outbound = None


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    service = ClientState(api, options)
    api.add_stream_feature(lambda: Element(CSI + "csi"))
    api.on("nonza/in", service.on_nonza)
    api.on_activate(service.adopt)
    api.on_unload(service.unload)
