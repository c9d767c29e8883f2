"""Incremental XML stream parsers (expat): TCP framing (one long document) and RFC 7395 framing.

Both turn bytes into :mod:`events` and enforce the restricted XML profile of RFC 6120 11.1 (no DTD,
entity declarations, comments or processing instructions) and the size/depth limits. Violations raise
:class:`StreamError` with the condition to send. Any chunking of the same bytes yields the same events.
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from mbeon_chat.stream.events import ElementParsed, ParserEvent, StreamFooter, StreamHeader
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StreamCondition, StreamError

_SEP = "}"
#: pyexpat's character data buffer (its default is 8 KiB, kept per connection): longer text arrives in
#: several callbacks and is joined again, so the tree is the same.
_TEXT_BUFFER = 1024
_STREAM_TAG = "{%s}stream" % ns.STREAMS
_OPEN_TAG = "{%s}open" % ns.FRAMING
_CLOSE_TAG = "{%s}close" % ns.FRAMING


def _utf8_only(what: str) -> StreamError:
    text = f"{what}: XMPP streams are UTF-8 (RFC 6120 11.6)"
    return StreamError(StreamCondition.UNSUPPORTED_ENCODING, text)


def _check_head(head: bytes) -> None:
    """Refuse UTF-16/32 by their first bytes (expat detects and accepts them despite the UTF-8 override)."""
    if head[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in head[:4]:
        raise _utf8_only("not UTF-8")


def _restricted(what: str) -> StreamError:
    return StreamError(StreamCondition.RESTRICTED_XML, f"{what} not allowed in XMPP streams")


class _ExpatTree:
    """Shared expat plumbing: builds Elements, tracks depth, size and namespace declarations."""

    def __init__(self, max_stanza_size: int, max_depth: int) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.events: list[ParserEvent] = []
        self._names: dict[str, str] = {}
        self._stack: list[Element] = []
        self._ns_decls: dict[str, str] = {}
        self._stanza_start = 0
        self._boundary = 0
        self._fed = 0
        # a text node longer than the character buffer: its children list and its pieces so far
        self._text_run: list[Element | str] | None = None
        self._text_parts: list[str] = []
        self._parser = self._new_parser()

    def _new_parser(self) -> Any:
        p = expat.ParserCreate("UTF-8", _SEP)
        p.buffer_size = _TEXT_BUFFER  # before buffer_text, which allocates the buffer
        p.buffer_text = True
        p.ordered_attributes = False
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartNamespaceDeclHandler = self._ns_decl
        p.StartDoctypeDeclHandler = self._doctype
        p.XmlDeclHandler = self._xml_decl
        p.EntityDeclHandler = self._entity
        p.CommentHandler = self._comment
        p.ProcessingInstructionHandler = self._pi
        p.ExternalEntityRefHandler = self._external
        p.DefaultHandler = self._default
        return p

    # --- expat callbacks -------------------------------------------------------------------
    def _name(self, raw: str) -> str:
        name = self._names.get(raw)
        if name is None:
            name = "{" + raw if _SEP in raw else raw
            if len(self._names) < 4096:
                self._names[raw] = name
        return name

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if not self._stack:
            self._ns_decls[prefix or ""] = uri or ""

    def _start(self, raw: str, attrs: dict[str, str]) -> None:
        # Called per element: locals and a reused attribute dict (expat makes a new one per call; it is
        # copied only when an attribute name carries a namespace).
        if self._text_run is not None:
            self._end_text()
        tag = self._names.get(raw) or self._name(raw)
        if attrs:
            for k in attrs:
                if _SEP in k:
                    attrs = {self._name(k) if _SEP in k else k: v for k, v in attrs.items()}
                    break
        stack = self._stack
        depth = len(stack)
        if depth >= self.max_depth:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "element nesting too deep")
        el = Element(tag, attrs)
        if stack:
            stack[-1].children.append(el)
        stack.append(el)
        self.on_start(el, depth)

    def _end(self, raw: str) -> None:
        if self._text_run is not None:
            self._end_text()
        stack = self._stack
        el = stack.pop()
        self.on_end(el, len(stack))

    def _chars(self, data: str) -> None:
        stack = self._stack
        if len(stack) > self.base_depth:
            children = stack[-1].children
            if self._text_run is children:  # the same text node, past the character buffer's size
                self._text_parts.append(data)
                return
            if self._text_run is not None:
                self._end_text()
            self._text_run = children
            self._text_parts = [data]
            children.append(data)
        elif data.strip():
            raise StreamError(StreamCondition.NOT_WELL_FORMED, "text outside of stanzas")
        else:
            self._boundary = self._parser.CurrentByteIndex + len(data)

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise _utf8_only(f"encoding {encoding!r} declared")

    def _end_text(self) -> None:
        run, parts = self._text_run, self._text_parts
        self._text_run = None
        if run is not None and len(parts) > 1:
            run[-1] = "".join(parts)
        self._text_parts = []

    def _doctype(self, *args: Any) -> None:
        raise _restricted("document type declarations are")

    def _entity(self, *args: Any) -> None:
        raise _restricted("entity declarations are")

    def _comment(self, data: str) -> None:
        raise _restricted("comments are")

    def _pi(self, target: str, data: str) -> None:
        raise _restricted("processing instructions are")

    def _external(self, *args: Any) -> int:
        raise _restricted("external entities are")

    def _default(self, data: str) -> None:
        # Reached for undeclared entity references and internal DTD text; never legitimate here.
        if data.startswith("&"):
            raise _restricted("entity references other than the predefined ones are")

    # --- hooks for subclasses --------------------------------------------------------------
    base_depth = 1

    def on_start(self, el: Element, depth: int) -> None:
        raise NotImplementedError

    def on_end(self, el: Element, depth: int) -> None:
        raise NotImplementedError

    def _feed(self, data: bytes, final: bool = False) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            code = exc.code
            if code == expat.errors.codes.get(expat.errors.XML_ERROR_UNDEFINED_ENTITY):
                raise _restricted("undefined entity references are") from None
            if code == expat.errors.codes.get(expat.errors.XML_ERROR_UNBOUND_PREFIX):
                raise StreamError(StreamCondition.BAD_NAMESPACE_PREFIX, str(exc)) from None
            if code == expat.errors.codes.get(expat.errors.XML_ERROR_INCORRECT_ENCODING) or (
                code == expat.errors.codes.get(expat.errors.XML_ERROR_UNKNOWN_ENCODING)
            ):
                raise StreamError(StreamCondition.UNSUPPORTED_ENCODING, str(exc)) from None
            raise StreamError(StreamCondition.NOT_WELL_FORMED, str(exc)) from None


class StreamParser(_ExpatTree):
    """TCP framing: ``<stream:stream>`` opens one long document; depth-1 children are stanzas."""

    def __init__(self, max_stanza_size: int = 262144, max_depth: int = 32) -> None:
        super().__init__(max_stanza_size, max_depth)
        self._closed = False
        self._head = b""  # the first bytes of the stream (UTF-16/32 detection)

    def receive_data(self, data: bytes) -> list[ParserEvent]:
        if self._closed:
            if data.strip():
                raise StreamError(StreamCondition.NOT_WELL_FORMED, "data after the stream was closed")
            return []
        self.events = []
        if self._fed < 4:
            self._head = (self._head + data)[:4]
            _check_head(self._head)
        self._fed += len(data)
        self._feed(data)
        if self._fed - self._boundary > self.max_stanza_size:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "stanza too large")
        return self.events

    def on_start(self, el: Element, depth: int) -> None:
        if depth == 1:
            self._stanza_start = self._parser.CurrentByteIndex
        elif depth == 0:
            if el.tag != _STREAM_TAG:
                if el.tag.endswith("}stream"):
                    raise StreamError(StreamCondition.INVALID_NAMESPACE, "wrong stream namespace")
                raise StreamError(StreamCondition.INVALID_NAMESPACE, "expected <stream:stream>")
            self._boundary = self._parser.CurrentByteIndex
            self.events.append(StreamHeader(el.attrs, self._ns_decls.get("", ""), ns.STREAMS))

    def on_end(self, el: Element, depth: int) -> None:
        if depth == 1:
            end = self._parser.CurrentByteIndex
            size = end - self._stanza_start
            if size > self.max_stanza_size:
                raise StreamError(StreamCondition.POLICY_VIOLATION, "stanza too large")
            self._stack[0].children.clear()
            self._boundary = end
            self.events.append(ElementParsed(el, size))
        elif depth == 0:
            self._closed = True
            self.events.append(StreamFooter())


class FramedParser(_ExpatTree):
    """RFC 7395 framing: each WebSocket message is one complete element; ``<open/>``/``<close/>`` frame it."""

    base_depth = 0

    def __init__(self, max_stanza_size: int = 262144, max_depth: int = 32) -> None:
        super().__init__(max_stanza_size, max_depth)
        self._done: Element | None = None

    def receive_data(self, data: bytes) -> list[ParserEvent]:
        """Parse one WebSocket message."""
        if len(data) > self.max_stanza_size:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "stanza too large")
        _check_head(data)
        self._parser = self._new_parser()
        self._stack = []
        self._ns_decls = {}
        self._done = None
        self._feed(data, final=True)
        el = self._done
        if el is None:
            raise StreamError(StreamCondition.NOT_WELL_FORMED, "incomplete element")
        if el.tag == _OPEN_TAG:
            return [StreamHeader(el.attrs, ns.CLIENT, ns.FRAMING)]
        if el.tag == _CLOSE_TAG:
            return [StreamFooter()]
        if el.tag == _STREAM_TAG:
            raise StreamError(StreamCondition.INVALID_XML, "<stream:stream> is not used over WebSocket")
        return [ElementParsed(el, len(data))]

    def on_start(self, el: Element, depth: int) -> None:
        pass

    def on_end(self, el: Element, depth: int) -> None:
        if depth == 0:
            self._done = el
