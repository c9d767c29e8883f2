"""Helpers for the reload tests: a config file the test rewrites, site plugins written into a tmp dir."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

from mbeon_chat import admin
from mbeon_chat.config import load_config

SITE_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """Sections of scalars/lists/inline tables; ``{"plugins": {"x": {...}}}`` becomes ``[plugins.x]``."""
    lines: list[str] = []

    def table(prefix: str, values: dict[str, Any]) -> None:
        scalars = {
            k: v
            for k, v in values.items()
            if not isinstance(v, dict) or k in ("replies", "notices", "mark_prefix")
        }
        lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in scalars.items())
        for k, v in values.items():
            if k not in scalars:
                table(f"{prefix}.{k}", v)

    for section, values in data.items():
        table(section, values)
    return "\n".join(lines) + "\n"


class ConfigFile:
    """``config/mbeon-chat.toml`` under tmp; ``write(**changes)`` rewrites it from a base dict."""

    def __init__(self, tmp: Path, site_dir: Path, base: dict[str, Any]) -> None:
        self.path = tmp / "config" / "mbeon-chat.toml"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.base = {
            "server": {"data_dir": str(tmp / "var"), "admins": ["alice@localhost"]},
            "listeners": {
                "starttls": ["127.0.0.1:0"],
                "direct_tls": ["127.0.0.1:0"],
                "http": ["127.0.0.1:0"],
            },
            "log": {"level": "warning"},
            "plugins": {"site_dirs": [str(site_dir), str(SITE_PLUGINS)]},
        }
        self.data: dict[str, Any] = {}
        self.write(base)

    def write(self, changes: dict[str, Any] | None = None, raw: str | None = None) -> None:
        data = json.loads(json.dumps(self.base))
        for section, values in (changes or {}).items():
            data.setdefault(section, {}).update(values)
        self.data = data
        self.path.write_text(raw if raw is not None else to_toml(data))

    def load(self) -> Any:
        return load_config(self.path)


def write_plugin(site: Path, name: str, source: str) -> Path:
    path = site / f"{name}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path


COUNTER = '''
"""Test plugin: counts messages routed to full JIDs and keeps the count across reloads."""
from dataclasses import dataclass

DEPENDS = ()


@dataclass(frozen=True)
class Options:
    step: int = 1
    label: str = "a"


def setup(api):
    state = api.restore(1)
    counter = {
        "messages": state["messages"] if state else 0,
        "loads": (state["loads"] + 1) if state else 1,
        "label": api.options.label,
        "generation": GENERATION,
    }

    async def on_message(stanza, origin):
        counter["messages"] += api.options.step

    api.on("message/full", on_message, priority=10)
    api.on_save(lambda: {"version": 1, "messages": counter["messages"], "loads": counter["loads"]})
    api.export(counter)


GENERATION = {generation}
'''

COUNTER_VIEW = '''
"""Test plugin that depends on counter and binds to its export at setup."""
DEPENDS = ("counter",)


def setup(api):
    source = api.plugin("counter")
    api.export({"source": source})
'''


def counter_source(generation: int = 1) -> str:
    return COUNTER.replace("{generation}", str(generation))


async def admin_request(config: Any, command: dict[str, Any]) -> dict[str, Any]:
    """What ``mbeon-chat`` sends, over the real socket (in a thread: the client side is blocking)."""
    return await asyncio.to_thread(admin.request, config, command)
