"""Server administration over XEP-0050 ad-hoc commands, for the JIDs in ``server.admins`` only.

- ``reload``: the config file and every changed plugin, or one plugin (and its dependents). Reports per
  key what was applied and what needs a restart, or the error (nothing changed then).
- ``list-plugins``: every plugin, loaded or not, with its source, version and last error.
- ``plugin-status``: one plugin in detail.
"""

from __future__ import annotations

import time
from typing import Any

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp.forms import Form

DEPENDS = ("adhoc",)
ALL = ""  # the "reload everything" choice


def setup(api: PluginAPI) -> None:
    adhoc = api.plugin("adhoc")
    Response, Note = adhoc.Response, adhoc.Note

    def control() -> Any:
        if api.ctx.control is None:
            raise RuntimeError("no admin control in this process")
        return api.ctx.control

    async def reload(request: Any) -> Any:
        if request.action == "cancel":
            return Response.canceled()
        if request.form is None:
            loaded = sorted(control().app.plugins.loaded)
            form = Form(
                "form",
                "Reload",
                "Reload the configuration file and every changed plugin, or one plugin "
                "(with the plugins that depend on it). On any error nothing changes.",
            )
            form.add_field(
                "plugin",
                "list-single",
                label="What to reload",
                value=ALL,
                options=[("Configuration and every changed plugin", ALL), *[(n, n) for n in loaded]],
            )
            return Response.ask(form)
        plugin = request.value("plugin") or None
        answer = await control().execute({"op": "reload", "plugin": plugin}, trigger="adhoc")
        if not answer["ok"]:
            return Response("completed", None, [Note(answer["error"], "error")])
        return Response("completed", None, [Note(line) for line in answer["lines"]])

    def list_plugins(request: Any) -> Any:
        entries = control().plugin_status()
        form = Form("result", "Plugins")
        form.set_reported(
            ("name", "Plugin"),
            ("state", "State"),
            ("source", "Source"),
            ("version", "Version"),
            ("enabled", "In config"),
            ("last_error", "Last error"),
        )
        for e in entries:
            form.add_item(
                {
                    "name": e["name"],
                    "state": e["state"] + (" (changed on disk)" if e.get("changed_on_disk") else ""),
                    "source": e.get("source") or "",
                    "version": str(e.get("version", "")),
                    "enabled": "yes" if e["enabled"] else "no",
                    "last_error": e.get("last_error") or "",
                }
            )
        loaded = sum(1 for e in entries if e["state"] == "loaded")
        return Response("completed", form, [Note(f"{loaded} of {len(entries)} plugins loaded")])

    def plugin_status(request: Any) -> Any:
        if request.action == "cancel":
            return Response.canceled()
        names = [e["name"] for e in control().plugin_status()]
        name = request.value("plugin")
        if request.form is None or not name:
            form = Form("form", "Plugin status")
            form.add_field("plugin", "list-single", label="Plugin", options=names, required=True)
            return Response.ask(form)
        if name not in names:
            return Response.fail(f"no plugin {name!r}")
        (e,) = control().plugin_status(name)
        form = Form("result", f"Plugin {name}")
        for key in (
            "name",
            "state",
            "source",
            "path",
            "version",
            "enabled",
            "changed_on_disk",
            "hooks",
            "iq_handlers",
            "timers",
            "tasks",
            "last_error",
        ):
            if key in e:
                form.add_field(key, "text-single", label=key.replace("_", " "), value=_text(e[key]))
        for key in ("depends", "dependents", "components"):
            if key in e:
                form.add_field(key, "text-multi", label=key, value=[str(v) for v in e[key]])
        if e.get("loaded_at"):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["loaded_at"]))
            form.add_field("loaded_at", "text-single", label="loaded at", value=stamp)
        notes = [Note(e["last_error"], "warn")] if e.get("last_error") else []
        return Response("completed", form, notes)

    allowed = api.is_admin
    adhoc.add_command(api, "reload", "Reload configuration or a plugin", reload, allowed=allowed)
    adhoc.add_command(api, "list-plugins", "List plugins", list_plugins, allowed=allowed)
    adhoc.add_command(api, "plugin-status", "Plugin status", plugin_status, allowed=allowed)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)
