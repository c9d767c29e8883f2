"""The stream machine as a dialogue: client bytes in, server bytes out (no sockets)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbeon_chat.stream import events as ev
from mbeon_chat.stream.events import ElementParsed, StreamFooter, StreamHeader
from mbeon_chat.stream.framing import TcpFraming, WebSocketFraming
from mbeon_chat.stream.negotiation import ServerStream, State, StreamPolicy
from mbeon_chat.stream.parser import FramedParser, StreamParser
from mbeon_chat.stream.sasl import ScramCredentials, derive_scram_credentials
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaError
from mbeon_chat.xmpp.jid import JID

DOMAIN = "chat.example"
PASSWORD = "correct horse battery"
SASL = f"{{{ns.SASL}}}"
TLS = f"{{{ns.TLS}}}"
STREAMS = f"{{{ns.STREAMS}}}"
BIND = f"{{{ns.BIND}}}"
C = "{jabber:client}"


def header(
    to: str = DOMAIN, *, xmlns: str = "jabber:client", stream_ns: str = ns.STREAMS, version: str = "1.0"
) -> bytes:
    attrs = f" to='{to}'" if to else ""
    attrs += f" version='{version}'" if version else ""
    return (
        "<?xml version='1.0'?>"
        f"<stream:stream xmlns='{xmlns}' xmlns:stream='{stream_ns}'{attrs} xml:lang='en'>"
    ).encode()


def sasl(name: str, data: bytes | None = None, **attrs: str) -> bytes:
    attr = "".join(f" {k}='{v}'" for k, v in attrs.items())
    if data is None:
        return f"<{name} xmlns='{ns.SASL}'{attr}/>".encode()
    text = base64.b64encode(data).decode() if data else "="
    return f"<{name} xmlns='{ns.SASL}'{attr}>{text}</{name}>".encode()


def creds_for(password: str, hash_name: str = "sha256") -> ScramCredentials:
    return derive_scram_credentials(password, hash_name, 4096)


class ScramClient:
    """The client half of SCRAM (RFC 5802), enough to log in and check the server's signature."""

    def __init__(self, username: str, password: str, hash_name: str = "sha256") -> None:
        self.hash = hash_name
        self.password = password
        self.bare = f"n={username},r=clientNONCE0123456789"
        self.gs2 = "n,,"
        self.auth_message = b""
        self.salted = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        assert attrs["r"].startswith("clientNONCE0123456789") and len(attrs["r"]) > 21
        self.salted = hashlib.pbkdf2_hmac(
            self.hash, self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(self.salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c={base64.b64encode(self.gs2.encode()).decode()},r={attrs['r']}"
        self.auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, self.auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        server_key = hmac.digest(self.salted, b"Server Key", self.hash)
        expected = hmac.digest(server_key, self.auth_message, self.hash)
        return server_final == b"v=" + base64.b64encode(expected)


class Dialogue:
    """h11's ConnectionPair idea: feed client bytes into a ServerStream and read back what it wrote."""

    def __init__(
        self, policy: StreamPolicy | None = None, *, tls_active: bool = False, websocket: bool = False
    ) -> None:
        self.policy = policy or StreamPolicy(domains=frozenset({DOMAIN}), default_domain=DOMAIN)
        self.framing: Any = WebSocketFraming() if websocket else TcpFraming()
        self.machine = ServerStream(self.policy, self.framing, tls_active=tls_active)
        self.websocket = websocket
        self.reader: StreamParser | FramedParser = FramedParser() if websocket else StreamParser()
        self.events: list[ev.Event] = []
        self.headers: list[StreamHeader] = []
        self.closed_by_server = False

    def send(self, data: bytes) -> list[Element]:
        """Client -> server; returns the elements the server wrote back (headers go to ``self.headers``)."""
        self.events = self.machine.receive_data(data)
        return self.read()

    def read(self) -> list[Element]:
        out: list[Element] = []
        chunks = self.machine.data_chunks() if self.websocket else [self.machine.data_to_send()]
        for chunk in chunks:
            if not chunk:
                continue
            for item in self.reader.receive_data(chunk):
                if isinstance(item, StreamHeader):
                    self.headers.append(item)
                elif isinstance(item, StreamFooter):
                    self.closed_by_server = True
                else:
                    assert isinstance(item, ElementParsed)
                    out.append(item.element)
        return out

    def restart(self) -> None:
        """The server restarts its stream after TLS / SASL: read its next header with a fresh parser."""
        if not self.websocket:
            self.reader = StreamParser()

    def open(self, data: bytes | None = None) -> Element:
        """Send a stream header; return the <stream:features/> the server answered with."""
        elements = self.send(data or header())
        assert len(elements) == 1, elements
        assert elements[0].tag == STREAMS + "features"
        return elements[0]

    def event(self, kind: type) -> Any:
        found = [e for e in self.events if isinstance(e, kind)]
        assert found, f"no {kind.__name__} in {self.events}"
        return found[0]


def stream_error(elements: list[Element]) -> str:
    errors = [el for el in elements if el.tag == STREAMS + "error"]
    assert errors, f"no stream error in {elements}"
    return next(errors[0].elements()).local


def sasl_failure(el: Element) -> str:
    assert el.tag == SASL + "failure", el
    return next(el.elements()).local


def mechanisms(features: Element) -> list[str]:
    mechs = features.find(SASL + "mechanisms")
    return [] if mechs is None else [m.text for m in mechs.findall(SASL + "mechanism")]


def starttls(d: Dialogue) -> Element:
    """STARTTLS up to the restarted stream's features."""
    (proceed,) = d.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert proceed.tag == TLS + "proceed"
    d.event(ev.TlsRequested)
    assert d.machine.state is State.TLS_PENDING
    d.machine.tls_established()
    d.restart()
    return d.open()


def scram_login(d: Dialogue, username: str = "alice", password: str = PASSWORD) -> ev.Authenticated:
    client = ScramClient(username, password)
    assert d.send(sasl("auth", client.first(), mechanism="SCRAM-SHA-256")) == []
    assert d.event(ev.CredentialsNeeded) == ev.CredentialsNeeded("SCRAM-SHA-256", username)
    d.events = d.machine.provide_credentials(creds_for(PASSWORD))
    (challenge,) = d.read()
    assert challenge.tag == SASL + "challenge"
    (success,) = d.send(sasl("response", client.final(base64.b64decode(challenge.text))))
    assert success.tag == SASL + "success", success
    assert client.verify(base64.b64decode(success.text)), "the server proved it knows the password"
    auth = d.event(ev.Authenticated)
    d.restart()
    return auth


def logged_in(resource: str = "laptop") -> Dialogue:
    d = Dialogue()
    d.open()
    starttls(d)
    scram_login(d)
    d.open()
    d.send(
        f"<iq type='set' id='b1'><bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>".encode()
    )
    d.events = d.machine.bind_succeeded(JID("alice", DOMAIN, resource), "b1")
    d.read()
    return d


# --- STARTTLS ---------------------------------------------------------------------------------------
def test_the_server_answers_the_header_with_its_own_and_offers_only_starttls_first() -> None:
    d = Dialogue()
    features = d.open()
    (head,) = d.headers
    assert head.attrs["from"] == DOMAIN and head.attrs["version"] == "1.0" and head.attrs["id"]
    assert head.default_ns == ns.CLIENT
    assert [c.tag for c in features.elements()] == [TLS + "starttls"]
    assert features.find(TLS + "starttls").find(TLS + "required") is not None
    assert d.event(ev.StreamOpened) == ev.StreamOpened(restart=False)


def test_auth_before_starttls_fails_with_encryption_required() -> None:
    d = Dialogue()
    d.open()
    (failure,) = d.send(sasl("auth", b"\0alice\0" + PASSWORD.encode(), mechanism="PLAIN"))
    assert sasl_failure(failure) == "encryption-required"
    assert d.machine.state is State.NEGOTIATING
    assert not any(isinstance(e, ev.CredentialsNeeded) for e in d.events)


def test_after_starttls_the_restart_offers_mechanisms_with_plain() -> None:
    d = Dialogue()
    d.open()
    elements = d.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert [e.tag for e in elements] == [TLS + "proceed"]
    features = starttls_restart(d)
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert features.find(TLS + "starttls") is None
    assert d.event(ev.StreamOpened) == ev.StreamOpened(restart=True)
    assert d.headers[-1].attrs["id"] != d.headers[0].attrs["id"]  # RFC 6120 4.3.3: a new stream ID


def starttls_restart(d: Dialogue) -> Element:
    d.event(ev.TlsRequested)
    d.machine.tls_established()
    d.restart()
    return d.open()


def test_plaintext_sent_with_starttls_is_dropped_not_acted_on() -> None:
    """STARTTLS command injection: whatever follows <starttls/> in the same plaintext read is discarded."""
    d = Dialogue()
    d.open()
    injected = sasl("auth", b"\0alice\0" + PASSWORD.encode(), mechanism="PLAIN") + b"<message to='x@y'/>"
    elements = d.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + injected)
    assert [e.tag for e in elements] == [TLS + "proceed"]
    assert d.events == [ev.TlsRequested()]
    d.machine.tls_established()
    d.restart()
    features = d.open()
    assert d.machine.username is None
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_bytes_during_the_tls_handshake_are_ignored() -> None:
    d = Dialogue()
    d.open()
    d.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert d.send(b"\x16\x03\x01 not xml at all") == []
    assert d.machine.state is State.TLS_PENDING


def test_without_tls_plain_is_never_offered() -> None:
    policy = StreamPolicy(
        domains=frozenset({DOMAIN}), default_domain=DOMAIN, tls_available=False, tls_required=False
    )
    d = Dialogue(policy)
    features = d.open()
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    (failure,) = d.send(sasl("auth", b"\0alice\0" + PASSWORD.encode(), mechanism="PLAIN"))
    assert sasl_failure(failure) == "encryption-required"


def test_optional_starttls_is_offered_next_to_the_mechanisms() -> None:
    policy = StreamPolicy(domains=frozenset({DOMAIN}), default_domain=DOMAIN, tls_required=False)
    features = Dialogue(policy).open()
    assert features.find(TLS + "starttls") is not None
    assert features.find(TLS + "starttls").find(TLS + "required") is None
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


def test_starttls_twice_is_a_policy_violation() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    assert stream_error(d.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")) == "policy-violation"


def test_direct_tls_streams_start_with_the_mechanisms() -> None:
    features = Dialogue(tls_active=True).open()
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


# --- SASL -----------------------------------------------------------------------------------------
def test_scram_sha_256_end_to_end_then_bind_with_the_clients_resource() -> None:
    d = Dialogue()
    d.open()
    starttls(d)
    assert scram_login(d) == ev.Authenticated("alice")
    assert d.machine.username == "alice"
    features = d.open()
    assert features.find(BIND + "bind") is not None
    assert mechanisms(features) == []
    d.send(f"<iq type='set' id='b1'><bind xmlns='{ns.BIND}'><resource>laptop</resource></bind></iq>".encode())
    assert d.event(ev.BindRequested) == ev.BindRequested("laptop")
    assert d.machine.pending_bind_id == "b1"
    d.events = d.machine.bind_succeeded(JID("alice", DOMAIN, "laptop"), "b1")
    (result,) = d.read()
    assert result.get("type") == "result" and result.get("id") == "b1"
    assert result.find(BIND + "bind").findtext(BIND + "jid") == f"alice@{DOMAIN}/laptop"
    assert d.event(ev.Bound) == ev.Bound(JID("alice", DOMAIN, "laptop"))
    assert d.machine.state is State.ESTABLISHED


def test_bind_without_a_resource_lets_the_server_choose() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    d.send(f"<iq type='set' id='b2'><bind xmlns='{ns.BIND}'/></iq>".encode())
    assert d.event(ev.BindRequested) == ev.BindRequested(None)
    d.events = d.machine.bind_succeeded(JID("alice", DOMAIN, "srv-chosen-1"), "b2")
    (result,) = d.read()
    assert result.find(BIND + "bind").findtext(BIND + "jid") == f"alice@{DOMAIN}/srv-chosen-1"


def test_a_failed_bind_answers_an_error_and_allows_another_try() -> None:
    from mbeon_chat.xmpp.errors import StanzaCondition

    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    d.send(f"<iq type='set' id='b3'><bind xmlns='{ns.BIND}'><resource>r</resource></bind></iq>".encode())
    d.machine.bind_failed(StanzaError(StanzaCondition.CONFLICT), "b3")
    (error,) = d.read()
    assert error.get("type") == "error" and error.get("id") == "b3"
    assert error.find(C + "error").find(f"{{{ns.STANZA_ERRORS}}}conflict") is not None
    d.send(f"<iq type='set' id='b4'><bind xmlns='{ns.BIND}'/></iq>".encode())
    assert d.event(ev.BindRequested) == ev.BindRequested(None)


def test_an_invalid_resource_is_a_bad_request() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    bind = f"<bind xmlns='{ns.BIND}'><resource>{'x' * 2000}</resource></bind>"
    (error,) = d.send(f"<iq type='set' id='b5'>{bind}</iq>".encode())
    assert error.get("type") == "error"
    assert error.find(C + "error").find(f"{{{ns.STANZA_ERRORS}}}bad-request") is not None


def test_a_wrong_scram_proof_is_not_authorized() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    client = ScramClient("alice", "wrong password")
    d.send(sasl("auth", client.first(), mechanism="SCRAM-SHA-256"))
    d.events = d.machine.provide_credentials(creds_for(PASSWORD))
    (challenge,) = d.read()
    (failure,) = d.send(sasl("response", client.final(base64.b64decode(challenge.text))))
    assert sasl_failure(failure) == "not-authorized"
    assert d.event(ev.AuthFailed) == ev.AuthFailed("alice", "not-authorized")
    assert d.machine.username is None


def test_plain_over_tls_logs_in() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    d.send(sasl("auth", b"\0alice\0" + PASSWORD.encode(), mechanism="PLAIN"))
    assert d.event(ev.CredentialsNeeded) == ev.CredentialsNeeded("PLAIN", "alice")
    d.events = d.machine.provide_credentials(creds_for(PASSWORD))
    (success,) = d.read()
    assert success.tag == SASL + "success"
    assert d.event(ev.Authenticated) == ev.Authenticated("alice")


def test_an_unknown_mechanism_is_invalid_mechanism() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    (failure,) = d.send(sasl("auth", b"x", mechanism="DIGEST-MD5"))
    assert sasl_failure(failure) == "invalid-mechanism"


def test_bad_base64_is_incorrect_encoding() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    (failure,) = d.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>!!not base64!!</auth>".encode())
    assert sasl_failure(failure) == "incorrect-encoding"


def test_abort_ends_the_exchange() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    d.send(sasl("auth", ScramClient("alice", PASSWORD).first(), mechanism="SCRAM-SHA-256"))
    d.events = d.machine.provide_credentials(creds_for(PASSWORD))
    d.read()
    (failure,) = d.send(sasl("abort"))
    assert sasl_failure(failure) == "aborted"
    assert d.machine.state is State.NEGOTIATING


def test_too_many_failed_logins_end_the_stream_with_policy_violation() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    out: list[Element] = []
    for _ in range(3):
        d.send(sasl("auth", b"\0alice\0wrong-password", mechanism="PLAIN"))
        d.events = d.machine.provide_credentials(creds_for(PASSWORD))
        out = d.read()
    assert [sasl_failure(out[0]), stream_error(out)] == ["not-authorized", "policy-violation"]
    assert d.closed_by_server
    assert d.machine.state is State.CLOSED
    assert d.event(ev.StreamClosed).condition == "policy-violation"


def test_auth_after_authentication_is_a_policy_violation() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    assert stream_error(d.send(sasl("auth", b"\0alice\0x", mechanism="PLAIN"))) == "policy-violation"


# --- stream errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (header(xmlns="jabber:server"), "invalid-namespace"),
        (header(stream_ns="urn:not:streams"), "invalid-namespace"),
        (header(to="elsewhere.example"), "host-unknown"),
        (header(to="not a@valid jid"), "host-unknown"),
        (header(version="2.0"), "unsupported-version"),
        (header(version=""), "unsupported-version"),
        (b"<message xmlns='jabber:client'/>", "invalid-namespace"),
    ],
    ids=[
        "bad-namespace",
        "bad-stream-namespace",
        "host-unknown",
        "invalid-to",
        "version-2",
        "no-version",
        "no-header",
    ],
)
def test_stream_header_errors(data: bytes, condition: str) -> None:
    d = Dialogue()
    elements = d.send(data)
    assert stream_error(elements) == condition
    assert d.headers, "a stream error is sent after the server's own header"
    assert d.closed_by_server
    assert d.machine.state is State.CLOSED


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message to='bob@chat.example'><body>hi</body></message>",
        b"<presence/>",
        b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    ],
    ids=["message", "presence", "iq"],
)
def test_stanzas_before_authentication_are_not_authorized(stanza: bytes) -> None:
    d = Dialogue(tls_active=True)
    d.open()
    assert stream_error(d.send(stanza)) == "not-authorized"
    assert not any(isinstance(e, ev.StanzaReceived) for e in d.events)


