"""XEP-0092: Software Version of the server. The operating system is hidden unless ``show_os`` is set."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()
NAME = "mbeon-chat"


@dataclass(frozen=True)
class Options:
    show_os: bool = False  # telling everyone the OS helps attackers more than users


def package_version() -> str:
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


def setup(api: PluginAPI) -> None:
    options: Options = api.options
    query = Element("{" + ns.VERSION + "}query")
    query.add("{" + ns.VERSION + "}name", None, NAME)
    query.add("{" + ns.VERSION + "}version", None, package_version())
    if options.show_os:
        query.add("{" + ns.VERSION + "}os", None, f"{platform.system()} {platform.release()}".strip())

    async def on_version(iq: Stanza, origin: Session | None) -> Element:
        return query.copy()

    api.add_feature(ns.VERSION)
    api.on_iq("get", ns.VERSION, "query", on_version, target="host")
