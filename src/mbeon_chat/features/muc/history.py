"""Room history: what a new occupant receives on entering (XEP-0045 7.2.14, 7.2.15), and the archive
interface behind it.

The live room keeps its recent messages in memory (``Room.history``); persistent rooms also write them to
a :class:`HistoryArchive` so they survive a restart. The archive is a small Protocol so that the
encrypted MUC archive (XEP-0313 on the room JID) can replace the plain room store later.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

__all__ = [
    "HistoryArchive",
    "HistoryEntry",
    "delayed_copy",
    "element_from_bytes",
    "element_to_bytes",
    "select_history",
    "stamp",
]

HISTORY = f"{{{ns.MUC}}}history"
DELAY = f"{{{ns.DELAY}}}delay"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One groupchat message as the room broadcast it (``from`` = room/nick, no ``to``); never mutated."""

    id: str  # the room's stanza id (UUIDv7: sorts in arrival order)
    room: str  # bare JID of the room
    nick: str
    at_ms: int
    stanza: Element


class HistoryArchive(Protocol):
    async def append(self, entries: Sequence[HistoryEntry]) -> None:
        """Store entries (idempotent: an entry whose id is already stored is skipped)."""
        ...

    async def recent(self, room: str, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` entries of ``room``, oldest first."""
        ...

    async def purge(self, room: str) -> None: ...


def stamp(ms: int) -> str:
    """XEP-0082 DateTime in UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_stamp(value: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def select_history(
    entries: Iterable[HistoryEntry],
    request: Element | None,
    *,
    limit: int,
    default: int,
    now_ms: int,
) -> list[HistoryEntry]:
    """The entries to send on entering, honouring maxstanzas / maxchars / seconds / since together.

    ``limit`` is the room's maximum; without a ``<history/>`` request ``default`` (at most ``limit``) apply.
    """
    items = list(entries)
    count = min(default, limit)
    since: int | None = None
    maxchars: int | None = None
    if request is not None:
        attrs = request.attrs
        requested = _int(attrs.get("maxstanzas"))
        if requested is not None:
            count = min(requested, limit)
        elif any(k in attrs for k in ("maxchars", "seconds", "since")):
            count = limit  # the other limits alone may ask for everything the room keeps
        seconds = _int(attrs.get("seconds"))
        if seconds is not None:
            since = now_ms - seconds * 1000
        if "since" in attrs:
            at = parse_stamp(attrs["since"])
            if at is not None:
                since = at if since is None else max(since, at)
        maxchars = _int(attrs.get("maxchars"))
    if count <= 0:
        return []
    items = items[-count:]
    if since is not None:
        items = [e for e in items if e.at_ms >= since]
    if maxchars is not None:
        chosen: list[HistoryEntry] = []
        used = 0
        for entry in reversed(items):
            used += len(entry.stanza.to_string(ns.CLIENT))
            if used > maxchars:
                break
            chosen.append(entry)
        items = chosen[::-1]
    return items


def delayed_copy(entry: HistoryEntry, room: str) -> Element:
    """The history message (without ``to``) with its XEP-0203 delay stamp from the room."""
    el = entry.stanza
    delay = Element(DELAY, {"from": room, "stamp": stamp(entry.at_ms)})
    return Element(el.tag, dict(el.attrs), [*el.children, delay])


def element_to_bytes(el: Element) -> bytes:
    return el.to_string().encode()


def element_from_bytes(data: bytes) -> Element:
    """Parse a stored stanza (our own serialisation; ElementTree uses the same Clark notation)."""
    return _convert(ET.fromstring(data))


def _convert(node: ET.Element) -> Element:
    children: list[Element | str] = []
    if node.text:
        children.append(node.text)
    for child in node:
        children.append(_convert(child))
        if child.tail:
            children.append(child.tail)
    return Element(node.tag, dict(node.attrib), children)
