"""Server-side SASL mechanisms (RFC 4422) as pure, synchronous step objects.

The driver does base64/XML and feeds *decoded* bytes: ``start(initial)`` with the ``<auth/>``
payload (``None`` if there was no initial response: answered with an empty ``Challenge``),
``credentials(creds_or_None)`` after a ``NeedCredentials`` step, ``respond(data)`` per
``<response/>``.

Every step returns ``NeedCredentials``, ``Challenge`` or ``Success``, or raises ``SaslFailure``
carrying an RFC 6120 §6.5 condition. After a failure or success the object is spent: any further
call raises ``SaslFailure("malformed-request")``. Mechanisms: SCRAM-SHA-256, SCRAM-SHA-1 (RFC
5802/7677, no channel binding / -PLUS) and PLAIN (RFC 4616). Unknown users are indistinguishable
from wrong passwords until the final step. No I/O happens here; PBKDF2 is CPU heavy, so
``derive_scram_credentials`` and ``PlainServer.credentials`` belong in a thread executor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

SASL_CONDITIONS = frozenset({
    "aborted", "account-disabled", "credentials-expired", "encryption-required",
    "incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
    "mechanism-too-weak", "not-authorized", "temporary-auth-failure",
})  # fmt: skip
ALL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
DEFAULT_ITERATIONS = 4096
_SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
_DIGEST_SIZES = {"sha1": 20, "sha256": 32}
_MAX_MESSAGE_BYTES = 8192
_FAKE_SALT_SECRET = os.urandom(32)  # per process: fake salts are stable but unpredictable
_MAP_TO_NOTHING = frozenset("\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufeff") | {
    chr(c) for c in range(0xFE00, 0xFE10)
}
_PROHIBITED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_ASCII_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
_NONCE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {","}


class SaslFailure(Exception):
    """A SASL failure; ``condition`` is an RFC 6120 §6.5 element name."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in SASL_CONDITIONS:
            raise ValueError(f"unknown SASL condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


def saslprep(s: str) -> str:
    """Approximate RFC 4013 SASLprep: map, NFKC, prohibit controls. Raises ``ValueError``."""
    if s.isascii():
        if not _ASCII_PRINTABLE.issuperset(s):
            raise ValueError("control character in string")
        return s
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in s if ch not in _MAP_TO_NOTHING)
    out = unicodedata.normalize("NFKC", mapped)
    for ch in out:
        if unicodedata.category(ch) in _PROHIBITED_CATEGORIES:
            raise ValueError(f"prohibited character {ch!r} in string")
    return out


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    hash_name: str  # "sha1" | "sha256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def derive_scram_credentials(
    password: str, hash_name: str, iterations: int, salt: bytes | None = None
) -> ScramCredentials:
    """Derive SCRAM keys (RFC 5802 §3). CPU heavy: run in a thread. Raises ``ValueError``."""
    if hash_name not in _DIGEST_SIZES:
        raise ValueError(f"unsupported hash {hash_name!r}")
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if salt is None:
        salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac(hash_name, saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    return ScramCredentials(
        hash_name, salt, iterations, hashlib.new(hash_name, client_key).digest(), server_key
    )


def verify_plain_password(password: str, creds: ScramCredentials) -> bool:
    """Check a plaintext password against stored SCRAM credentials (constant-time compare)."""
    try:
        derived = derive_scram_credentials(password, creds.hash_name, creds.iterations, creds.salt)
    except ValueError:
        return False
    return hmac.compare_digest(derived.stored_key, creds.stored_key)


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    username: str  # SASLprep'd and unescaped


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    username: str
    authzid: str | None
    data: bytes  # additional data for <success/> (SCRAM: b"v=...")


Step: TypeAlias = NeedCredentials | Challenge | Success


class ServerMechanism(Protocol):
    name: str

    def start(self, initial: bytes | None) -> Step: ...
    def credentials(self, creds: ScramCredentials | None) -> Step: ...
    def respond(self, data: bytes) -> Step: ...


def _fake_salt(username: str) -> bytes:
    return hmac.digest(_FAKE_SALT_SECRET, username.encode("utf-8"), "sha256")[:16]


def _default_nonce() -> str:
    return secrets.token_urlsafe(18)


def _malformed(text: str) -> SaslFailure:
    return SaslFailure("malformed-request", text)


def _decode(data: bytes) -> str:
    if len(data) > _MAX_MESSAGE_BYTES:
        raise _malformed("message too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("message is not UTF-8") from None


def _b64decode(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding", "invalid base64") from None


def _unescape_saslname(s: str) -> str:
    head, *rest = s.split("=")
    out = [head]
    for part in rest:
        if part.startswith("2C"):
            out.append("," + part[2:])
        elif part.startswith("3D"):
            out.append("=" + part[2:])
        else:
            raise _malformed("invalid saslname escape")
    return "".join(out)


def _check_extensions(attrs: Sequence[str]) -> None:
    for attr in attrs:
        if len(attr) < 2 or attr[1] != "=" or not ("a" <= attr[0] <= "z" or "A" <= attr[0] <= "Z"):
            raise _malformed("invalid attribute")


_INIT, _AWAIT_FIRST, _AWAIT_CREDS, _AWAIT_FINAL, _DONE = range(5)


class _StepMachine:
    _state: int = _INIT

    def _expect(self, *states: int) -> int:
        state, self._state = self._state, _DONE  # any exception leaves the mechanism spent
        if state not in states:
            raise _malformed("unexpected SASL step")
        return state

    def start(self, initial: bytes | None) -> Step:
        self._expect(_INIT)
        if initial is None:
            self._state = _AWAIT_FIRST
            return Challenge(b"")
        return self._first(initial)

    def respond(self, data: bytes) -> Step:
        if self._expect(_AWAIT_FIRST, _AWAIT_FINAL) == _AWAIT_FIRST:
            return self._first(data)
        return self._final(data)

    def _first(self, data: bytes) -> Step:
        raise NotImplementedError

    def _final(self, data: bytes) -> Step:
        raise NotImplementedError


class ScramServer(_StepMachine):
    """SCRAM-SHA-256 / SCRAM-SHA-1 without channel binding (gs2 flags "n" and "y" accepted).

    Flow: start(client-first) -> NeedCredentials; credentials(c) -> Challenge(server-first);
    respond(client-final) -> Success(data=b"v=..."). With ``creds=None`` (unknown user) or
    credentials for a different hash, a fake salt is used and the final step fails with
    not-authorized. ``fake_iterations`` should match what real users have stored.
    """

    def __init__(
        self,
        name: str,
        nonce_factory: Callable[[], str] | None = None,
        *,
        fake_iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        if name not in _SCRAM_HASHES:
            raise SaslFailure("invalid-mechanism", name)
        self.name = name
        self._hash = _SCRAM_HASHES[name]
        self._nonce_factory = nonce_factory or _default_nonce
        self._fake_iterations = fake_iterations
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._username = ""
        self._authzid: str | None = None
        self._creds: ScramCredentials | None = None

    def _first(self, data: bytes) -> Step:
        cbflag, sep1, rest = _decode(data).partition(",")
        authz, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise _malformed("missing gs2 header")
        if cbflag.startswith("p="):
            raise _malformed("channel binding is not supported")
        if cbflag not in ("n", "y"):
            raise _malformed("invalid gs2 channel binding flag")
        if authz:
            if not authz.startswith("a=") or len(authz) == 2:
                raise _malformed("invalid authzid")
            self._authzid = _unescape_saslname(authz[2:])
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise _malformed("mandatory extensions are not supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise _malformed("expected n=...,r=...")
        _check_extensions(attrs[2:])
        try:
            username = saslprep(_unescape_saslname(attrs[0][2:]))
        except ValueError:
            raise _malformed("invalid username") from None
        cnonce = attrs[1][2:]
        if not username:
            raise _malformed("empty username")
        if not cnonce or not _NONCE_CHARS.issuperset(cnonce):
            raise _malformed("invalid client nonce")
        self._gs2_header = f"{cbflag},{authz},"
        self._client_first_bare = bare
        self._username = username
        self._nonce = cnonce
        self._state = _AWAIT_CREDS
        return NeedCredentials(username)

    def credentials(self, creds: ScramCredentials | None) -> Step:
        self._expect(_AWAIT_CREDS)
        if creds is not None and creds.hash_name == self._hash:
            self._creds = creds
            salt, iterations = creds.salt, creds.iterations
        else:
            self._creds = None
            salt, iterations = _fake_salt(self._username), self._fake_iterations
        snonce = self._nonce_factory()
        if not snonce or not _NONCE_CHARS.issuperset(snonce):
            raise ValueError("nonce_factory returned an invalid nonce")
        self._nonce += snonce
        salt_b64 = base64.b64encode(salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt_b64},i={iterations}"
        self._state = _AWAIT_FINAL
        return Challenge(self._server_first.encode("ascii"))

    def _final(self, data: bytes) -> Step:
        without_proof, sep, proof_b64 = _decode(data).rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise _malformed("expected c=...,r=...,p=...")
        _check_extensions(attrs[2:])
        cbind = _b64decode(attrs[0][2:])
        proof = _b64decode(proof_b64)
        if cbind != self._gs2_header.encode("utf-8"):
            raise _malformed("channel binding does not match gs2 header")
        if attrs[1][2:] != self._nonce:
            raise _malformed("nonce mismatch")
        size = _DIGEST_SIZES[self._hash]
        if len(proof) != size:
            raise _malformed("client proof has the wrong length")
        creds = self._creds
        stored_key = creds.stored_key if creds else bytes(size)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        ok = hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), stored_key)
        if creds is None or not ok:
            raise SaslFailure("not-authorized")
        server_signature = hmac.digest(creds.server_key, auth_message, self._hash)
        return Success(self._username, self._authzid, b"v=" + base64.b64encode(server_signature))


class PlainServer(_StepMachine):
    """PLAIN (RFC 4616): ``authzid NUL authcid NUL passwd``; offer it only over TLS.

    start()/respond() parse the message and return ``NeedCredentials``. ``credentials()`` runs
    PBKDF2 (via ``verify_plain_password``; for unknown users a dummy derivation of the same
    cost), so the driver must call it in a thread executor. It returns ``Success`` or raises
    not-authorized (temporary-auth-failure if the stored credentials use an unknown hash).
    """

    def __init__(self, *, fake_iterations: int = DEFAULT_ITERATIONS) -> None:
        self.name = "PLAIN"
        self._fake_iterations = fake_iterations
        self._username = ""
        self._authzid: str | None = None
        self._password = ""

    def _first(self, data: bytes) -> Step:
        parts = _decode(data).split("\0")
        if len(parts) != 3:
            raise _malformed("expected authzid NUL authcid NUL passwd")
        authzid, authcid, password = parts
        try:
            username = saslprep(authcid)
            saslprep(password)
        except ValueError:
            raise _malformed("prohibited character") from None
        if not username or not password:
            raise _malformed("empty username or password")
        self._username, self._authzid, self._password = username, authzid or None, password
        self._state = _AWAIT_CREDS
        return NeedCredentials(username)

    def credentials(self, creds: ScramCredentials | None) -> Step:
        self._expect(_AWAIT_CREDS)
        password, self._password = self._password, ""
        if creds is None:
            derive_scram_credentials(password, "sha256", self._fake_iterations, _fake_salt(self._username))
            raise SaslFailure("not-authorized")
        if creds.hash_name not in _DIGEST_SIZES or creds.iterations < 1:
            raise SaslFailure("temporary-auth-failure", "unusable stored credentials")
        if not verify_plain_password(password, creds):
            raise SaslFailure("not-authorized")
        return Success(self._username, self._authzid, b"")


def mechanisms_for(tls: bool, enabled: Sequence[str]) -> list[str]:
    """Mechanisms to advertise, strongest first; PLAIN only over TLS."""
    wanted = {m.upper() for m in enabled}
    return [m for m in ALL_MECHANISMS if m in wanted and (tls or m != "PLAIN")]


def make_mechanism(
    name: str,
    nonce_factory: Callable[[], str] | None = None,
    *,
    tls: bool = True,
    fake_iterations: int = DEFAULT_ITERATIONS,
) -> ServerMechanism:
    """Instantiate mechanism ``name``; raises invalid-mechanism, or encryption-required for
    PLAIN without TLS. The driver should also check ``name`` against what it advertised."""
    if name in _SCRAM_HASHES:
        return ScramServer(name, nonce_factory, fake_iterations=fake_iterations)
    if name == "PLAIN":
        if not tls:
            raise SaslFailure("encryption-required")
        return PlainServer(fake_iterations=fake_iterations)
    raise SaslFailure("invalid-mechanism", name)
