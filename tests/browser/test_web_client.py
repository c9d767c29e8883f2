"""End to end in a real browser: a counsellor chats through /chat/ (converse.js) with a slixmpp client.

Needs Debian's chromium and ``npm ci`` in web/ (both done by scripts/setup-web.sh). Outside CI the test
skips with the reason when they are missing; with CI=true it fails instead. The screenshot lands in
test-artifacts/web-client.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from clients import connect, disconnect
from harness import running_server
from mbeon_chat.plugin.host import BUILTIN_DIR
from mbeon_chat.xmpp.jid import JID

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DEFAULT_PLUGINS = ("ping", "disco", "version", "roster", "presence", "offline", "register", "time")
USERS = {"counsellor": "counsellor-secret-1", "young": "young-person-secret-2"}
BUDGET = 60.0  # seconds for the whole browser conversation


def missing_prerequisites() -> list[str]:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        missing.append("web/node_modules/playwright-core (npm ci in web/)")
    if not (WEB / "node_modules" / "converse.js" / "dist" / "converse.min.js").is_file():
        missing.append("web/node_modules/converse.js (npm ci in web/)")
    return missing


@pytest.fixture
def browser_ready() -> None:
    missing = missing_prerequisites()
    if missing:
        reason = "browser test needs " + ", ".join(missing) + ": run scripts/setup-web.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def plugins() -> list[str]:
    return [p for p in DEFAULT_PLUGINS if (BUILTIN_DIR / f"{p}.py").is_file() or (BUILTIN_DIR / p).is_dir()]


async def next_step(proc: asyncio.subprocess.Process, deadline: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            raise AssertionError("the browser script ended early")
        with contextlib.suppress(ValueError):
            step = dict(json.loads(line))
            if step.get("step") == "failed":
                print(json.dumps(step, indent=1))
            return step


async def test_counsellor_chats_in_the_browser(tmp_path: Path, browser_ready: None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "web-client.png"
    screenshot.unlink(missing_ok=True)
    node_log = ARTIFACTS / "web-client-node.log"
    hello = "Hi, I need someone to talk to"
    reply = "Hello, I am here for you. What is on your mind?"
    started = time.monotonic()
    deadline = started + BUDGET
    overrides = {"plugins": {"enabled": plugins()}}
    async with running_server(tmp_path, overrides, users=USERS) as srv:
        loaded = srv.app.plugins.loaded
        young = await connect(srv, "young", get_roster="roster" in loaded)
        if "presence" not in loaded:
            # Without the presence plugin nothing marks a session available; the counsellor's reply goes to
            # the young person's bare JID, which needs an available resource.
            for session in srv.app.registry.resources(JID.parse(srv.jid("young"))):
                session.available = True
        env = {
            **os.environ,
            "BASE_URL": f"http://127.0.0.1:{srv.http_port}",
            "COUNSELLOR_USER": "counsellor",
            "COUNSELLOR_PASSWORD": USERS["counsellor"],
            "EXPECT_TEXT": hello,
            "EXPECT_FROM": srv.jid("young"),
            "REPLY_TEXT": reply,
            "SCREENSHOT": str(screenshot),
            "CHROMIUM": CHROMIUM,
        }
        node_stderr = node_log.open("wb")
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(WEB / "e2e" / "chat.mjs"),
            cwd=WEB,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=node_stderr,
        )
        try:
            step = await next_step(proc, deadline)
            assert step["step"] == "logged-in", step
            assert "script-src 'self'" in step["csp"]
            counsellor = srv.app.registry.resources(JID.parse(srv.jid("counsellor")))
            assert len(counsellor) == 1, "the browser holds one session"
            assert counsellor[0].conn.transport_name == "websocket"
            young.send_message(mto=str(counsellor[0].jid), mbody=hello, mtype="chat")

            step = await next_step(proc, deadline)
            assert step["step"] == "message-seen", step
            step = await next_step(proc, deadline)
            assert step["step"] == "replied", step
            received = await young.next_message(timeout=max(1.0, deadline - time.monotonic()))
            assert received["body"] == reply
            assert received["from"].bare == srv.jid("counsellor")

            step = await next_step(proc, deadline)
            assert step["step"] == "done", step
            print("browser report:", json.dumps(step))
            assert step["foreign"] == [], "the page made requests to other origins"
            assert step["csp_violations"] == []
            assert await asyncio.wait_for(proc.wait(), max(1.0, deadline - time.monotonic())) == 0
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            print("browser script stderr:", node_log.read_text(errors="replace")[-4000:])
            raise
        finally:
            node_stderr.close()
            await disconnect(young)
    assert screenshot.is_file()
    print(f"browser conversation took {time.monotonic() - started:.1f} s; screenshot: {screenshot}")
