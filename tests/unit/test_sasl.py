from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbeon_chat.stream.sasl import (
    SASL_CONDITIONS,
    Challenge,
    NeedCredentials,
    PlainServer,
    SaslFailure,
    ScramCredentials,
    ScramServer,
    ServerMechanism,
    Success,
    derive_scram_credentials,
    make_mechanism,
    mechanisms_for,
    saslprep,
    verify_plain_password,
)

RFC5802 = {
    "mech": "SCRAM-SHA-1",
    "hash": "sha1",
    "cnonce": "fyko+d2lbbFgONRv9qkxdawL",
    "nonce": "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
    "salt": "QSXCR+Q6sek8bf92",
    "proof": "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "sig": "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
RFC7677 = {
    "mech": "SCRAM-SHA-256",
    "hash": "sha256",
    "cnonce": "rOprNGfwEbeRWgbNEkqO",
    "nonce": "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "salt": "W22ZaJ0SNY7soEsUEjb6gQ==",
    "proof": "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "sig": "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}


def _snonce(vector: dict[str, str]) -> str:
    return vector["nonce"][len(vector["cnonce"]) :]


@pytest.mark.parametrize("vector", [RFC5802, RFC7677], ids=["rfc5802-sha1", "rfc7677-sha256"])
def test_rfc_vectors(vector: dict[str, str]) -> None:
    creds = derive_scram_credentials("pencil", vector["hash"], 4096, base64.b64decode(vector["salt"]))
    mech = ScramServer(vector["mech"], nonce_factory=lambda: _snonce(vector))
    assert mech.name == vector["mech"]
    assert mech.start(f"n,,n=user,r={vector['cnonce']}".encode()) == NeedCredentials("user")
    first = mech.credentials(creds)
    assert first == Challenge(f"r={vector['nonce']},s={vector['salt']},i=4096".encode())
    final = f"c=biws,r={vector['nonce']},p={vector['proof']}".encode()
    assert mech.respond(final) == Success("user", None, f"v={vector['sig']}".encode())
    # the mechanism is spent afterwards
    with pytest.raises(SaslFailure) as exc:
        mech.respond(final)
    assert exc.value.condition == "malformed-request"


def _client_final(
    mech_name: str, password: str, client_first_bare: str, gs2: str, server_first: bytes
) -> bytes:
    """A minimal SCRAM client for tests."""
    h = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech_name]
    attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", h)
    stored_key = hashlib.new(h, client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, h)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def _scram_run(
    mech_name: str,
    password: str,
    creds: ScramCredentials | None,
    *,
    gs2: str = "n,,",
    user: str = "user",
    initial_response: bool = True,
) -> Success:
    mech = ScramServer(mech_name)
    bare = f"n={user},r=clientnonce123"
    first = f"{gs2}{bare}".encode()
    if initial_response:
        step = mech.start(first)
    else:
        assert mech.start(None) == Challenge(b"")
        step = mech.respond(first)
    assert isinstance(step, NeedCredentials)
    challenge = mech.credentials(creds)
    assert isinstance(challenge, Challenge)
    result = mech.respond(_client_final(mech_name, password, bare, gs2, challenge.data))
    assert isinstance(result, Success)
    return result


@pytest.mark.parametrize(("mech_name", "h"), [("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1")])
def test_scram_roundtrip_and_wrong_password(mech_name: str, h: str) -> None:
    creds = derive_scram_credentials("s3cret", h, 1000)
    result = _scram_run(mech_name, "s3cret", creds)
    assert (result.username, result.authzid) == ("user", None)
    with pytest.raises(SaslFailure) as exc:
        _scram_run(mech_name, "wrong", creds)
    assert exc.value.condition == "not-authorized"


def test_scram_without_initial_response_authzid_and_y_flag() -> None:
    creds = derive_scram_credentials("pw", "sha256", 1000)
    result = _scram_run("SCRAM-SHA-256", "pw", creds, gs2="y,a=ad=3Dmin=2Cx,", initial_response=False)
    assert result.authzid == "ad=min,x"
    assert result.username == "user"


