"""XEP-0202: Entity Time of the server (UTC and the server's offset from it)."""

from __future__ import annotations

from datetime import UTC, datetime

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()


def time_element(now: datetime | None = None) -> Element:
    """``<time><tzo>+01:00</tzo><utc>2024-05-01T12:00:00.123Z</utc></time>`` for ``now`` (aware)."""
    local = (now or datetime.now(UTC)).astimezone()
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    tzo = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    utc = local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    el = Element("{" + ns.TIME + "}time")
    el.add("{" + ns.TIME + "}tzo", None, tzo)
    el.add("{" + ns.TIME + "}utc", None, utc)
    return el


async def on_time(iq: Stanza, origin: Session | None) -> Element:
    return time_element()


def setup(api: PluginAPI) -> None:
    api.add_feature(ns.TIME)
    api.on_iq("get", ns.TIME, "time", on_time, target="host")
