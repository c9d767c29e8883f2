"""Monitoring: /metrics after a scripted conversation, who may read it, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from test_websocket import CLIENT, WsClient, server_overrides

from clients import connect, disconnect
from harness import running_server


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text (labels given in any order); 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


async def settled(http: aiohttp.ClientSession, url: str, name: str, value: float, **labels: str) -> str:
    """/metrics once ``name`` reached ``value`` (connections close asynchronously), or after 5 s."""
    for _ in range(50):
        _, text = await get_text(http, url)
        if sample(text, name, **labels) == value:
            break
        await asyncio.sleep(0.1)
    return text


async def get_text(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with http.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


async def test_metrics_count_a_scripted_conversation_without_naming_anyone(tmp_path: Path) -> None:
    async with running_server(tmp_path, server_overrides()) as srv, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{srv.http_port}/metrics"
        status, before = await get_text(http, url)
        assert status == 200
        assert sample(before, "mbeon_connections", transport="websocket") == 0
        assert sample(before, "mbeon_auth_total", result="failure") == 0

        bob = await connect(srv, "bob", get_roster="roster" in srv.app.plugins.loaded)
        alice = await WsClient.open(http, srv)
        alice_jid = await alice.login("alice", srv.users["alice"])
        with pytest.raises(PermissionError):
            await connect(srv, "carol", password="not-carols-password", timeout=10)
        for n in range(3):
            await alice.send(
                f'<message xmlns="{CLIENT}" to="{bob.boundjid.full}" type="chat"><body>m{n}</body></message>'
            )
            await bob.next_message()
        bob.send_message(mto=alice_jid, mbody="reply", mtype="chat")
        await alice.recv_until(f"{{{CLIENT}}}message")
        await srv.app.reload("ping")

        # The refused login's connection closes on its own time.
        text = await settled(http, url, "mbeon_connections", 1, transport="tcp")
        assert sample(text, "mbeon_connections", transport="websocket") == 1
        assert sample(text, "mbeon_connections", transport="tcp") == 1
        assert sample(text, "mbeon_sessions") == 2
        assert sample(text, "mbeon_auth_total", result="success") == 2
        assert sample(text, "mbeon_auth_total", result="failure") == 1
        assert sample(text, "mbeon_stanzas_in_total", kind="message") >= 4
        assert sample(text, "mbeon_stanzas_out_total", kind="message") >= 4
        assert sample(text, "mbeon_routing_seconds_count", kind="message") >= 4
        assert sample(text, "mbeon_db_seconds_count", txn="accounts.get", result="ok") >= 2
        assert sample(text, "mbeon_plugin_reloads_total", result="ok") == 1
        for secret in ("alice", "bob", "carol", "m0", "reply", srv.domain + "/"):
            assert secret not in text, f"/metrics exposes {secret!r}"

        await alice.close()
        await disconnect(bob)
        await settled(http, url, "mbeon_connections", 0, transport="websocket")
        await settled(http, url, "mbeon_connections", 0, transport="tcp")
        text = await settled(http, url, "mbeon_sessions", 0)
        assert sample(text, "mbeon_connections", transport="websocket") == 0
        assert sample(text, "mbeon_connections", transport="tcp") == 0
        assert sample(text, "mbeon_sessions") == 0


async def test_metrics_on_the_http_listener_are_for_loopback_clients_only(tmp_path: Path) -> None:
    async with running_server(tmp_path, server_overrides()) as srv, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{srv.http_port}/metrics"
        status, _ = await get_text(http, url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert status == 403, "a request relayed by a reverse proxy is not a loopback client"
        status, _ = await get_text(http, url, headers={"Forwarded": "for=203.0.113.9"})
        assert status == 403


async def test_metrics_listener_takes_metrics_off_the_http_listener(tmp_path: Path) -> None:
    overrides = server_overrides(listeners={"metrics": ["127.0.0.1:0"]})
    async with running_server(tmp_path, overrides) as srv, aiohttp.ClientSession() as http:
        status, _ = await get_text(http, f"http://127.0.0.1:{srv.http_port}/metrics")
        assert status == 404
        metrics_base = f"http://127.0.0.1:{srv.app.http.metrics_port()}"
        status, text = await get_text(http, metrics_base + "/metrics")
        assert status == 200 and "mbeon_connections" in text
        status, _ = await get_text(http, metrics_base + "/readyz")
        assert status == 200
        status, _ = await get_text(http, metrics_base + "/xmpp-websocket")
        assert status == 404, "the metrics listener serves nothing else"


async def test_readyz_turns_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    url = f"sqlite+aiosqlite:///{db_dir / 'mbeon.db'}"
    async with (
        running_server(tmp_path, server_overrides(), storage_url=url) as srv,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{srv.http_port}"
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ready"}

        # The database goes away: its directory is gone and the pool holds no open connection.
        shutil.rmtree(db_dir)
        await srv.app.storage.database.engine.dispose()
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unavailable"
        assert body["reasons"] == ["the database does not answer"]
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200, "the process itself is alive"

        db_dir.mkdir()  # back (empty, but answering): ready again
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 200


async def test_readyz_names_a_client_listener_that_is_down(tmp_path: Path) -> None:
    async with running_server(tmp_path, server_overrides()) as srv, aiohttp.ClientSession() as http:
        (key,) = [k for k in srv.app.listeners if k[0] == "direct_tls"]
        srv.app.listeners[key].close()
        async with http.get(f"http://127.0.0.1:{srv.http_port}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["reasons"] == [f"the direct_tls listener {key[1]} is down"]