def test_scram_username_unescape() -> None:
    mech = ScramServer("SCRAM-SHA-256")
    assert mech.start(b"n,,n=a=2Cb=3Dc,r=xyz") == NeedCredentials("a,b=c")


@pytest.mark.parametrize(("mech_name", "h"), [("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1")])
def test_scram_unknown_user_fails_only_at_the_end(mech_name: str, h: str) -> None:
    mech = ScramServer(mech_name, fake_iterations=1234)
    assert mech.start(b"n,,n=ghost,r=abc") == NeedCredentials("ghost")
    challenge = mech.credentials(None)
    assert isinstance(challenge, Challenge)
    attrs = dict(kv.split("=", 1) for kv in challenge.data.decode().split(","))
    assert attrs["i"] == "1234"
    assert len(base64.b64decode(attrs["s"])) == 16
    # the fake salt is deterministic per username (within the process)
    again = ScramServer(mech_name, fake_iterations=1234)
    again.start(b"n,,n=ghost,r=abc")
    second = again.credentials(None)
    assert isinstance(second, Challenge)
    assert dict(kv.split("=", 1) for kv in second.data.decode().split(","))["s"] == attrs["s"]
    with pytest.raises(SaslFailure) as exc:
        mech.respond(_client_final(mech_name, "anything", "n=ghost,r=abc", "n,,", challenge.data))
    assert exc.value.condition == "not-authorized"


def test_scram_credentials_for_other_hash_behave_like_unknown_user() -> None:
    creds = derive_scram_credentials("pw", "sha1", 1000)
    with pytest.raises(SaslFailure) as exc:
        _scram_run("SCRAM-SHA-256", "pw", creds)
    assert exc.value.condition == "not-authorized"


def _started_scram() -> tuple[ScramServer, Challenge]:
    mech = ScramServer("SCRAM-SHA-256", nonce_factory=lambda: "SERVER")
    mech.start(b"n,,n=user,r=CLIENT")
    challenge = mech.credentials(derive_scram_credentials("pw", "sha256", 100))
    assert isinstance(challenge, Challenge)
    return mech, challenge


@pytest.mark.parametrize(
    ("initial", "condition"),
    [
        (b"", "malformed-request"),
        (b"n,,", "malformed-request"),
        (b"n", "malformed-request"),
        (b"p=tls-unique,,n=user,r=abc", "malformed-request"),
        (b"x,,n=user,r=abc", "malformed-request"),
        (b"n,b=x,n=user,r=abc", "malformed-request"),
        (b"n,a=,n=user,r=abc", "malformed-request"),
        (b"n,,m=ext,n=user,r=abc", "malformed-request"),
        (b"n,,n=,r=abc", "malformed-request"),
        (b"n,,n=user", "malformed-request"),
        (b"n,,r=abc,n=user", "malformed-request"),
        (b"n,,n=user,r=", "malformed-request"),
        (b"n,,n=user,r=a b", "malformed-request"),
        (b"n,,n=us=41er,r=abc", "malformed-request"),
        (b"n,,n=user=,r=abc", "malformed-request"),
        (b"n,,n=us\x01er,r=abc", "malformed-request"),
        (b"n,,n=\xff\xfe,r=abc", "malformed-request"),
        (b"n,,n=user,r=abc,bogus", "malformed-request"),
        (b"n,,n=user,r=abc" + b"x" * 10000, "malformed-request"),
    ],
)
def test_scram_bad_client_first(initial: bytes, condition: str) -> None:
    with pytest.raises(SaslFailure) as exc:
        ScramServer("SCRAM-SHA-256").start(initial)
    assert exc.value.condition == condition


