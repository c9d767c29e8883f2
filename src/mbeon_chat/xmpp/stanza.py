"""Typed view of a stanza: routing fields parsed once, plus replies and error replies."""

from __future__ import annotations

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str

MESSAGE = "{%s}message" % ns.CLIENT
PRESENCE = "{%s}presence" % ns.CLIENT
IQ = "{%s}iq" % ns.CLIENT
BODY = "{%s}body" % ns.CLIENT
SUBJECT = "{%s}subject" % ns.CLIENT
THREAD = "{%s}thread" % ns.CLIENT
SHOW = "{%s}show" % ns.CLIENT
STATUS = "{%s}status" % ns.CLIENT
PRIORITY = "{%s}priority" % ns.CLIENT
ERROR = "{%s}error" % ns.CLIENT

KINDS = {MESSAGE: "message", PRESENCE: "presence", IQ: "iq"}
IQ_TYPES = frozenset({"get", "set", "result", "error"})


class Stanza:
    """A message, presence or iq with ``to``/``from``/``type``/``id`` parsed once.

    ``to``/``from_`` are ``None`` when absent. A malformed address raises ``StanzaError(jid-malformed)``
    from :meth:`parse`.
    """

    __slots__ = ("el", "from_", "id", "kind", "to", "type")

    def __init__(self, el: Element, kind: str, to: JID | None, from_: JID | None) -> None:
        self.el = el
        self.kind = kind
        self.to = to
        self.from_ = from_
        attrs = el.attrs
        self.type = attrs.get("type") or (
            "normal" if kind == "message" else "available" if kind == "presence" else ""
        )
        self.id = attrs.get("id")

    @classmethod
    def parse(cls, el: Element) -> Stanza:
        kind = KINDS.get(el.tag)
        if kind is None:
            raise ValueError(f"not a stanza: {el.tag}")
        attrs = el.attrs
        try:
            to_s = attrs.get("to")  # present but empty is malformed too (RFC 7622 3: no empty domainpart)
            to = jid_from_str(to_s) if to_s is not None else None
            from_s = attrs.get("from")
            from_ = jid_from_str(from_s) if from_s is not None else None
        except InvalidJID as exc:
            raise StanzaError(StanzaCondition.JID_MALFORMED, str(exc)) from exc
        return cls(el, kind, to, from_)

    @classmethod
    def unaddressed(cls, el: Element) -> Stanza:
        """A view that ignores the addresses (to answer a stanza whose addresses did not parse)."""
        return cls(el, KINDS.get(el.tag, "message"), None, None)

    def __repr__(self) -> str:
        return f"<Stanza {self.kind} type={self.type} to={self.to} from={self.from_} id={self.id}>"

    def iq_problem(self) -> StanzaError | None:
        """RFC 6120 8.2.3: an iq has one of the four types, and a request has an 'id'; else <bad-request/>."""
        if self.type not in IQ_TYPES:
            return StanzaError(StanzaCondition.BAD_REQUEST, "an iq needs type get, set, result or error")
        if self.id is None and self.type in ("get", "set"):
            return StanzaError(StanzaCondition.BAD_REQUEST, "an iq request needs an 'id'")
        return None

    def set_from(self, jid: JID) -> None:
        self.from_ = jid
        self.el.attrs["from"] = str(jid)

    def set_to(self, jid: JID | None) -> None:
        self.to = jid
        if jid is None:
            self.el.attrs.pop("to", None)
        else:
            self.el.attrs["to"] = str(jid)

    @property
    def payload(self) -> Element | None:
        """The first child element (for an iq: the query)."""
        return self.el.first_child()

    def copy(self) -> Stanza:
        return Stanza(self.el.copy(), self.kind, self.to, self.from_)

    def result(self, payload: Element | None = None) -> Stanza:
        """An iq result for this iq, addressed back to its sender."""
        attrs = {"type": "result"}
        if self.id is not None:
            attrs["id"] = self.id
        if self.from_ is not None:
            attrs["to"] = str(self.from_)
        if self.to is not None:
            attrs["from"] = str(self.to)
        el = Element(IQ, attrs, [payload] if payload is not None else None)
        return Stanza(el, "iq", self.from_, self.to)

    def error_reply(self, error: StanzaError) -> Stanza:
        """The error reply (RFC 6120 8.3.1): same kind and id, swapped addresses, original payload kept."""
        attrs = dict(self.el.attrs)
        attrs["type"] = "error"
        attrs.pop("to", None)
        attrs.pop("from", None)
        if self.from_ is not None:
            attrs["to"] = str(self.from_)
        if self.to is not None:
            attrs["from"] = str(self.to)
        children: list[Element | str] = []
        if self.kind != "iq":
            children = [c for c in self.el.children if not isinstance(c, str)]
        elif (payload := self.payload) is not None and self.type in ("get", "set"):
            children = [payload]
        children.append(error.to_element())
        return Stanza(Element(self.el.tag, attrs, children), self.kind, self.from_, self.to)


def make_message(
    to: JID | str, body: str | None = None, type_: str = "chat", from_: JID | str | None = None
) -> Element:
    el = Element(MESSAGE, {"to": str(to), "type": type_})
    if from_ is not None:
        el.attrs["from"] = str(from_)
    if body is not None:
        el.add(BODY, None, body)
    return el


def make_presence(
    to: JID | str | None = None, type_: str | None = None, from_: JID | str | None = None
) -> Element:
    el = Element(PRESENCE)
    if to is not None:
        el.attrs["to"] = str(to)
    if from_ is not None:
        el.attrs["from"] = str(from_)
    if type_ is not None:
        el.attrs["type"] = type_
    return el
