"""A tiny run of the benchmark's load generator against our server: it must keep working (no figures)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from harness import running_server

LOADGEN = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "loadgen.py"
PASSWORD = "bench-password"
USERS = {f"u{n}": PASSWORD for n in range(1, 5)}


async def loadgen(port: int, *args: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOADGEN),
        *args,
        "--port",
        str(port),
        "--password",
        PASSWORD,
        "--procs",
        "1",
        "--duration",
        "10",
        "--drain",
        "1",
        "--setup-timeout",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-2000:]
    result: dict[str, object] = json.loads(lines[-1])
    assert "error" not in result, result
    return result


async def test_the_chat_scenario_delivers_every_message_over_tls(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=USERS) as srv:
        result = await loadgen(srv.starttls_port, "chat", "--pairs", "2", "--messages", "20", "--window", "5")
    assert result["delivered"] == 2 * 2 * 20
    assert result["lost"] == 0 and result["errors"] == 0
    assert float(result["p99_ms"]) > 0  # type: ignore[arg-type]


async def test_the_muc_scenario_fans_out_to_every_occupant(tmp_path: Path) -> None:
    overrides = {
        "plugins": {
            "enabled": ["ping", "disco", "roster", "presence", "muc"],
            "muc": {"creators": ["*"], "default_members_only": False, "default_persistent": False},
        }
    }
    async with running_server(tmp_path, overrides=overrides, users=USERS) as srv:
        result = await loadgen(
            srv.starttls_port, "muc", "--rooms", "1", "--occupants", "3", "--messages", "5"
        )
    assert result["delivered"] == 3 * 5 * 3  # every message to every occupant, the sender's echo included
    assert result["lost"] == 0
