"""A minimal XMPP client for load generation: raw byte templates, no XML parser.

Connect, STARTTLS (certificate checks off: every server under test uses a self-signed certificate),
SASL SCRAM-SHA-1 (the one mechanism Prosody 0.12, ejabberd and mbeon-chat all offer over the same stored
credentials; the salted password is cached per salt as RFC 5802 5.1 allows, so only the first login of an
account pays PBKDF2 on the client), resource binding and initial presence.

Negotiation waits for byte markers (``</stream:features>``, ``<proceed``, ``</challenge>`` ...), which all
three servers write the same way. Once the session is established, :attr:`XmppClient.on_data` takes the
raw decrypted bytes and a scenario scans them (see :class:`StanzaScanner`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import ssl
import time
from collections.abc import Callable

NS_SASL = b"urn:ietf:params:xml:ns:xmpp-sasl"
_SALTED: dict[tuple[str, bytes, int], bytes] = {}


def client_ssl_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class XmppError(Exception):
    pass


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _between(data: bytes, start: bytes, end: bytes) -> bytes:
    i = data.find(start)
    if i < 0:
        return b""
    i = data.find(b">", i) + 1
    j = data.find(end, i)
    return data[i:j] if j >= 0 else b""


class ScramSha1:
    """The client side of SCRAM-SHA-1 (RFC 5802), without channel binding."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={username},r={self.nonce}"

    def initial(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def respond(self, challenge: bytes) -> bytes:
        server_first = challenge.decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        nonce = fields["r"]
        if not nonce.startswith(self.nonce):
            raise XmppError("SCRAM: server nonce does not extend ours")
        salt = base64.b64decode(fields["s"])
        iterations = int(fields["i"])
        key = (self.password, salt, iterations)
        salted = _SALTED.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha1", self.password.encode(), salt, iterations)
            _SALTED[key] = salted
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        stored_key = hashlib.sha1(client_key).digest()
        without_proof = "c=biws,r=" + nonce
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()


class XmppClient(asyncio.Protocol):
    """One client connection. ``await login()`` then set :attr:`on_data` and use :meth:`write`."""

    def __init__(self, domain: str, username: str, password: str, resource: str) -> None:
        self.domain = domain
        self.username = username
        self.password = password
        self.resource = resource
        self.jid = f"{username}@{domain}/{resource}"
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.on_data: Callable[[bytes], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wants: tuple[bytes, ...] = ()
        self.lost = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        on_data = self.on_data
        if on_data is not None:
            on_data(data)
            return
        self.buf += data
        w = self._waiter
        if w is not None and not w.done() and any(m in self.buf for m in self._wants):
            w.set_result(None)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(XmppError(f"connection lost: {exc}"))

    # --- helpers ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def expect(self, *markers: bytes, timeout: float = 30.0) -> bytes:
        """Wait until one of ``markers`` is buffered; return and consume everything up to and including the
        first one found."""
        if not any(m in self.buf for m in markers):
            if self.lost:
                raise XmppError("connection lost")
            self._wants = markers
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise XmppError(f"timeout waiting for {markers!r}; have {bytes(self.buf[-300:])!r}") from None
            finally:
                self._waiter = None
        ends = [i + len(m) for m in markers if (i := self.buf.find(m)) >= 0]
        i = min(ends)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def _header(self) -> bytes:
        return (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.domain}' version='1.0'>"
        ).encode()

    async def _open(self) -> bytes:
        self.write(self._header())
        return await self.expect(b"</stream:features>")

    # --- the login ---------------------------------------------------------------------------------
    async def login(
        self,
        host: str,
        port: int,
        ssl_ctx: ssl.SSLContext | None,
        presence: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, float]:
        """Connect and negotiate up to initial presence. Returns phase timings (seconds).

        ``ssl_ctx=None`` skips STARTTLS (diagnostics only: it isolates the cost of TLS)."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port), timeout)
        feats = await self._open()
        if ssl_ctx is not None:
            if b"starttls" not in feats:
                raise XmppError("no STARTTLS offered")
            self.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            await self.expect(b"<proceed")
            await self.expect(b">")  # <proceed .../>
            self.buf.clear()
            assert self.transport is not None
            self.transport = await loop.start_tls(
                self.transport, self, ssl_ctx, server_hostname=self.domain, ssl_handshake_timeout=timeout
            )
            feats = await self._open()
        t_tls = time.perf_counter()
        if b"SCRAM-SHA-1<" not in feats:
            raise XmppError(f"SCRAM-SHA-1 not offered: {feats[-400:]!r}")
        scram = ScramSha1(self.username, self.password)
        self.write(b"<auth xmlns='%s' mechanism='SCRAM-SHA-1'>%s</auth>" % (NS_SASL, _b64(scram.initial())))
        got = await self._sasl_reply(b"challenge")
        challenge = base64.b64decode(_between(got, b"<challenge", b"</challenge>"))
        self.write(b"<response xmlns='%s'>%s</response>" % (NS_SASL, _b64(scram.respond(challenge))))
        await self._sasl_reply(b"success")
        t_auth = time.perf_counter()
        feats = await self._open()
        if b"bind" not in feats:
            raise XmppError("no resource binding offered")
        self.write(
            b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>%s</resource></bind></iq>" % self.resource.encode()
        )
        got = await self.expect(b"</iq>")
        if b"result" not in got:
            raise XmppError(f"bind failed: {got[-300:]!r}")
        jid = _between(got, b"<jid", b"</jid>")
        if jid:
            self.jid = jid.decode()
        t_bind = time.perf_counter()
        if presence:
            self.write(b"<presence/>")
        return {"tls": t_tls - t0, "auth": t_auth - t0, "bind": t_bind - t0}

    async def _sasl_reply(self, wanted: bytes) -> bytes:
        # SCRAM's challenge and success both carry data, so each ends with a closing tag.
        got = await self.expect(b"</challenge>", b"</success>", b"</failure>")
        if b"<failure" in got or wanted not in got:
            raise XmppError(f"SASL: expected {wanted!r}, got {got[-300:]!r}")
        return got

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(b"</stream:stream>")
            self.transport.close()


class StanzaScanner:
    """Find complete ``<message>`` stanzas in a byte stream and hand out their body keys.

    A key is the body text up to its first space: scenarios write ``<body>KEY padding</body>``. Every
    server keeps the body byte for byte, so the key survives any attribute rewriting. Other top-level
    elements (presence, iq) are skipped. Error messages (``type='error'``) are counted, not delivered.
    """

    __slots__ = ("buf", "errors")

    def __init__(self) -> None:
        self.buf = b""
        self.errors = 0

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data if self.buf else data
        keys: list[bytes] = []
        pos = 0
        find = buf.find
        while True:
            start = find(b"<message", pos)
            if start < 0:
                # keep a tail that could hold the start of "<message"
                self.buf = buf[-8:] if len(buf) - pos >= 8 else buf[pos:]
                return keys
            end = find(b"</message>", start)
            if end < 0:
                self.buf = buf[start:]
                return keys
            head_end = find(b">", start)
            head = buf[start:head_end]
            if b"'error'" in head or b'"error"' in head:
                self.errors += 1
            else:
                b = find(b"<body>", head_end, end)
                if b >= 0:
                    b += 6
                    sp = find(b" ", b, end)
                    if sp < 0:
                        sp = find(b"<", b, end)
                    keys.append(buf[b:sp])
            pos = end + 10
