"""Reload semantics: atomic (the old version keeps running on any error, reported precisely through every
trigger), state handover, dependents reloaded after their dependency, unload/load at run time."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import structlog
from reload_kit import COUNTER_VIEW, ConfigFile, admin_request, counter_source, write_plugin
from slixmpp.plugins.xep_0004 import Form as SlixForm

from clients import connect, disconnect
from harness import running_server
from mbeon_chat.admin import send_admin_command

PLUGINS = ["ping", "adhoc", "admin_commands", "counter"]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    write_plugin(d, "counter", counter_source(1))
    return d


async def send_and_count(srv: Any, a: Any, b: Any, n: int = 3) -> None:
    """a sends n messages to b's full JID and b receives them."""
    for i in range(n):
        a.send_message(mto=f"{srv.jid('bob')}/test", mbody=f"m{i}", mtype="chat")
    for i in range(n):
        assert (await b.next_message())["body"] == f"m{i}"


async def adhoc_reload(client: Any, domain: str, plugin: str = "") -> list[tuple[str, str]]:
    first = await client.plugin["xep_0050"].send_command(domain, "reload")
    form = SlixForm()
    form["type"] = "submit"
    form.add_field(var="plugin", value=plugin)
    done = await client.plugin["xep_0050"].send_command(
        domain, "reload", action="complete", sessionid=first["command"]["sessionid"], payload=form
    )
    assert done["command"]["status"] == "completed"
    return [(n[0], n[1]) for n in done["command"]["notes"]]


