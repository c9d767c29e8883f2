"""Events produced by the sans-IO stream code. Frozen, slotted values; the driver answers them."""

from __future__ import annotations

from dataclasses import dataclass

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StreamCondition
from mbeon_chat.xmpp.jid import JID


# --- parser level -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamHeader:
    """The peer opened (or restarted) the stream: ``<stream:stream>`` or RFC 7395 ``<open/>``."""

    attrs: dict[str, str]
    default_ns: str
    stream_ns: str


@dataclass(frozen=True, slots=True)
class ElementParsed:
    """A complete top-level element (stanza or nonza)."""

    element: Element
    size: int


@dataclass(frozen=True, slots=True)
class StreamFooter:
    """The peer closed its stream (``</stream:stream>`` or ``<close/>``)."""


ParserEvent = StreamHeader | ElementParsed | StreamFooter


# --- negotiation level (what the driver acts on) -------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamOpened:
    """A stream header was accepted; ``restart`` is true after TLS or SASL."""

    restart: bool


@dataclass(frozen=True, slots=True)
class TlsRequested:
    """Flush the ``<proceed/>``, upgrade the transport, then call ``tls_established()``."""


@dataclass(frozen=True, slots=True)
class CredentialsNeeded:
    """Look up the stored credentials and call ``provide_credentials()`` (may run in a thread)."""

    mechanism: str
    username: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    username: str | None
    condition: str


@dataclass(frozen=True, slots=True)
class BindRequested:
    """Pick the full JID (honouring ``resource`` if free).

    Then call ``bind_succeeded()`` or ``bind_failed()``.
    """

    resource: str | None


@dataclass(frozen=True, slots=True)
class Bound:
    jid: JID


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """XEP-0198 ``<resume previd h/>`` after SASL instead of bind: attach the session ``previd`` to this
    stream with ``resume_succeeded()``, or call ``resume_failed()`` (the client may then bind as usual)."""

    previd: str
    h: int


@dataclass(frozen=True, slots=True)
class PreAuthIq:
    """An iq allowed before authentication (in-band registration); answer with ``send_element()``."""

    element: Element


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    element: Element
    size: int


@dataclass(frozen=True, slots=True)
class NonzaReceived:
    """A top-level element outside ``jabber:client`` after binding (e.g. stream management)."""

    element: Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The stream is over; flush what is pending and close the transport.

    ``condition`` is the stream error sent, ``None`` for a clean close; ``by_peer`` tells who closed.
    """

    condition: StreamCondition | None
    by_peer: bool
    text: str | None = None


Event = (
    StreamOpened
    | TlsRequested
    | CredentialsNeeded
    | Authenticated
    | AuthFailed
    | BindRequested
    | Bound
    | ResumeRequested
    | PreAuthIq
    | StanzaReceived
    | NonzaReceived
    | StreamClosed
)
