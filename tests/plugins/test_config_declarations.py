"""Every configuration option declares whether a reload applies it live or it needs a restart."""

from __future__ import annotations

import dataclasses
import typing

from mbeon_chat.config import Config, diff, how_applied, load_config


def test_every_option_says_live_or_restart() -> None:
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if section.metadata.get("internal"):
            continue
        for option in dataclasses.fields(hints[section.name]):
            assert "live" in option.metadata, f"{section.name}.{option.name}: use live(...) or restart(...)"


def test_diff_names_each_changed_key_with_its_flag() -> None:
    old = load_config(None, {})
    new = load_config(
        None,
        {"log": {"level": "debug"}, "server": {"domain": "example.org"}, "plugins": {"ping": {"x": 1}}},
    )
    assert sorted(diff(old, new)) == [("log.level", True), ("plugins.ping", True), ("server.domain", False)]
    assert how_applied("log.level") == "immediately"
    assert how_applied("plugins.ping") == "plugin reloaded with the new options"
