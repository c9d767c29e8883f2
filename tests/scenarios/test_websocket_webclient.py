"""The /chat/ web client as HTTP: served from this server only, under a strict CSP; 503 until installed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from test_websocket import server_overrides

from harness import running_server

pytestmark = pytest.mark.asyncio
JAVASCRIPT = ("text/javascript", "application/javascript")


async def test_chat_answers_503_with_the_setup_hint_until_converse_is_installed(tmp_path: Path) -> None:
    empty = tmp_path / "no-converse"
    empty.mkdir()
    overrides = server_overrides(web={"converse_dir": str(empty)})
    async with running_server(tmp_path, overrides) as srv, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{srv.http_port}"
        for path in ("/chat/", "/chat/dist/converse.min.js", "/chat/config.json"):
            async with http.get(base + path) as resp:
                assert resp.status == 503, path
                assert "scripts/setup-web.sh" in await resp.text()
        async with http.get(base + "/chat", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/chat/"


async def test_chat_can_be_switched_off(tmp_path: Path) -> None:
    overrides = server_overrides(web={"chat": False})
    async with running_server(tmp_path, overrides) as srv, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{srv.http_port}/chat/"
        async with http.get(url) as resp:
            assert resp.status == 404


async def test_chat_page_config_and_assets_come_from_this_server_under_a_strict_csp(tmp_path: Path) -> None:
    fake = tmp_path / "converse-dist"
    (fake / "chunkjs").mkdir(parents=True)
    (fake / "converse.min.js").write_text("window.converse = {};\n")
    (fake / "converse.min.css").write_text("body {}\n")
    (fake / "chunkjs" / "emoji.js").write_text("export default {};\n")
    (tmp_path / "secret.txt").write_text("not for the web\n")
    overrides = server_overrides(web={"converse_dir": str(fake)}, server={"domain": "chat.example.org"})
    async with running_server(tmp_path, overrides, users={}) as srv, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{srv.http_port}"
        async with http.get(base + "/chat/") as resp:
            assert resp.status == 200
            page = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        assert '<script type="module" src="/chat/dist/converse.min.js">' in page
        assert "http://" not in page.replace("http://127.0.0.1", "") and "https://" not in page
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["img-src"] == "'self' data: blob:"
        assert directives["frame-ancestors"] == "'none'"
        host = f"127.0.0.1:{srv.http_port}"
        assert directives["connect-src"].split() == ["'self'", f"ws://{host}", f"wss://{host}"]

        async with http.get(base + "/chat/config.json") as resp:
            config = await resp.json()
        assert config["domain"] == "chat.example.org"
        assert config["websocket_path"] == "/xmpp-websocket"
        assert config["websocket_url"] is None  # derived from the page's location

        async with http.get(base + "/chat/init.js") as resp:
            assert resp.status == 200
            assert resp.content_type in JAVASCRIPT
            init = await resp.text()
        assert "authentication: 'login'" in init and "auto_reconnect: true" in init
        assert "discover_connection_methods: false" in init

        async with http.get(base + "/chat/dist/chunkjs/emoji.js") as resp:
            assert resp.status == 200
            assert resp.content_type in JAVASCRIPT
        for escape in (
            "/chat/dist/../../secret.txt",
            "/chat/dist/%2e%2e/%2e%2e/secret.txt",
            "/chat/dist/nope.js",
        ):
            async with http.get(base + escape) as resp:
                assert resp.status == 404, escape
