"""How a stream is written on the wire.

TCP carries one XML document; WebSocket (RFC 7395) one element per message.

The negotiation machine is the same for both; only the opening, closing and per-element serialisation differ.
"""

from __future__ import annotations

from typing import Protocol

from mbeon_chat.stream.parser import FramedParser, StreamParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element, escape_attr

_STREAM_PREFIXES = {ns.STREAMS: "stream"}
_STREAM_DECL = ' xmlns:stream="%s"' % ns.STREAMS


class Framing(Protocol):
    name: str
    #: True when each element is a separate transport message (WebSocket).
    message_oriented: bool

    def new_parser(self, max_stanza_size: int, max_depth: int) -> StreamParser | FramedParser: ...

    def header(self, attrs: dict[str, str]) -> bytes: ...

    def footer(self) -> bytes: ...

    def element(self, el: Element) -> bytes: ...

    def stanza_text(self, el: Element) -> str: ...


def _attrs(attrs: dict[str, str]) -> str:
    return "".join(f' {k}="{escape_attr(v)}"' for k, v in attrs.items())


class TcpFraming:
    name = "tcp"
    message_oriented = False

    def new_parser(self, max_stanza_size: int, max_depth: int) -> StreamParser:
        return StreamParser(max_stanza_size, max_depth)

    def header(self, attrs: dict[str, str]) -> bytes:
        return (
            "<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\"%s%s>" % (_STREAM_DECL, _attrs(attrs))
        ).encode()

    def footer(self) -> bytes:
        return b"</stream:stream>"

    def element(self, el: Element) -> bytes:
        return el.to_string(ns.CLIENT, _STREAM_PREFIXES).encode()

    def stanza_text(self, el: Element) -> str:
        return el.to_string(ns.CLIENT)


class WebSocketFraming:
    name = "websocket"
    message_oriented = True

    def new_parser(self, max_stanza_size: int, max_depth: int) -> FramedParser:
        return FramedParser(max_stanza_size, max_depth)

    def header(self, attrs: dict[str, str]) -> bytes:
        return ('<open xmlns="%s"%s/>' % (ns.FRAMING, _attrs(attrs))).encode()

    def footer(self) -> bytes:
        return ('<close xmlns="%s"/>' % ns.FRAMING).encode()

    def element(self, el: Element) -> bytes:
        if el.tag.startswith("{" + ns.STREAMS + "}"):
            text = el.to_string("", _STREAM_PREFIXES)
            cut = text.index(" ") if " " in text.split(">", 1)[0] else text.index(">")
            if text[cut - 1] == "/":
                cut -= 1
            return (text[:cut] + _STREAM_DECL + text[cut:]).encode()
        return el.to_string("").encode()

    def stanza_text(self, el: Element) -> str:
        return el.to_string("")
