"""Live configuration: limits reach new connections while open sessions keep working; a new certificate
applies to new STARTTLS and direct TLS connections (with and without SNI) without closing open ones;
listeners come and go without touching sessions; a listener that cannot open fails the whole reload;
file watching reloads a changed plugin."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from reload_kit import ConfigFile, counter_source, write_plugin

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.transport.tls import ensure_self_signed

PLUGINS = ["ping", "adhoc", "admin_commands"]
HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def der(cert_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_path.read_text())


async def direct_tls_cert(port: int, sni: str | None) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=insecure(), server_hostname=sni)
    try:
        cert: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return cert
    finally:
        writer.close()


async def starttls_cert(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HEADER)
        await reader.readuntil(b"</stream:features>")
        writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await reader.readuntil(b"/>")
        await writer.start_tls(insecure(), server_hostname="localhost")
        cert: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return cert
    finally:
        writer.close()


async def connect_at(srv: RunningServer, user: str, port: int, resource: str = "test") -> Client:
    client = Client(f"{srv.jid(user)}/{resource}", srv.users[user])
    client.ssl_context = srv.client_ssl()
    client.enable_plaintext = False
    client.connect(host="127.0.0.1", port=port)
    assert await asyncio.wait_for(client.session_started, 15)
    return client


async def exchange(srv: RunningServer, a: Client, b: Client, body: str) -> None:
    b_user = str(b.boundjid.bare).split("@")[0]
    a.send_message(mto=f"{srv.jid(b_user)}/{b.boundjid.resource}", mbody=body, mtype="chat")
    assert (await b.next_message())["body"] == body


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    return d


async def test_new_limits_reach_new_connections_and_open_sessions_keep_working(
    tmp_path: Path, site: Path
) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": PLUGINS}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        old_a = await connect(srv, "alice", "old", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            cfg.write({"plugins": {"enabled": PLUGINS}, "limits": {"max_stanza_size": 2048}})
            report = await srv.app.reload()
            assert report.ok and "applied: limits.max_stanza_size (new connections)" in report.lines()
            big = "x" * 4000
            await exchange(srv, old_a, bob, big)  # the open session keeps its limits

            new_a = await connect(srv, "alice", "new", get_roster=False, send_presence=False)
            new_a.send_message(mto=f"{srv.jid('bob')}/test", mbody=big, mtype="chat")
            error = await asyncio.wait_for(new_a.stream_errors.get(), 10)
            assert error["condition"] == "policy-violation"
            await asyncio.wait_for(new_a.closed.wait(), 10)
            await exchange(srv, old_a, bob, "still here")
        finally:
            await disconnect(old_a, bob)


async def test_a_new_certificate_applies_to_new_connections_without_closing_open_ones(
    tmp_path: Path, site: Path
) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": PLUGINS}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        old_cert = der(srv.data_dir / "certs" / "localhost.crt")
        assert await direct_tls_cert(srv.direct_tls_port, "localhost") == old_cert
        assert await starttls_cert(srv.starttls_port) == old_cert
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", direct_tls=True, get_roster=False, send_presence=False)
        try:
            new_cert_path, new_key_path = ensure_self_signed(tmp_path / "renewed", "localhost")
            new_cert = der(new_cert_path)
            assert new_cert != old_cert
            cfg.write(
                {
                    "plugins": {"enabled": PLUGINS},
                    "tls": {"cert": str(new_cert_path), "key": str(new_key_path)},
                }
            )
            report = await srv.app.reload()
            assert report.ok, report.error
            assert "applied: tls.cert (new connections; open ones keep their TLS session)" in report.lines()

            assert await starttls_cert(srv.starttls_port) == new_cert
            assert await direct_tls_cert(srv.direct_tls_port, "localhost") == new_cert  # SNI
            assert await direct_tls_cert(srv.direct_tls_port, None) == new_cert  # no SNI

            await exchange(srv, alice, bob, "over the old TLS sessions")
            await exchange(srv, bob, alice, "both ways")

            # the same file renewed in place (certbot style): a plain reload picks it up
            new_cert_path.unlink()
            new_key_path.unlink()
            ensure_self_signed(tmp_path / "renewed", "localhost")
            renewed = der(new_cert_path)
            report = await srv.app.reload()
            assert report.ok and "tls.cert" in report.applied
            assert await direct_tls_cert(srv.direct_tls_port, None) == renewed
            assert await starttls_cert(srv.starttls_port) == renewed
            await exchange(srv, alice, bob, "still fine")
        finally:
            await disconnect(alice, bob)


async def test_listeners_come_and_go_without_touching_sessions(tmp_path: Path, site: Path) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": PLUGINS}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        old_port = srv.starttls_port
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", direct_tls=True, get_roster=False, send_presence=False)
        try:
            port = free_port()
            listeners = {
                "starttls": ["127.0.0.1:0", f"127.0.0.1:{port}"],
                "direct_tls": ["127.0.0.1:0"],
                "http": ["127.0.0.1:0"],
            }
            cfg.write({"plugins": {"enabled": PLUGINS}, "listeners": listeners})
            report = await app.reload()
            assert report.ok and "listeners.starttls" in report.applied
            carol = await connect_at(srv, "carol", port)
            await exchange(srv, alice, carol, "hello on the new port")

            # drop the original STARTTLS port: nobody is disconnected, new connections there are refused
            listeners["starttls"] = [f"127.0.0.1:{port}"]
            cfg.write({"plugins": {"enabled": PLUGINS}, "listeners": listeners})
            assert (await app.reload()).ok
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", old_port)
            await exchange(srv, alice, carol, "the session on the closed listener lives on")
            await exchange(srv, carol, bob, "and the direct TLS one")
            assert not any(c.closed.is_set() for c in (alice, bob, carol))

            # a port that cannot be opened fails the whole reload: nothing else changes either
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                broken = {**listeners, "direct_tls": ["127.0.0.1:0", f"127.0.0.1:{busy}"]}
                cfg.write({"plugins": {"enabled": PLUGINS}, "listeners": broken, "log": {"level": "error"}})
                before = app.config
                report = await app.reload()
            assert not report.ok
            assert report.error.startswith(f"listeners.direct_tls[1]: cannot listen on 127.0.0.1:{busy}")
            assert app.config is before and app.config.log.level == "warning"
            assert sorted(app.listeners) == sorted(
                [("starttls", f"127.0.0.1:{port}"), ("direct_tls", "127.0.0.1:0")]
            )
            await exchange(srv, bob, alice, "all still here")
        finally:
            await disconnect(alice, bob)


async def test_file_watching_reloads_a_changed_plugin(tmp_path: Path, site: Path) -> None:
    write_plugin(site, "counter", counter_source(1))
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": [*PLUGINS, "counter"], "watch": True}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        await asyncio.sleep(0.3)  # the watcher is up
        write_plugin(site, "counter", counter_source(2))
        for _ in range(200):
            if app.ctx.exports["counter"]["generation"] == 2:
                break
            await asyncio.sleep(0.05)
        assert app.ctx.exports["counter"]["generation"] == 2
        assert app.last_reload is not None and app.last_reload.trigger == "watch"

        # switching it off is live too (and the watcher noticed that change itself)
        cfg.write({"plugins": {"enabled": [*PLUGINS, "counter"], "watch": False}})
        for _ in range(200):
            if app._watcher is None:
                break
            await asyncio.sleep(0.05)
        assert app._watcher is None and not app.config.plugins.watch
        write_plugin(site, "counter", counter_source(3))
        await asyncio.sleep(2.5)
        assert app.ctx.exports["counter"]["generation"] == 2