def test_an_iq_after_auth_but_before_bind_gets_not_allowed() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    (error,) = d.send(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    assert error.get("type") == "error" and error.get("id") == "r1"
    assert error.find(C + "error").find(f"{{{ns.STANZA_ERRORS}}}not-allowed") is not None
    assert d.machine.state is State.NEGOTIATING


def test_other_stanzas_after_auth_but_before_bind_are_not_authorized() -> None:
    d = Dialogue(tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    elements = d.send(b"<message to='bob@chat.example'><body>hi</body></message>")
    assert stream_error(elements) == "not-authorized"


def test_malformed_xml_after_login_is_not_well_formed() -> None:
    d = logged_in()
    assert stream_error(d.send(b"<message><body></message>")) == "not-well-formed"
    closed = d.event(ev.StreamClosed)
    assert (closed.condition, closed.by_peer) == ("not-well-formed", False)


def test_an_oversize_stanza_after_login_is_a_policy_violation() -> None:
    d = Dialogue(replace(Dialogue().policy, max_stanza_size=2048), tls_active=True)
    d.open()
    scram_login(d)
    d.open()
    assert stream_error(d.send(b"<message><body>" + b"x" * 5000 + b"</body></message>")) == "policy-violation"


def test_the_peer_closing_is_answered_with_our_closing_tag() -> None:
    d = logged_in()
    assert d.send(b"</stream:stream>") == []
    assert d.closed_by_server
    assert d.event(ev.StreamClosed) == ev.StreamClosed(None, by_peer=True)


def test_closing_with_a_condition_sends_the_stream_error() -> None:
    from mbeon_chat.xmpp.errors import StreamCondition

    d = logged_in()
    d.events = d.machine.close(StreamCondition.SYSTEM_SHUTDOWN, "bye")
    assert stream_error(d.read()) == "system-shutdown"
    assert d.closed_by_server


# --- after binding ---------------------------------------------------------------------------------
def test_stanzas_flow_after_binding_and_legacy_session_is_answered() -> None:
    d = logged_in()
    (result,) = d.send(f"<iq type='set' id='s1'><session xmlns='{ns.SESSION}'/></iq>".encode())
    assert result.get("type") == "result" and result.get("id") == "s1"
    assert d.send(b"<message to='bob@chat.example'><body>hi</body></message>") == []
    received = d.event(ev.StanzaReceived)
    assert received.element.findtext(C + "body") == "hi"


def test_non_stanza_elements_after_binding_are_nonzas() -> None:
    d = logged_in()
    d.send(b"<enable xmlns='urn:xmpp:sm:3'/>")
    assert d.event(ev.NonzaReceived).element.tag == "{urn:xmpp:sm:3}enable"


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=12))
def test_established_stream_events_do_not_depend_on_chunking(cuts: list[int]) -> None:
    data = (
        b"<message to='bob@chat.example' id='1'><body>caf\xc3\xa9</body></message>"
        b"<presence><show>away</show></presence>"
        b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    d = logged_in()
    events: list[ev.Event] = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        events += d.machine.receive_data(data[start:cut])
        start = cut
    got = [e.element.to_string(ns.CLIENT) for e in events if isinstance(e, ev.StanzaReceived)]
    whole = logged_in()
    want = [
        e.element.to_string(ns.CLIENT)
        for e in whole.machine.receive_data(data)
        if isinstance(e, ev.StanzaReceived)
    ]
    assert got == want and len(got) == 3


# --- in-band registration before auth -----------------------------------------------------------------
def test_register_iq_before_auth_is_passed_on_only_when_registration_is_enabled() -> None:
    iq = b"<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>"
    off = Dialogue(tls_active=True)
    features = off.open()
    assert features.find(f"{{{ns.REGISTER_FEATURE}}}register") is None
    assert stream_error(off.send(iq)) == "not-authorized"

    on = Dialogue(replace(Dialogue().policy, allow_registration=True), tls_active=True)
    features = on.open()
    assert features.find(f"{{{ns.REGISTER_FEATURE}}}register") is not None
    assert on.send(iq) == []
    assert on.event(ev.PreAuthIq).element.get("id") == "reg1"


def test_register_is_not_offered_before_tls_when_tls_is_required() -> None:
    d = Dialogue(replace(Dialogue().policy, allow_registration=True))
    features = d.open()
    assert features.find(f"{{{ns.REGISTER_FEATURE}}}register") is None
    assert (
        stream_error(d.send(b"<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>"))
        == "not-authorized"
    )


# --- WebSocket framing shares the machine ---------------------------------------------------------------
def test_websocket_stream_opens_and_logs_in_without_starttls() -> None:
    d = Dialogue(websocket=True, tls_active=True)
    features = d.open(f"<open xmlns='{ns.FRAMING}' to='{DOMAIN}' version='1.0'/>".encode())
    assert features.find(TLS + "starttls") is None
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert d.headers[0].stream_ns == ns.FRAMING
    client = ScramClient("alice", PASSWORD)
    d.send(sasl("auth", client.first(), mechanism="SCRAM-SHA-256"))
    d.events = d.machine.provide_credentials(creds_for(PASSWORD))
    (challenge,) = d.read()
    (success,) = d.send(sasl("response", client.final(base64.b64decode(challenge.text))))
    assert success.tag == SASL + "success"
    features = d.open(f"<open xmlns='{ns.FRAMING}' to='{DOMAIN}' version='1.0'/>".encode())
    assert features.find(BIND + "bind") is not None