async def sighup_reload(app: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Send ourselves SIGHUP with the app's handlers installed; return the report and the log lines."""
    before = app.last_reload
    app.install_signal_handlers()
    try:
        with structlog.testing.capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(500):
                if app.last_reload is not before:
                    break
                await asyncio.sleep(0.01)
    finally:
        app.remove_signal_handlers()
    assert app.last_reload is not before, "SIGHUP did not reload"
    return app.last_reload, logs


def expect_error_everywhere(
    cli_rc: int,
    cli_err: str,
    adhoc_notes: list[tuple[str, str]],
    hup_logs: list[dict[str, Any]],
    fragment: str,
) -> None:
    cli_lines = [line for line in cli_err.splitlines() if line.startswith("reload failed, nothing changed: ")]
    assert cli_rc == 1 and cli_lines and fragment in cli_lines[0], cli_err
    assert any(kind == "error" and fragment in text for kind, text in adhoc_notes), adhoc_notes
    failures = [e for e in hup_logs if e["event"] == "server.reload_failed"]
    assert failures and fragment in failures[0]["error"] and failures[0]["trigger"] == "sighup", hup_logs


@pytest.mark.parametrize("breakage", ["syntax", "setup", "option", "config"])
async def test_a_broken_plugin_or_config_leaves_the_old_version_running_and_says_where(
    tmp_path: Path, site: Path, capsys: Any, breakage: str
) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": PLUGINS}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        alice = await connect(srv, "alice", plugins=("xep_0050",), get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            await send_and_count(srv, alice, bob)
            counter = app.ctx.exports["counter"]
            assert counter["messages"] == 3
            path = site / "counter.py"
            if breakage == "syntax":
                path.write_text(counter_source(2) + "\ndef broken(:\n    pass\n")
                line = counter_source(2).count("\n") + 2
                fragment = f"{path}:{line}: syntax error"
            elif breakage == "setup":
                source = counter_source(2).replace(
                    "    state = api.restore(1)\n", "    raise RuntimeError('no database')\n"
                )
                path.write_text(source)
                line = source.splitlines().index("    raise RuntimeError('no database')") + 1
                fragment = f"{path}:{line}: setup() failed: RuntimeError: no database"
            elif breakage == "option":
                cfg.write({"plugins": {"enabled": PLUGINS, "counter": {"step": "two"}}})
                fragment = "plugins.counter.step: must be an integer"
            else:
                cfg.write({"plugins": {"enabled": PLUGINS}, "limits": {"max_depth": 2}})
                fragment = "limits.max_depth: must be between 4 and 1000"
            old_config = app.config

            # 1. the admin socket, as `mbeon-chat reload` (a plugin reload when the code broke)
            plugin = "counter" if breakage in ("syntax", "setup") else None
            capsys.readouterr()
            rc = await asyncio.to_thread(
                send_admin_command,
                cfg.load() if breakage != "config" else old_config,
                {"op": "reload", "plugin": plugin},
            )
            cli_err = capsys.readouterr().err
            # 2. the ad-hoc command, as an admin
            notes = await adhoc_reload(alice, srv.domain, plugin or "")
            # 3. SIGHUP (config and every changed plugin), reported in the log
            report, logs = await sighup_reload(app)
            assert not report.ok
            expect_error_everywhere(rc, cli_err, notes, logs, fragment)

            # the old version is still the running one, with its state, and it still counts
            assert app.ctx.exports["counter"] is counter and counter["generation"] == 1
            assert app.config is old_config
            await send_and_count(srv, alice, bob)
            assert counter["messages"] == 6
            status = app.plugins.status("counter")[0]
            assert fragment in (status["last_error"] or "") or breakage == "config"

            # fixed: the reload goes through and the state is handed over
            write_plugin(site, "counter", counter_source(3))
            cfg.write({"plugins": {"enabled": PLUGINS}})
            report = await app.reload()
            assert report.ok, report.error
            assert "counter" in report.plugins
            new = app.ctx.exports["counter"]
            assert (
                new is not counter and new["generation"] == 3 and new["messages"] == 6 and new["loads"] == 2
            )
        finally:
            await disconnect(alice, bob)


async def test_state_survives_reloads_and_dependents_follow_their_dependency(
    tmp_path: Path, site: Path
) -> None:
    write_plugin(site, "counter_view", COUNTER_VIEW)
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": [*PLUGINS, "counter_view"]}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            for round_ in range(1, 6):
                await send_and_count(srv, alice, bob, 2)
                answer = await admin_request(app.config, {"op": "reload", "plugin": "counter"})
                assert answer["ok"], answer
                # counter first, then its dependent, which binds to the new counter
                assert answer["plugins"] == ["counter", "counter_view"]
                counter = app.ctx.exports["counter"]
                assert counter["messages"] == 2 * round_ and counter["loads"] == round_ + 1
                assert app.ctx.exports["counter_view"]["source"] is counter

            # an option change reloads the plugin (and its dependent) with the new options and the old state
            cfg.write({"plugins": {"enabled": [*PLUGINS, "counter_view"], "counter": {"step": 10}}})
            report = await app.reload()
            assert report.ok and report.applied == ["plugins.counter"]
            assert report.plugins == ["counter", "counter_view"]
            await send_and_count(srv, alice, bob, 1)
            assert app.ctx.exports["counter"]["messages"] == 20
        finally:
            await disconnect(alice, bob)


async def test_unload_and_load_at_run_time(tmp_path: Path, site: Path, capsys: Any) -> None:
    write_plugin(site, "counter_view", COUNTER_VIEW)
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": [*PLUGINS, "counter_view"]}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            config = cfg.load()
            # refused while a loaded plugin depends on it
            capsys.readouterr()
            assert (
                await asyncio.to_thread(send_admin_command, config, {"op": "unload", "plugin": "counter"})
                == 1
            )
            assert "'counter_view' depends on it" in capsys.readouterr().err
            assert (
                await asyncio.to_thread(
                    send_admin_command, config, {"op": "unload", "plugin": "counter_view"}
                )
                == 0
            )
            assert (
                await asyncio.to_thread(send_admin_command, config, {"op": "unload", "plugin": "counter"})
                == 0
            )
            assert "plugin unloaded: counter" in capsys.readouterr().out
            assert "counter" not in app.ctx.exports
            assert not any(r.owner == "counter" for r in app.hooks.handlers("message/full"))
            await send_and_count(srv, alice, bob, 2)  # still delivered, nobody counts

            assert await asyncio.to_thread(send_admin_command, config, {"op": "plugins"}) == 0
            listing = capsys.readouterr().out
            assert "counter: not loaded (site, enabled in config, unloaded at run time)" in listing

            # a config reload does not bring it back: run-time changes stay until the config changes them
            assert (await app.reload()).ok and "counter" not in app.plugins.loaded

            assert (
                await asyncio.to_thread(send_admin_command, config, {"op": "load", "plugin": "counter"}) == 0
            )
            assert "plugin loaded: counter" in capsys.readouterr().out
            await send_and_count(srv, alice, bob, 2)
            assert app.ctx.exports["counter"]["messages"] == 2 and app.ctx.exports["counter"]["loads"] == 1

            assert (
                await asyncio.to_thread(send_admin_command, config, {"op": "load", "plugin": "nosuch"}) == 1
            )
            assert "plugin 'nosuch' not found" in capsys.readouterr().err
        finally:
            await disconnect(alice, bob)


async def test_enabled_plugins_and_restart_only_keys_are_reported_per_key(tmp_path: Path, site: Path) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": PLUGINS}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        app = srv.app
        cfg.write(
            {
                "plugins": {"enabled": [p for p in PLUGINS if p != "ping"] + ["content_rule"]},
                "server": {
                    "data_dir": cfg.base["server"]["data_dir"],
                    "admins": ["bob@localhost"],
                    "domain": "other",
                },
                "log": {"level": "debug"},
                "limits": {"max_stanza_size": 65536},
            }
        )
        report = await app.reload()
        assert report.ok, report.error
        lines = report.lines()
        assert "applied: server.admins (immediately)" in lines
        assert "applied: log.level (immediately)" in lines
        assert "applied: limits.max_stanza_size (new connections)" in lines
        assert "applied: plugins.enabled (plugins loaded/unloaded)" in lines
        assert "needs restart: server.domain (the running server keeps the old value)" in lines
        assert "plugin loaded: content_rule" in lines and "plugin unloaded: ping" in lines
        assert app.config.server.admins == ("bob@localhost",)
        assert app.policy().max_stanza_size == 65536
        assert "ping" not in app.plugins.loaded and "content_rule" in app.plugins.loaded
        assert 'mbeon_reload_seconds_count{result="ok"} 1.0' in app.metrics.render().decode()


async def test_cli_says_what_to_do_when_no_server_runs(tmp_path: Path, site: Path, capsys: Any) -> None:
    cfg = ConfigFile(tmp_path, site, {})
    assert send_admin_command(cfg.load(), {"op": "reload", "plugin": None}) == 1
    err = capsys.readouterr().err
    assert "no server is running" in err and "mbeon-chat serve" in err and "--config" in err


async def test_admin_socket_is_private(tmp_path: Path, site: Path) -> None:
    cfg = ConfigFile(tmp_path, site, {"plugins": {"enabled": ["ping"]}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        path = srv.app.admin.path
        assert path is not None and (path.stat().st_mode & 0o777) == 0o600
        answer = await admin_request(srv.app.config, {"op": "status"})
        assert answer["ok"] and answer["domain"] == "localhost"
        bad = await admin_request(srv.app.config, {"op": "format-disk"})
        assert not bad["ok"] and "unknown op" in bad["error"]
    assert not path.exists()