@pytest.mark.parametrize(
    ("final", "condition"),
    [
        (b"", "malformed-request"),
        (b"c=biws,r=CLIENTSERVER", "malformed-request"),
        (b"r=CLIENTSERVER,c=biws,p=AAAA", "malformed-request"),
        (b"c=b!ws,r=CLIENTSERVER,p=AAAA", "incorrect-encoding"),
        (b"c=biws,r=CLIENTSERVER,p=not base64", "incorrect-encoding"),
        (b"c=\xc3\xa9,r=CLIENTSERVER,p=AAAA", "incorrect-encoding"),
        (b"c=eSws,r=CLIENTSERVER,p=AAAA", "malformed-request"),  # "y,," != "n,,"
        (b"c=biws,r=CLIENTOTHER,p=" + base64.b64encode(bytes(32)), "malformed-request"),
        (b"c=biws,r=CLIENTSERVER,p=AAAA", "malformed-request"),  # wrong proof length
        (b"c=biws,r=CLIENTSERVER,p=" + base64.b64encode(bytes(32)), "not-authorized"),
        (b"c=biws,r=CLIENTSERVER,x,p=" + base64.b64encode(bytes(32)), "malformed-request"),
        (b"\xff", "malformed-request"),
    ],
)
def test_scram_bad_client_final(final: bytes, condition: str) -> None:
    mech, _ = _started_scram()
    with pytest.raises(SaslFailure) as exc:
        mech.respond(final)
    assert exc.value.condition == condition


def test_scram_out_of_order_calls() -> None:
    with pytest.raises(SaslFailure):
        ScramServer("SCRAM-SHA-1").respond(b"c=biws,r=x,p=AAAA")
    with pytest.raises(SaslFailure):
        ScramServer("SCRAM-SHA-1").credentials(None)
    mech = ScramServer("SCRAM-SHA-1")
    mech.start(b"n,,n=user,r=abc")
    with pytest.raises(SaslFailure):
        mech.respond(b"c=biws,r=abc,p=AAAA")
    with pytest.raises(SaslFailure):  # spent after a failure
        mech.credentials(None)


def test_plain_success_and_failure() -> None:
    creds = derive_scram_credentials("pässword", "sha256", 1000)
    mech = PlainServer()
    assert mech.name == "PLAIN"
    assert mech.start(b"\0user\0p\xc3\xa4ssword") == NeedCredentials("user")
    assert mech.credentials(creds) == Success("user", None, b"")

    mech = PlainServer()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(b"boss@example.com\0user\0p\xc3\xa4ssword") == NeedCredentials("user")
    assert mech.credentials(creds) == Success("user", "boss@example.com", b"")

    mech = PlainServer()
    mech.start(b"\0user\0wrong")
    with pytest.raises(SaslFailure) as exc:
        mech.credentials(creds)
    assert exc.value.condition == "not-authorized"

    mech = PlainServer(fake_iterations=10)
    mech.start(b"\0ghost\0whatever")
    with pytest.raises(SaslFailure) as exc:
        mech.credentials(None)
    assert exc.value.condition == "not-authorized"

    mech = PlainServer()
    mech.start(b"\0user\0x")
    with pytest.raises(SaslFailure) as exc:
        mech.credentials(ScramCredentials("md5", b"s", 1, b"k", b"k"))
    assert exc.value.condition == "temporary-auth-failure"


@pytest.mark.parametrize(
    "initial",
    [
        b"",
        b"user\0pw",
        b"\0\0pw",
        b"\0user\0",
        b"\0user\0pw\0",
        b"\0us\x01er\0pw",
        b"\0user\0\xff",
        b"\0u\0p\x00",
    ],
)
def test_plain_malformed(initial: bytes) -> None:
    with pytest.raises(SaslFailure) as exc:
        PlainServer().start(initial)
    assert exc.value.condition == "malformed-request"


