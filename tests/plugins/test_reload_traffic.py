"""Reloads under continuous traffic: client pairs exchange numbered messages (to full JIDs) while a plugin
and the configuration are reloaded 100 times and a plugin is unloaded and loaded again, all through the
admin socket. Nobody is disconnected; every message arrives exactly once and in order; the counting
plugin on the message path saw every message exactly once across all its versions."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from reload_kit import ConfigFile, admin_request, counter_source, write_plugin

from clients import connect, disconnect
from harness import running_server

PAIRS = 4
RELOADS = 100  # half plugin reloads, half config-file reloads (each also reloads plugins: options changed)
SEND_INTERVAL = 0.004
PASSWORD = "traffic-secret-1"
ENABLED = ["ping", "adhoc", "admin_commands", "counter", "content_rule", "office_hours"]


def plugin_options(k: int) -> dict[str, Any]:
    receivers = [f"r{i}@localhost" for i in range(PAIRS)]
    return {
        "counter": {"label": f"v{k}"},
        "content_rule": {
            "counsellors": receivers,
            "rules": [
                {"name": "ends-in-7", "pattern": r":\d*7$", "action": "flag"},
                {"name": "never", "pattern": "FORBIDDEN-WORD", "action": "block"},
            ],
        },
        "office_hours": {"counsellors": receivers, "hours": ["mon-sun 00:00-24:00"]},  # open: no replies
    }


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[max(0, round(len(ms) * 0.95) - 1)]
    return f"n={len(ms)} median={statistics.median(ms):.1f}ms p95={p95:.1f}ms max={ms[-1]:.1f}ms"


async def test_reloads_under_continuous_traffic_lose_and_drop_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(site, "counter", counter_source(1))
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ENABLED, **plugin_options(0)}})
    users = {f"{role}{i}": PASSWORD for i in range(PAIRS) for role in ("s", "r")}
    async with running_server(tmp_path, config_path=cfg.path, users=users) as srv:
        app = srv.app
        senders = [await connect(srv, f"s{i}", get_roster=False, send_presence=False) for i in range(PAIRS)]
        receivers = [await connect(srv, f"r{i}", get_roster=False, send_presence=False) for i in range(PAIRS)]
        clients = senders + receivers
        connections_before = set(app.ctx.connections)
        assert len(connections_before) == 2 * PAIRS
        sent = [0] * PAIRS
        stop = asyncio.Event()

        async def pump(i: int) -> None:
            while not stop.is_set():
                senders[i].send_message(mto=f"r{i}@localhost/test", mbody=f"{i}:{sent[i]}", mtype="chat")
                sent[i] += 1
                await asyncio.sleep(SEND_INTERVAL)

        idle: dict[str, list[float]] = {"plugin": [], "config": []}
        for k in range(10):
            idle["plugin"].append(
                (await admin_request(app.config, {"op": "reload", "plugin": "counter"}))["seconds"]
            )
            cfg.write({"plugins": {"enabled": ENABLED, **plugin_options(1000 + k)}})
            idle["config"].append(
                (await admin_request(app.config, {"op": "reload", "plugin": None}))["seconds"]
            )
        loads_before = app.ctx.exports["counter"]["loads"]

        pumps = [asyncio.create_task(pump(i)) for i in range(PAIRS)]
        plugin_seconds: list[float] = []
        config_seconds: list[float] = []
        blocking: list[float] = []
        roundtrip: list[float] = []
        try:
            await asyncio.sleep(0.3)
            for k in range(1, RELOADS + 1):
                if k % 2:
                    command: dict[str, Any] = {"op": "reload", "plugin": "counter"}
                else:
                    limits = {"max_stanza_size": 131072 if k % 4 else 262144}
                    cfg.write(
                        {
                            "plugins": {"enabled": ENABLED, **plugin_options(k)},
                            "limits": limits,
                            "log": {"level": "error" if k % 4 else "warning"},
                        }
                    )
                    command = {"op": "reload", "plugin": None}
                started = time.perf_counter()
                answer = await admin_request(app.config, command)
                roundtrip.append(time.perf_counter() - started)
                assert answer["ok"], answer
                assert "counter" in answer["plugins"], answer
                (plugin_seconds if k % 2 else config_seconds).append(answer["seconds"])
                blocking.append(answer["blocking_seconds"])
                if k == RELOADS // 2:  # unload and load a plugin on the message path, mid-traffic
                    assert (await admin_request(app.config, {"op": "unload", "plugin": "content_rule"}))["ok"]
                    await asyncio.sleep(0.05)
                    assert (await admin_request(app.config, {"op": "load", "plugin": "content_rule"}))["ok"]
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.gather(*pumps)

        try:
            for i, receiver in enumerate(receivers):
                bodies = []
                while len(bodies) < sent[i]:
                    bodies.append((await receiver.next_message(timeout=20))["body"])
                assert bodies == [f"{i}:{n}" for n in range(sent[i])], f"pair {i}: out of order or duplicated"
                await asyncio.sleep(0.2)
                assert receiver.messages.empty(), f"pair {i}: more messages than were sent"

            # zero disconnects: the same connections, no stream errors, nobody closed
            assert set(app.ctx.connections) == connections_before
            assert all(not c.closed.is_set() and c.stream_errors.empty() for c in clients)
            assert len(app.registry) == 2 * PAIRS

            counter = app.ctx.exports["counter"]
            total = sum(sent)
            assert counter["loads"] == loads_before + RELOADS
            # the hook on the message path saw every message exactly once across 101 versions
            assert counter["messages"] == total
            assert app.plugins.reload_count >= RELOADS
            assert app.ctx.exports["content_rule"]["counts"].get("flag:ends-in-7", 0) > 0
        finally:
            await disconnect(*clients)

        print(
            f"\ntraffic: {PAIRS} pairs, {total} messages in order and exactly once, 0 disconnects, "
            f"{RELOADS} reloads + unload/load"
            f"\nidle, plugin reload: {summary(idle['plugin'])}"
            f"\nidle, config file + plugins: {summary(idle['config'])}"
            f"\nunder traffic, plugin reload: {summary(plugin_seconds)}"
            f"\nunder traffic, config file + plugins: {summary(config_seconds)}"
            f"\nunder traffic, event loop held (staging + swap): {summary(blocking)}"
            f"\nunder traffic, admin socket round trip (CLI path): {summary(roundtrip)}"
        )
