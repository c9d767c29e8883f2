"""The server side of one XMPP stream as a sans-IO state machine (RFC 6120 4-7, RFC 7395).

Feed it bytes with :meth:`ServerStream.receive_data`; it returns :mod:`events` and queues bytes that the
driver collects with :meth:`ServerStream.data_to_send`. Anything that needs I/O (the TLS handshake, a
credentials lookup, choosing a resource) is an event the driver answers by calling back into the machine.
TCP and WebSocket share this machine; only the :class:`Framing` differs.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from mbeon_chat.stream import events as ev
from mbeon_chat.stream.framing import Framing
from mbeon_chat.stream.sasl import (
    Challenge,
    NeedCredentials,
    SaslFailure,
    ScramCredentials,
    ServerMechanism,
    Step,
    Success,
    make_mechanism,
    mechanisms_for,
)
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError, StreamCondition, StreamError
from mbeon_chat.xmpp.jid import JID, InvalidJID

_TLS = "{%s}" % ns.TLS
_SASL = "{%s}" % ns.SASL
_SM = f"{{{ns.SM}}}"
_IQ = "{%s}iq" % ns.CLIENT
_STANZAS = frozenset({"{%s}message" % ns.CLIENT, "{%s}presence" % ns.CLIENT, _IQ})


class State(StrEnum):
    EXPECT_HEADER = "expect-header"  # waiting for the (re)opening stream header
    NEGOTIATING = "negotiating"  # features sent, waiting for STARTTLS / SASL / bind
    TLS_PENDING = "tls-pending"  # <proceed/> sent; the driver is upgrading the transport
    SASL = "sasl"  # a SASL exchange is running
    BIND_PENDING = "bind-pending"  # the driver is choosing the full JID
    RESUME_PENDING = "resume-pending"  # the driver is looking for the session to resume (XEP-0198)
    ESTABLISHED = "established"  # stanzas flow
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """What this listener offers; built by the core from the configuration."""

    domains: frozenset[str]
    default_domain: str
    tls_available: bool = True
    tls_required: bool = True
    sasl_mechanisms: Sequence[str] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
    allow_registration: bool = False
    max_stanza_size: int = 262144
    max_depth: int = 32
    max_auth_attempts: int = 3
    scram_iterations: int = 4096
    lang: str = "en"
    session_features: Callable[[], Sequence[Element]] = field(default=lambda: ())
    nonce_factory: Callable[[], str] | None = None


class ServerStream:
    """One client-to-server stream, from the first byte to the closing tag."""

    def __init__(self, policy: StreamPolicy, framing: Framing, *, tls_active: bool = False) -> None:
        self.policy = policy
        self.framing = framing
        self.tls_active = tls_active
        self.state = State.EXPECT_HEADER
        self.domain = policy.default_domain
        self.username: str | None = None
        self.jid: JID | None = None
        self.lang = policy.lang
        self.stream_id = ""
        self._out: list[bytes] = []
        self._parser = framing.new_parser(policy.max_stanza_size, policy.max_depth)
        self._header_sent = False
        self._restarts = 0
        self._mechanism: ServerMechanism | None = None
        self._auth_failures = 0
        self._events: list[ev.Event] = []
        self._previd = ""
        self._peer: str | None = None  # the client's JID from its stream header's 'from'

    # --- the driver's side --------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[ev.Event]:
        """Feed bytes (for WebSocket: one message). Returns what happened, in order."""
        events: list[ev.Event] = []
        self._events = events
        if self.state in (State.CLOSED, State.TLS_PENDING):
            return events
        try:
            for item in self._parser.receive_data(data):
                if self._stopped():
                    break
                if isinstance(item, ev.ElementParsed):
                    self._on_element(item.element, item.size)
                elif isinstance(item, ev.StreamHeader):
                    self._on_header(item)
                else:
                    self._on_footer()
        except StreamError as exc:
            self._fail(exc.condition, exc.text)
        return events

    def _stopped(self) -> bool:
        """Closed, or STARTTLS accepted: plaintext that came after <starttls/> is dropped, never acted on."""
        return self.state in (State.CLOSED, State.TLS_PENDING)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def data_chunks(self) -> list[bytes]:
        """Like :meth:`data_to_send`, but one item per element (for message-oriented transports)."""
        out = self._out
        self._out = []
        return out

    def send_element(self, el: Element) -> None:
        self._out.append(self.framing.element(el))

    def close(self, condition: StreamCondition | None = None, text: str | None = None) -> list[ev.Event]:
        """Close from our side: with a stream error when ``condition`` is given."""
        self._events = []
        if self.state is not State.CLOSED:
            if condition is None:
                self._out.append(self.framing.footer())
                self.state = State.CLOSED
                self._events.append(ev.StreamClosed(None, by_peer=False))
            else:
                self._fail(condition, text)
        return self._events

    def tls_established(self) -> None:
        """The transport now speaks TLS: expect a fresh stream header (RFC 6120 5.4.3.3)."""
        self.tls_active = True
        self._restart()

    def provide_credentials(self, creds: ScramCredentials | None) -> list[ev.Event]:
        """Answer :class:`CredentialsNeeded`. For PLAIN this runs PBKDF2: call it off the event loop."""
        self._events = []
        mech = self._mechanism
        if self.state is State.SASL and mech is not None:
            self._sasl_step(lambda: mech.credentials(creds))
        return self._events

    def bind_succeeded(self, jid: JID, iq_id: str | None) -> list[ev.Event]:
        self._events = []
        if self.state is State.BIND_PENDING:
            self.jid = jid
            self.state = State.ESTABLISHED
            bind = Element("{%s}bind" % ns.BIND)
            bind.add("{%s}jid" % ns.BIND, None, str(jid))
            self.send_element(_iq_reply(iq_id, bind))
            self._events.append(ev.Bound(jid))
        return self._events

    def bind_failed(self, error: StanzaError, iq_id: str | None) -> None:
        if self.state is State.BIND_PENDING:
            self.state = State.NEGOTIATING
            self.send_element(_iq_error(iq_id, error))

    def resume_succeeded(self, jid: JID, h: int) -> list[ev.Event]:
        """Answer :class:`ResumeRequested`: ``h`` counts the stanzas the server handled on the old stream."""
        self._events = []
        if self.state is State.RESUME_PENDING:
            self.jid = jid
            self.state = State.ESTABLISHED
            self.send_element(Element(_SM + "resumed", {"previd": self._previd, "h": str(h)}))
            self._events.append(ev.Bound(jid))
        return self._events

    def resume_failed(self) -> None:
        """No such session (or not this user's): the client may bind a new one."""
        if self.state is State.RESUME_PENDING:
            self.state = State.NEGOTIATING
            self._sm_failed(StanzaCondition.ITEM_NOT_FOUND)

    # --- parser events ------------------------------------------------------------------------
    def _on_header(self, header: ev.StreamHeader) -> None:
        if self.state is not State.EXPECT_HEADER:
            raise StreamError(StreamCondition.NOT_WELL_FORMED, "unexpected stream header")
        attrs = header.attrs
        lang = attrs.get("{%s}lang" % ns.XML)
        if lang:
            self.lang = lang
        host_error = self._check_to(attrs.get("to"))
        # RFC 6120 4.7.2: answer the client's 'from' (its JID) with 'to'; none when it gave none or a bad one.
        try:
            self._peer = str(JID.parse(attrs["from"])) if "from" in attrs else None
        except InvalidJID:
            self._peer = None
        version = attrs.get("version")
        self._send_header(with_version=version is not None)  # 4.7.5: no version in reply to a 0.9 header
        if header.default_ns != ns.CLIENT:
            raise StreamError(
                StreamCondition.INVALID_NAMESPACE, "the content namespace must be jabber:client"
            )
        if host_error:
            raise StreamError(StreamCondition.HOST_UNKNOWN, host_error)
        if version is None or not version.startswith("1."):
            raise StreamError(StreamCondition.UNSUPPORTED_VERSION, "XMPP 1.0 streams only")
        self.state = State.NEGOTIATING
        self._events.append(ev.StreamOpened(restart=self._restarts > 0))
        self.send_element(self._features())

    def _check_to(self, to: str | None) -> str | None:
        """Take the domain the client asked for (named by our header's 'from'), or say what is wrong."""
        if to is None:
            return None
        try:
            domain = JID.parse(to).domain
        except InvalidJID:
            return "invalid 'to' address"
        if domain not in self.policy.domains:
            return "this server does not serve that domain"
        if self._restarts and domain != self.domain:
            return "the domain changed on restart"
        self.domain = domain
        return None

    def _on_footer(self) -> None:
        if self.state is not State.CLOSED:
            self._out.append(self.framing.footer())
            self.state = State.CLOSED
            self._events.append(ev.StreamClosed(None, by_peer=True))

    def _on_element(self, el: Element, size: int) -> None:
        if self.state is State.ESTABLISHED:
            if el.tag in _STANZAS:
                if (
                    el.tag == _IQ
                    and el.get("type") == "set"
                    and el.get("to") in (None, self.domain)
                    and el.find("{%s}session" % ns.SESSION) is not None
                ):  # RFC 3921 3: the legacy session request to the server; nothing to do but answer it
                    self.send_element(_iq_reply(el.get("id"), None))
                    return
                self._events.append(ev.StanzaReceived(el, size))
            else:
                self._events.append(ev.NonzaReceived(el))
            return
        handler = _TRANSITIONS.get((self.state, el.tag))
        if handler is None:
            if self.state is State.NEGOTIATING and el.tag == _IQ:
                handler = ServerStream._iq_before_bind
            elif self.state is State.EXPECT_HEADER:
                raise StreamError(StreamCondition.NOT_WELL_FORMED, "expected a stream header")
            elif el.tag in _STANZAS:
                raise StreamError(
                    StreamCondition.NOT_AUTHORIZED, "stanzas need an authenticated, bound stream"
                )
            else:
                raise StreamError(StreamCondition.UNSUPPORTED_STANZA_TYPE, f"unexpected <{el.local}/>")
        handler(self, el)

    # --- negotiation steps ----------------------------------------------------------------------
    def _features(self) -> Element:
        feats = Element("{%s}features" % ns.STREAMS)
        if self.username is None:
            if self._tls_offered:
                tls = feats.add(_TLS + "starttls")
                if self.policy.tls_required:
                    tls.add(_TLS + "required")
                    return feats  # RFC 6120 5.3.1: only STARTTLS while it is mandatory
            mechs = feats.add(_SASL + "mechanisms")
            for name in mechanisms_for(self.tls_active, self.policy.sasl_mechanisms):
                mechs.add(_SASL + "mechanism", None, name)
            if self.policy.allow_registration:
                feats.add("{%s}register" % ns.REGISTER_FEATURE)
        else:
            feats.add("{%s}bind" % ns.BIND)
            session = feats.add("{%s}session" % ns.SESSION)
            session.add("{%s}optional" % ns.SESSION)
            feats.children.extend(self.policy.session_features())
        return feats

    @property
    def _tls_offered(self) -> bool:
        return not self.tls_active and not self.framing.message_oriented and self.policy.tls_available

    def _starttls(self, el: Element) -> None:
        if not self._tls_offered or self.username is not None:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "STARTTLS is not available now")
        self._out.append(b'<proceed xmlns="%s"/>' % ns.TLS.encode())
        self.state = State.TLS_PENDING
        self._events.append(ev.TlsRequested())

    def _auth(self, el: Element) -> None:
        if self.username is not None:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "already authenticated")
        if self._tls_offered and self.policy.tls_required:
            self._sasl_failure("encryption-required", None)
            return
        name = el.get("mechanism") or ""
        if name not in mechanisms_for(self.tls_active, self.policy.sasl_mechanisms):
            failure = "encryption-required" if name == "PLAIN" else "invalid-mechanism"
            self._sasl_failure(failure, None)
            return
        mech = make_mechanism(
            name, self.policy.nonce_factory, tls=self.tls_active, fake_iterations=self.policy.scram_iterations
        )
        self._mechanism = mech
        self.state = State.SASL
        text = el.text.strip()
        try:
            initial = None if text == "" else b"" if text == "=" else base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl_failure("incorrect-encoding", None)
            return
        self._sasl_step(lambda: mech.start(initial))

    def _response(self, el: Element) -> None:
        mech = self._mechanism
        if mech is None:
            raise StreamError(StreamCondition.POLICY_VIOLATION, "no SASL exchange in progress")
        text = el.text.strip()
        try:
            data = base64.b64decode(text, validate=True) if text and text != "=" else b""
        except (binascii.Error, ValueError):
            self._sasl_failure("incorrect-encoding", None)
            return
        self._sasl_step(lambda: mech.respond(data))

    def _abort(self, el: Element) -> None:
        self._sasl_failure("aborted", None)

    def _sasl_step(self, step: Callable[[], Step]) -> None:
        try:
            result = step()
        except SaslFailure as failure:
            self._sasl_failure(failure.condition, failure.text)
            return
        if isinstance(result, NeedCredentials):
            self._attempted_user = result.username
            self._events.append(
                ev.CredentialsNeeded(self._mechanism.name if self._mechanism else "", result.username)
            )
        elif isinstance(result, Challenge):
            self._out.append(_sasl_el("challenge", result.data))
        elif isinstance(result, Success):
            if not self._may_act_as(result.authzid, result.username):
                # RFC 6120 6.3.8 / 6.5.6: an authorization identity other than the account itself
                self._sasl_failure("invalid-authzid", "you may only act as your own account")
                return
            self._mechanism = None
            self.username = result.username
            self._out.append(_sasl_el("success", result.data))
            self._events.append(ev.Authenticated(result.username))
            self._restart()

    def _may_act_as(self, authzid: str | None, username: str) -> bool:
        if not authzid or authzid == username:
            return True
        try:
            return JID.parse(authzid) == JID.parse(f"{username}@{self.domain}")
        except InvalidJID:
            return False

    def _sasl_failure(self, condition: str, text: str | None) -> None:
        self._mechanism = None
        self.state = State.NEGOTIATING
        failure = Element(_SASL + "failure")
        failure.add(_SASL + condition)
        if text:
            failure.add(_SASL + "text", {"{%s}lang" % ns.XML: "en"}, text)
        self.send_element(failure)
        self._events.append(ev.AuthFailed(getattr(self, "_attempted_user", None), condition))
        if condition not in ("aborted", "invalid-mechanism", "encryption-required"):
            self._auth_failures += 1
            if self._auth_failures >= self.policy.max_auth_attempts:
                self._fail(StreamCondition.POLICY_VIOLATION, "too many failed authentication attempts")

    def _bind(self, el: Element) -> None:
        iq_id = el.get("id")
        bind = el.find("{%s}bind" % ns.BIND)
        if self.username is None or el.get("type") != "set" or bind is None:
            self._iq_before_bind(el)
            return
        resource = (bind.findtext("{%s}resource" % ns.BIND) or "").strip() or None
        if resource is not None:
            try:
                JID(self.username, self.domain, None).with_resource(resource)
            except InvalidJID:
                self.send_element(
                    _iq_error(iq_id, StanzaError(StanzaCondition.BAD_REQUEST, "invalid resource"))
                )
                return
        self.state = State.BIND_PENDING
        self._pending_bind_id = iq_id
        self._events.append(ev.BindRequested(resource))

    @property
    def pending_bind_id(self) -> str | None:
        return getattr(self, "_pending_bind_id", None)

    def _resume(self, el: Element) -> None:
        """XEP-0198 5: resume a previous session instead of binding a resource."""
        if self.username is None:
            raise StreamError(StreamCondition.NOT_AUTHORIZED, "authenticate first")
        previd = el.get("previd") or ""
        h = el.get("h") or ""
        if not previd or not (h.isascii() and h.isdigit()) or int(h) >= 2**32:
            self._sm_failed(StanzaCondition.BAD_REQUEST)
            return
        self.state = State.RESUME_PENDING
        self._previd = previd
        self._events.append(ev.ResumeRequested(previd, int(h)))

    def _enable_too_early(self, el: Element) -> None:
        """XEP-0198 3: stream management is enabled after binding a resource."""
        self._sm_failed(StanzaCondition.UNEXPECTED_REQUEST)

    def _sm_failed(self, condition: StanzaCondition) -> None:
        failed = Element(_SM + "failed")
        failed.add(f"{{{ns.STANZA_ERRORS}}}{condition}")
        self.send_element(failed)

    def _iq_before_bind(self, el: Element) -> None:
        query = el.first_child()
        if (
            self.username is None
            and self.policy.allow_registration
            and query is not None
            and query.tag == "{%s}query" % ns.REGISTER
            and (self.tls_active or not self.policy.tls_required)
        ):
            self._events.append(ev.PreAuthIq(el))
            return
        if self.username is None:
            raise StreamError(StreamCondition.NOT_AUTHORIZED, "authenticate first")
        self.send_element(
            _iq_error(el.get("id"), StanzaError(StanzaCondition.NOT_ALLOWED, "bind a resource first"))
        )

    def _restart(self) -> None:
        self._restarts += 1
        self.state = State.EXPECT_HEADER
        self._header_sent = False
        self.stream_id = ""  # RFC 6120 4.3.3: a new stream ID for every restarted stream
        self._parser = self.framing.new_parser(self.policy.max_stanza_size, self.policy.max_depth)

    def _send_header(self, with_version: bool = True) -> None:
        if self._header_sent:
            return
        self._header_sent = True
        if not self.stream_id:
            self.stream_id = secrets.token_urlsafe(12)
        attrs = {"id": self.stream_id, "from": self.domain}
        if self._peer:
            attrs["to"] = self._peer
        if with_version:
            attrs["version"] = "1.0"
        attrs["xml:lang"] = self.lang
        self._out.append(self.framing.header(attrs))

    def _fail(self, condition: StreamCondition, text: str | None) -> None:
        """Send a stream error (after a header if none was sent yet, RFC 6120 4.9.1.2) and close."""
        if self.state is State.CLOSED:
            return
        self._send_header()
        self.send_element(StreamError(condition, text).to_element())
        self._out.append(self.framing.footer())
        self.state = State.CLOSED
        self._events.append(ev.StreamClosed(condition, by_peer=False, text=text))


