"""RFC 6120 section 6: SASL negotiation, its failure conditions (6.5) and retries (6.4.5)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from conformance_kit import HEADER, SASL, Client, child

from harness import RunningServer
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

pytestmark = pytest.mark.asyncio(loop_scope="module")


def failure(el: Element) -> str:
    assert el.tag == SASL + "failure", el.to_string()
    return next(c.local for c in el.elements() if c.local != "text")


def auth(mechanism: str | None, payload: str = "") -> str:
    attr = f" mechanism='{mechanism}'" if mechanism is not None else ""
    return f"<auth xmlns='{ns.SASL}'{attr}>{payload}</auth>"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_unknown_or_missing_mechanism_gets_invalid_mechanism(srv: RunningServer) -> None:
    """6.5.7: a mechanism the server does not offer; the client may try again (6.4.5)."""
    client = await Client.secured(srv)
    assert failure(await client.ask(auth("X-UNKNOWN"))) == "invalid-mechanism"
    assert failure(await client.ask(auth(None))) == "invalid-mechanism"
    assert (await client.auth_plain("alice", srv.users["alice"])).tag == SASL + "success"
    client.close()


async def test_bad_base64_gets_incorrect_encoding(srv: RunningServer) -> None:
    """6.5.5: the data is not base64."""
    client = await Client.secured(srv)
    assert failure(await client.ask(auth("PLAIN", "!!not base64!!"))) == "incorrect-encoding"
    client.close()


async def test_a_plain_message_without_nuls_gets_malformed_request_with_text(srv: RunningServer) -> None:
    """6.5.8 and 6.4.5: <malformed-request/>, with an optional <text xml:lang/> in the SASL namespace."""
    client = await Client.secured(srv)
    answer = await client.ask(auth("PLAIN", b64(b"garbage")))
    assert failure(answer) == "malformed-request"
    text = child(answer, SASL + "text")
    assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    client.close()


async def test_wrong_password_and_unknown_user_both_get_not_authorized(srv: RunningServer) -> None:
    """6.5.10: the same answer whether or not the account exists."""
    client = await Client.secured(srv)
    assert failure(await client.auth_plain("alice", "wrong")) == "not-authorized"
    assert failure(await client.auth_plain("nobody-here", "wrong")) == "not-authorized"
    client.close()


async def test_too_many_failures_end_the_stream_with_policy_violation(srv: RunningServer) -> None:
    """6.4.5: a configurable number of retries (3 here), then a stream error: <policy-violation/>."""
    client = await Client.secured(srv)
    for _ in range(2):
        assert failure(await client.auth_plain("alice", "wrong")) == "not-authorized"
    client.send(auth("PLAIN", b64(b"\0alice\0wrong")))
    assert failure(await client.next()) == "not-authorized"
    assert await client.stream_error() == "policy-violation"


async def test_abort_during_an_exchange_gets_aborted(srv: RunningServer) -> None:
    """6.4.4 / 6.5.1: <abort/> ends the exchange with <failure><aborted/></failure>; a new one may start."""
    client = await Client.secured(srv)
    challenge = await client.ask(auth("SCRAM-SHA-1", b64(b"n,,n=alice,r=abcdefghijklmnop")))
    assert challenge.tag == SASL + "challenge"
    assert failure(await client.ask(f"<abort xmlns='{ns.SASL}'/>")) == "aborted"
    assert (await client.auth_plain("alice", srv.users["alice"])).tag == SASL + "success"
    client.close()


async def test_no_initial_response_gets_an_empty_challenge(srv: RunningServer) -> None:
    """6.4.2: without initial response data the server sends an empty challenge; '=' is an empty response."""
    client = await Client.secured(srv)
    challenge = await client.ask(auth("PLAIN"))
    assert challenge.tag == SASL + "challenge" and challenge.text == ""
    plain = b64(b"\0alice\0" + srv.users["alice"].encode())
    answer = await client.ask(f"<response xmlns='{ns.SASL}'>{plain}</response>")
    assert answer.tag == SASL + "success"
    client.close()


async def test_scram_success_carries_the_server_signature(srv: RunningServer) -> None:
    """6.3.10 / 6.4.6: <success/> with additional data (SCRAM's v=...), which the client verifies."""
    client = await Client.secured(srv)
    first_bare = "n=alice,r=rOprNGfwEbeRWgbNEkqO"
    challenge = await client.ask(auth("SCRAM-SHA-1", b64(b"n,," + first_bare.encode())))
    server_first = base64.b64decode(challenge.text).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha1", srv.users["alice"].encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha1(client_key).digest(), auth_message, "sha1")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={b64(proof)}".encode()
    success = await client.ask(f"<response xmlns='{ns.SASL}'>{b64(final)}</response>")
    assert success.tag == SASL + "success"
    expected = hmac.digest(hmac.digest(salted, b"Server Key", "sha1"), auth_message, "sha1")
    assert base64.b64decode(success.text) == b"v=" + b64(expected).encode()
    client.close()


async def test_an_authzid_naming_someone_else_gets_invalid_authzid(srv: RunningServer) -> None:
    """6.3.8 / 6.5.6: alice's credentials with authzid bob@localhost: <invalid-authzid/>, not a session as
    either of them; alice's own bare JID as authzid is fine."""
    client = await Client.secured(srv)
    answer = await client.auth_plain("alice", srv.users["alice"], authzid="bob@localhost")
    assert failure(answer) == "invalid-authzid"
    answer = await client.auth_plain("alice", srv.users["alice"], authzid="alice@localhost")
    assert answer.tag == SASL + "success"
    client.close()


async def test_scram_authzid_naming_someone_else_gets_invalid_authzid(srv: RunningServer) -> None:
    client = await Client.secured(srv)
    first_bare = "n=alice,r=0123456789abcdef"
    challenge = await client.ask(auth("SCRAM-SHA-1", b64(b"n,a=bob@localhost," + first_bare.encode())))
    server_first = base64.b64decode(challenge.text).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha1", srv.users["alice"].encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    without_proof = f"c={b64(b'n,a=bob@localhost,')},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha1(client_key).digest(), auth_message, "sha1")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    answer = await client.ask(
        f"<response xmlns='{ns.SASL}'>{b64(f'{without_proof},p={b64(proof)}'.encode())}</response>"
    )
    assert failure(answer) == "invalid-authzid"
    client.close()


async def test_plain_before_tls_gets_encryption_required(srv: RunningServer) -> None:
    """5.3.1 / 6.5.4: TLS is mandatory here, so authenticating on the plaintext stream is refused."""
    client = await Client.connect(srv)
    await client.open(HEADER)
    assert failure(await client.auth_plain("alice", srv.users["alice"])) == "encryption-required"
    client.close()
