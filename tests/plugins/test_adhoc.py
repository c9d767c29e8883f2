"""XEP-0050 ad-hoc commands: listing and execution gated by ``allowed``, multi-step sessions, admin ones."""

from __future__ import annotations

from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form as SlixForm

from clients import connect, disconnect
from harness import running_server

PLUGINS = ["ping", "disco", "adhoc", "admin_commands"]


def _overrides(tmp_path: Any, **plugins: Any) -> dict[str, Any]:
    return {"server": {"admins": ["alice@localhost"]}, "plugins": {"enabled": PLUGINS, **plugins}}


def nodes(iq: Any) -> set[str]:
    return {item[1] for item in iq["disco_items"]["items"]}


def notes(iq: Any) -> list[tuple[str, str]]:
    return [(n[0], n[1]) for n in iq["command"]["notes"]]


def submit(values: dict[str, str]) -> SlixForm:
    form = SlixForm()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


async def test_admin_sees_and_runs_admin_commands_non_admin_is_forbidden(tmp_path):
    async with running_server(tmp_path, _overrides(tmp_path)) as srv:
        alice = await connect(srv, "alice", plugins=("xep_0050",), get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", plugins=("xep_0050",), get_roster=False, send_presence=False)
        try:
            listed = await alice.plugin["xep_0050"].get_commands(jid=srv.domain)
            assert {"reload", "list-plugins", "plugin-status"} <= nodes(listed)
            assert nodes(await bob.plugin["xep_0050"].get_commands(jid=srv.domain)) == set()

            with pytest.raises(IqError) as err:
                await bob.plugin["xep_0050"].send_command(srv.domain, "reload")
            assert err.value.condition == "forbidden"
            with pytest.raises(IqError) as err:
                await bob.plugin["xep_0030"].get_info(jid=srv.domain, node="reload")
            assert err.value.condition == "forbidden"

            result = await alice.plugin["xep_0050"].send_command(srv.domain, "list-plugins")
            assert result["command"]["status"] == "completed"
            names = [item["name"] for item in result["command"]["form"]["items"]]
            assert {"ping", "adhoc", "admin_commands"} <= set(names)

            server_info = await alice.plugin["xep_0030"].get_info(jid=srv.domain)
            assert "http://jabber.org/protocol/commands" in server_info["disco_info"]["features"]
            info = await alice.plugin["xep_0030"].get_info(jid=srv.domain, node="reload")
            assert ("automation", "command-node", None, "Reload configuration or a plugin") in info[
                "disco_info"
            ]["identities"]
        finally:
            await disconnect(alice, bob)


async def test_multi_step_reload_command_reports_the_plugins_reloaded(tmp_path):
    async with running_server(tmp_path, _overrides(tmp_path)) as srv:
        alice = await connect(srv, "alice", plugins=("xep_0050",), get_roster=False, send_presence=False)
        try:
            first = await alice.plugin["xep_0050"].send_command(srv.domain, "reload")
            assert first["command"]["status"] == "executing"
            sid = first["command"]["sessionid"]
            options = [o["value"] for o in first["command"]["form"].get_fields()["plugin"]["options"]]
            assert "ping" in options
            done = await alice.plugin["xep_0050"].send_command(
                srv.domain, "reload", action="complete", sessionid=sid, payload=submit({"plugin": "ping"})
            )
            assert done["command"]["status"] == "completed"
            assert ("info", "plugin reloaded: ping") in notes(done)

            # the session is gone once completed
            with pytest.raises(IqError) as err:
                await alice.plugin["xep_0050"].send_command(
                    srv.domain, "reload", action="complete", sessionid=sid
                )
            assert err.value.condition == "bad-request"
        finally:
            await disconnect(alice)


async def test_plugin_status_and_cancel(tmp_path):
    async with running_server(tmp_path, _overrides(tmp_path)) as srv:
        alice = await connect(srv, "alice", plugins=("xep_0050",), get_roster=False, send_presence=False)
        try:
            first = await alice.plugin["xep_0050"].send_command(srv.domain, "plugin-status")
            sid = first["command"]["sessionid"]
            done = await alice.plugin["xep_0050"].send_command(
                srv.domain,
                "plugin-status",
                action="complete",
                sessionid=sid,
                payload=submit({"plugin": "adhoc"}),
            )
            values = done["command"]["form"].get_values()
            assert values["state"] == "loaded" and values["source"] == "built-in"
            assert "admin_commands" in values["dependents"]

            first = await alice.plugin["xep_0050"].send_command(srv.domain, "plugin-status")
            canceled = await alice.plugin["xep_0050"].send_command(
                srv.domain, "plugin-status", action="cancel", sessionid=first["command"]["sessionid"]
            )
            assert canceled["command"]["status"] == "canceled"
        finally:
            await disconnect(alice)


async def test_admin_rights_follow_the_config_live(tmp_path):
    async with running_server(tmp_path, _overrides(tmp_path)) as srv:
        bob = await connect(srv, "bob", plugins=("xep_0050",), get_roster=False, send_presence=False)
        try:
            with pytest.raises(IqError):
                await bob.plugin["xep_0050"].send_command(srv.domain, "list-plugins")
            import dataclasses

            app = srv.app
            app.ctx.config = app.config = dataclasses.replace(
                app.config, server=dataclasses.replace(app.config.server, admins=("bob@localhost",))
            )
            result = await bob.plugin["xep_0050"].send_command(srv.domain, "list-plugins")
            assert result["command"]["status"] == "completed"
        finally:
            await disconnect(bob)


async def test_reloading_adhoc_itself_from_a_command_keeps_open_sessions(tmp_path):
    async with running_server(tmp_path, _overrides(tmp_path)) as srv:
        alice = await connect(srv, "alice", plugins=("xep_0050",), get_roster=False, send_presence=False)
        try:
            xep = alice.plugin["xep_0050"]
            pending = await xep.send_command(srv.domain, "plugin-status")  # left open across the reload
            first = await xep.send_command(srv.domain, "reload")
            done = await xep.send_command(
                srv.domain,
                "reload",
                action="complete",
                sessionid=first["command"]["sessionid"],
                payload=submit({"plugin": "adhoc"}),
            )
            reloaded = notes(done)
            assert ("info", "plugin reloaded: adhoc") in reloaded
            assert ("info", "plugin reloaded: admin_commands") in reloaded  # the dependent, after adhoc
            old_export = srv.app.ctx.exports["adhoc"]

            # the session opened before the reload continues with the new version
            finished = await xep.send_command(
                srv.domain,
                "plugin-status",
                action="complete",
                sessionid=pending["command"]["sessionid"],
                payload=submit({"plugin": "ping"}),
            )
            assert finished["command"]["form"].get_values()["state"] == "loaded"
            assert srv.app.ctx.exports["adhoc"] is old_export
            assert len(srv.app.hooks.handlers("adhoc/commands")) == 3  # no duplicates, none lost
        finally:
            await disconnect(alice)