# (state, element) -> step. Every other combination is a stream error (see _on_element).
_TRANSITIONS: dict[tuple[State, str], Callable[[ServerStream, Element], None]] = {
    (State.NEGOTIATING, _TLS + "starttls"): ServerStream._starttls,
    (State.NEGOTIATING, _SASL + "auth"): ServerStream._auth,
    (State.SASL, _SASL + "response"): ServerStream._response,
    (State.SASL, _SASL + "abort"): ServerStream._abort,
    (State.NEGOTIATING, _IQ): ServerStream._bind,
    (State.NEGOTIATING, _SM + "resume"): ServerStream._resume,
    (State.NEGOTIATING, _SM + "enable"): ServerStream._enable_too_early,
}


def _sasl_el(name: str, data: bytes) -> bytes:
    if not data:
        return ('<%s xmlns="%s"/>' % (name, ns.SASL)).encode()
    payload = base64.b64encode(data).decode()
    return ('<%s xmlns="%s">%s</%s>' % (name, ns.SASL, payload, name)).encode()


def _iq_reply(iq_id: str | None, payload: Element | None) -> Element:
    el = Element(_IQ, {"type": "result"})
    if iq_id is not None:
        el.attrs["id"] = iq_id
    if payload is not None:
        el.append(payload)
    return el


def _iq_error(iq_id: str | None, error: StanzaError) -> Element:
    el = Element(_IQ, {"type": "error"})
    if iq_id is not None:
        el.attrs["id"] = iq_id
    el.append(error.to_element())
    return el