def test_derive_and_verify() -> None:
    creds = derive_scram_credentials("pw", "sha256", 10)
    assert len(creds.salt) == 16 and creds.iterations == 10 and creds.hash_name == "sha256"
    assert len(creds.stored_key) == 32 and len(creds.server_key) == 32
    assert derive_scram_credentials("pw", "sha256", 10).salt != creds.salt
    assert verify_plain_password("pw", creds)
    assert not verify_plain_password("pW", creds)
    assert not verify_plain_password("p\x00w", creds)
    # SASLprep: NFKC and non-ASCII space mapping make equivalent passwords match
    creds = derive_scram_credentials("ﬁ x", "sha1", 10)
    assert verify_plain_password("fi\u00a0x", creds)
    with pytest.raises(ValueError):
        derive_scram_credentials("pw", "md5", 10)
    with pytest.raises(ValueError):
        derive_scram_credentials("pw", "sha1", 0)
    with pytest.raises(ValueError):
        derive_scram_credentials("a\nb", "sha1", 10)


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    with pytest.raises(ValueError):
        saslprep("\u0007")
    with pytest.raises(ValueError):
        saslprep("a\u200eb")


def test_mechanisms_for() -> None:
    everything = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
    assert mechanisms_for(True, everything) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert mechanisms_for(False, everything) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert mechanisms_for(True, ["plain", "scram-sha-1"]) == ["SCRAM-SHA-1", "PLAIN"]
    assert mechanisms_for(True, ["DIGEST-MD5"]) == []


def test_make_mechanism() -> None:
    assert isinstance(make_mechanism("SCRAM-SHA-256"), ScramServer)
    assert isinstance(make_mechanism("SCRAM-SHA-1", lambda: "n"), ScramServer)
    assert isinstance(make_mechanism("PLAIN"), PlainServer)
    for bad in ("DIGEST-MD5", "SCRAM-SHA-256-PLUS", "plain", ""):
        with pytest.raises(SaslFailure) as exc:
            make_mechanism(bad)
        assert exc.value.condition == "invalid-mechanism"
    with pytest.raises(SaslFailure) as exc:
        make_mechanism("PLAIN", tls=False)
    assert exc.value.condition == "encryption-required"


def test_sasl_failure() -> None:
    err = SaslFailure("not-authorized", "nope")
    assert (err.condition, err.text) == ("not-authorized", "nope")
    assert SaslFailure("aborted").text is None
    assert {"malformed-request", "not-authorized", "invalid-mechanism"} <= SASL_CONDITIONS
    with pytest.raises(ValueError):
        SaslFailure("bogus")


_ATTR_PIECES = st.sampled_from(
    [b"n", b"y", b"p=x", b"", b"a=", b"a=x=2C", b"n=user", b"n=", b"r=CLIENT", b"r=CLIENTSERVER", b"m=x",
     b"c=biws", b"c=", b"c=!!", b"p=AAAA", b"p=" + base64.b64encode(bytes(32)), b"=", b"=2", b"\xff", b"\0"]
)  # fmt: skip
_MESSAGES = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.lists(st.one_of(_ATTR_PIECES, st.binary(max_size=8)), max_size=8).map(b",".join),
    st.lists(st.one_of(_ATTR_PIECES, st.binary(max_size=8)), max_size=4).map(b"\0".join),
)
_CREDS = st.one_of(
    st.none(),
    st.builds(
        ScramCredentials,
        st.sampled_from(["sha1", "sha256", "md5"]),
        st.binary(max_size=20),
        st.integers(1, 3),
        st.binary(max_size=40),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    mech_name=st.sampled_from(["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]),
    messages=st.lists(_MESSAGES, min_size=1, max_size=4),
    creds=_CREDS,
)
def test_fuzz_only_sasl_failure(
    mech_name: str, messages: list[bytes | None], creds: ScramCredentials | None
) -> None:
    mech: ServerMechanism = make_mechanism(mech_name, lambda: "SERVER", fake_iterations=1)
    try:
        step = mech.start(messages[0])
        for msg in messages[1:]:
            if isinstance(step, NeedCredentials):
                step = mech.credentials(creds)
            step = mech.respond(b"" if msg is None else msg)
    except SaslFailure as exc:
        assert exc.condition in SASL_CONDITIONS
