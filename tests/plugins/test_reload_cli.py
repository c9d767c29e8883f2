"""End to end with real processes: `mbeon-chat serve`, then `mbeon-chat reload`, `plugins ...` and SIGHUP,
exactly as an operator would use them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from reload_kit import ConfigFile, counter_source, write_plugin

ENABLED = ["ping", "adhoc", "admin_commands", "counter"]


def cli(cfg: ConfigFile, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbeon_chat.cli", "-c", str(cfg.path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(site, "counter", counter_source(1))
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ENABLED}, "log": {"level": "info"}})
    assert cli(cfg, "migrate").returncode == 0
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mbeon_chat.cli", "-c", str(cfg.path), "serve"], stderr=log, stdout=log
        )
    try:
        wait_for(lambda: any(e.get("event") == "server.started" for e in log_events(log_path)) or proc.poll())
        assert proc.poll() is None, log_path.read_text()
        yield cfg, site, proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_operator_commands_and_sighup_against_a_running_server(server: Any) -> None:
    cfg, site, proc, log_path = server

    done = cli(cfg, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "nothing changed" and "done in" in done.stdout

    cfg.write(
        {
            "plugins": {"enabled": ENABLED},
            "log": {"level": "debug"},
            "storage": {"url": ["sqlite+aiosqlite:///x"]},
        }
    )
    done = cli(cfg, "reload")
    assert done.returncode == 0, done.stderr
    assert "applied: log.level (immediately)" in done.stdout
    assert "needs restart: storage.url (the running server keeps the old value)" in done.stdout
    cfg.write({"plugins": {"enabled": ENABLED}, "log": {"level": "info"}})

    listing = cli(cfg, "plugins", "list")
    assert listing.returncode == 0 and "counter: loaded (site, v1)" in listing.stdout

    (site / "counter.py").write_text("def setup(api:\n")
    broken = cli(cfg, "reload", "--plugin", "counter")
    assert broken.returncode == 1
    assert f"reload failed, nothing changed: {site / 'counter.py'}:1: syntax error" in broken.stderr
    assert (
        "counter: loaded (site, v1, changed on disk: reload to apply)" in cli(cfg, "plugins", "list").stdout
    )

    proc.send_signal(signal.SIGHUP)
    failed = wait_for(
        lambda: [
            e
            for e in log_events(log_path)
            if e.get("event") == "server.reload_failed" and e.get("trigger") == "sighup"
        ]
    )
    assert f"{site / 'counter.py'}:1: syntax error" in failed[0]["error"]

    write_plugin(site, "counter", counter_source(2))
    proc.send_signal(signal.SIGHUP)
    ok = wait_for(
        lambda: [
            e
            for e in log_events(log_path)
            if e.get("event") == "server.reloaded" and e.get("trigger") == "sighup"
        ]
    )
    assert ok[0]["reloaded"] == ["counter"]

    assert cli(cfg, "plugins", "unload", "counter").returncode == 0
    assert "plugin loaded: counter" in cli(cfg, "plugins", "load", "counter").stdout
    status = cli(cfg, "status")
    assert status.returncode == 0 and "last reload (admin): ok" in status.stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not (Path(cfg.data["server"]["data_dir"]) / "admin.sock").exists()
    gone = cli(cfg, "reload")
    assert gone.returncode == 1 and "no server is running" in gone.stderr
    assert os.path.exists(log_path)
