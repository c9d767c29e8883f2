"""Nodes on a bus (mbeon_chat.cluster): users on different workers chat, and rooms live on one of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clients import connect, disconnect
from harness import DEFAULT_USERS, RunningServer, make_config
from mbeon_chat.app import App
from mbeon_chat.cluster.bus import Bus, LocalBus, LocalHub, SocketBus
from mbeon_chat.cluster.node import ClusterNode, wait_connected
from mbeon_chat.storage import migrate
from mbeon_chat.xmpp.jid import jid_from_str

PLUGINS = {
    "plugins": {
        "enabled": ["ping", "roster", "presence", "offline", "muc"],
        "muc": {"creators": ["*"], "default_members_only": False},
    }
}


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, carrier: str) -> AsyncIterator[list[RunningServer]]:
    """Two Apps in this process, one database, joined by a LocalBus or a SocketBus (Unix sockets)."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await migrate.upgrade(db, progress=lambda _: None)
    hub = LocalHub()
    nodes: list[RunningServer] = []
    buses: list[Bus] = []
    try:
        for i in range(2):
            config = make_config(tmp_path / f"node{i}", PLUGINS, storage_url=db)
            app = App(config, None, configure_logs=False)
            bus: Bus = (
                LocalBus(hub, str(i))
                if carrier == "local"
                else SocketBus(tmp_path / "bus", str(i), ["0", "1"])
            )
            app.cluster = ClusterNode(app.ctx, bus, home="0")
            await app.start()
            buses.append(bus)
            nodes.append(RunningServer(app, config.server.domain, config.data_dir, dict(DEFAULT_USERS)))
        for name, password in DEFAULT_USERS.items():
            if not await nodes[0].app.ctx.accounts.exists(name):
                await nodes[0].app.ctx.accounts.create(name, password)
        for bus in buses:
            await wait_connected(bus)
        yield nodes
    finally:
        for node in reversed(nodes):
            await node.app.stop(grace=5)


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("carrier", ["local", "socket"])
async def test_two_users_on_different_workers_chat(tmp_path: Path, carrier: str) -> None:
    async with two_nodes(tmp_path, carrier) as (one, two):
        alice = await connect(one, "alice")
        bob = await connect(two, "bob")
        alice_full, bob_full = jid_from_str(str(alice.boundjid)), jid_from_str(str(bob.boundjid))
        try:
            # each node learns the other's session (bound, then available) over the bus
            await settle(lambda: any(s.jid == bob_full for s in one.app.registry.available(bob_full.bare)))
            await settle(
                lambda: any(s.jid == alice_full for s in two.app.registry.available(alice_full.bare))
            )

            alice.send_message(mto=str(bob_full), mbody="to your full JID, across workers", mtype="chat")
            msg = await asyncio.wait_for(bob.next_message(), 5)
            assert msg["body"] == "to your full JID, across workers"
            assert msg["from"] == alice.boundjid

            bob.send_message(mto=one.jid("alice"), mbody="back to your bare JID", mtype="chat")
            msg = await asyncio.wait_for(alice.next_message(), 5)
            assert msg["body"] == "back to your bare JID"
            assert msg["from"] == bob.boundjid
        finally:
            await disconnect(alice, bob)
        # the end of a session reaches the other node
        await settle(lambda: one.app.registry.get(bob_full) is None)


async def test_a_room_lives_on_the_home_worker_with_occupants_on_both(tmp_path: Path) -> None:
    async with two_nodes(tmp_path, "local") as (one, two):
        alice = await connect(one, "alice")
        bob = await connect(two, "bob")
        room = "counselling@groups.localhost"
        muc_one = one.app.ctx.router.components["groups.localhost"]
        muc_two = two.app.ctx.router.components["groups.localhost"]
        try:
            alice.send_presence(pto=f"{room}/alice")
            await asyncio.wait_for(alice.next_presence(from_=f"{room}/alice"), 5)
            alice.send_raw(
                f"<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
            )
            await settle(lambda: not muc_one.rooms[jid_from_str(room)].locked)
            bob.send_presence(pto=f"{room}/bob")  # from node two, to the room on node one
            await asyncio.wait_for(bob.next_presence(from_=f"{room}/bob"), 5)
            assert len(muc_one.rooms) == 1 and len(muc_two.rooms) == 0

            alice.send_message(mto=room, mbody="welcome, both of you", mtype="groupchat")
            msg = await asyncio.wait_for(bob.next_message(), 5)
            assert msg["body"] == "welcome, both of you"
            assert str(msg["from"]) == f"{room}/alice"
        finally:
            await disconnect(alice, bob)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_workers_share_one_port_and_route_to_each_other(tmp_path: Path) -> None:
    """`mbeon-chat serve` with server.workers = 2, driven by the benchmark's load generator."""
    port = free_port()
    data = tmp_path / "var"
    config = tmp_path / "mbeon.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data}"\nworkers = 2\n[log]\nlevel = "warning"\n'
        f'[listeners]\nstarttls = ["127.0.0.1:{port}"]\ndirect_tls = []\nhttp = []\n'
        '[plugins]\nenabled = ["ping", "roster", "presence", "offline", "muc"]\nsite_dirs = []\n'
        '[plugins.muc]\ncreators = ["*"]\ndefault_members_only = false\ndefault_persistent = false\n'
    )
    exe = [sys.executable, "-m", "mbeon_chat.cli", "-c", str(config)]
    env = {**os.environ}
    proc = await asyncio.create_subprocess_exec(*exe, "migrate", stdout=asyncio.subprocess.DEVNULL, env=env)
    assert await proc.wait() == 0
    for n in range(1, 13):
        proc = await asyncio.create_subprocess_exec(
            *exe,
            "user",
            "add",
            f"u{n}",
            "--password-stdin",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=env,
        )
        await proc.communicate(b"bench-password\n")
    server = await asyncio.create_subprocess_exec(*exe, "serve", stderr=asyncio.subprocess.PIPE, env=env)
    try:
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(OSError):
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                await asyncio.sleep(0.2)
        loadgen = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "loadgen.py"
        for args in (
            ["chat", "--pairs", "6", "--messages", "20"],
            ["muc", "--rooms", "2", "--occupants", "6", "--messages", "5"],
        ):
            run = await asyncio.create_subprocess_exec(
                sys.executable,
                str(loadgen),
                *args,
                "--port",
                str(port),
                "--password",
                "bench-password",
                "--procs",
                "1",
                "--duration",
                "15",
                "--drain",
                "2",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(run.communicate(), 60)
            result = json.loads(out.decode().strip().splitlines()[-1])
            assert "error" not in result, result
            assert result["lost"] == 0, result
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait(), 20)
        if server.returncode is None:
            server.kill()
