"""The real server as a process: SIGTERM closes every session with <system-shutdown/> and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from clients import Client

MBEON_CHAT = str(Path(sys.executable).parent / "mbeon-chat")
PASSWORD = "alice-secret-1"


def free_ports(n: int) -> list[int]:
    """Ports nobody listens on right now (bound to port 0, then released)."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def write_config(tmp: Path, starttls: int, direct_tls: int, http: int) -> Path:
    config = tmp / "mbeon-chat.toml"
    config.write_text(
        f"""
[server]
domain = "localhost"
data_dir = "{tmp / "var"}"

[log]
level = "warning"

[listeners]
starttls = ["127.0.0.1:{starttls}"]
direct_tls = ["127.0.0.1:{direct_tls}"]
http = ["127.0.0.1:{http}"]
admin_socket = "{tmp / "admin.sock"}"
"""
    )
    return config


def cli(config: Path, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBEON_")}
    result = subprocess.run(
        [MBEON_CHAT, "-c", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def wait_for_port(port: int, process: asyncio.subprocess.Process, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"the server exited early with {process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def test_sigterm_sends_system_shutdown_and_exits_0(tmp_path: Path) -> None:
    starttls, direct_tls, http = free_ports(3)
    config = write_config(tmp_path, starttls, direct_tls, http)
    cli(config, "migrate")
    assert "created alice@localhost" in cli(
        config, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("MBEON_")}
    server = await asyncio.create_subprocess_exec(
        MBEON_CHAT, "-c", str(config), "serve", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    client: Client | None = None
    try:
        await wait_for_port(starttls, server)
        client = Client("alice@localhost/shutdown", PASSWORD)
        context = ssl.create_default_context(cafile=str(tmp_path / "var" / "certs" / "localhost.crt"))
        context.check_hostname = False
        client.ssl_context = context
        client.enable_plaintext = False
        client.connect(host="127.0.0.1", port=starttls)
        assert await asyncio.wait_for(client.session_started, 15), "login failed"

        server.send_signal(signal.SIGTERM)
        error = await asyncio.wait_for(client.stream_errors.get(), 15)
        assert error["condition"] == "system-shutdown"
        await asyncio.wait_for(client.closed.wait(), 15)
        code = await asyncio.wait_for(server.wait(), 30)
        _, stderr = await server.communicate()
        assert code == 0, stderr.decode()
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", starttls)
            writer.close()
            raise AssertionError("the listener is still open after exit")
    finally:
        if client is not None:
            client.disconnect()
        if server.returncode is None:
            server.kill()
            with contextlib.suppress(Exception):
                await server.wait()
