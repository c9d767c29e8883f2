"""The plugin host's bookkeeping: old timers and tasks stop at a reload, a task that ignores cancellation
cannot hold reloads hostage, and bad plugins are refused with a precise reason while nothing changes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from reload_kit import ConfigFile, write_plugin

from harness import running_server
from mbeon_chat.plugin import host as host_module

TICKER = """
import asyncio

DEPENDS = ()
STUBBORN = {stubborn}


def setup(api):
    ticks = {{"task": 0, "timer": 0, "unloaded": False}}

    async def run():
        refusals = 0
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                refusals += 1
                if STUBBORN and refusals < 2:
                    continue
                raise
            ticks["task"] += 1

    def tick():
        ticks["timer"] += 1

    api.add_task(run)
    api.add_timer(0.01, tick)
    api.on_unload(lambda: ticks.__setitem__("unloaded", True))
    api.export(ticks)
"""


def ticker(stubborn: bool = False) -> str:
    return TICKER.format(stubborn=stubborn)


async def test_old_timers_and_tasks_stop_and_unload_callbacks_run(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(site, "ticker", ticker())
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ["ticker"]}})
    async with running_server(tmp_path, config_path=cfg.path, users={}) as srv:
        await asyncio.sleep(0.1)
        old = srv.app.ctx.exports["ticker"]
        assert old["task"] > 0 and old["timer"] > 0
        assert (await srv.app.reload("ticker")).ok
        frozen = dict(old)
        await asyncio.sleep(0.1)
        assert old == frozen and old["unloaded"]
        new = srv.app.ctx.exports["ticker"]
        assert new["task"] > 0 and new["timer"] > 0 and not new["unloaded"]


async def test_a_task_that_ignores_cancellation_does_not_block_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "TEARDOWN_TIMEOUT", 0.2)
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(site, "ticker", ticker(stubborn=True))
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ["ticker"]}})
    async with running_server(tmp_path, config_path=cfg.path, users={}) as srv:
        report = await asyncio.wait_for(srv.app.reload("ticker"), 5)
        assert report.ok and report.seconds < 2


BAD = {
    "no_setup": ("x = 1\n", "has no setup(api) function"),
    "async_setup": ("async def setup(api):\n    pass\n", "setup() must be synchronous"),
    "missing_dep": (
        "DEPENDS = ('nosuch',)\n\ndef setup(api):\n    pass\n",
        "depends on 'nosuch', which is not loaded",
    ),
    "import_error": ("import nosuchmodule\n", ":1: import failed: ModuleNotFoundError"),
    "iq_clash": (
        "from mbeon_chat.xmpp import ns\n\n\ndef setup(api):\n"
        "    api.on_iq('get', ns.PING, 'ping', lambda iq, o: None)\n",
        "iq get {urn:xmpp:ping}ping is already handled by 'ping'",
    ),
    "opts": ("def setup(api):\n    pass\n", "plugins.opts: this plugin takes no options"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_plugins_are_refused_with_the_reason_and_nothing_changes(tmp_path: Path, case: str) -> None:
    source, reason = BAD[case]
    site = tmp_path / "site"
    site.mkdir()
    name = "opts" if case == "opts" else "bad"
    write_plugin(site, name, source)
    extra = {"opts": {"x": 1}} if case == "opts" else {}
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ["ping"], **extra}})
    async with running_server(tmp_path, config_path=cfg.path, users={}) as srv:
        app = srv.app
        before = (dict(app.plugins.loaded), dict(app.router.iq_handlers), app.hooks.handlers("message/full"))
        report = await app.load_plugin(name)
        assert not report.ok and reason in report.error, report.error
        assert (
            dict(app.plugins.loaded),
            dict(app.router.iq_handlers),
            app.hooks.handlers("message/full"),
        ) == before
        assert not [m for m in sys.modules if m.startswith(f"mbeon_chat._plugins.{name}_")]
