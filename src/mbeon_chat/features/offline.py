"""XEP-0160: Best Practices for Handling Offline Messages (with XEP-0203 delay stamps).

The router fires ``message/offline`` when a message of type normal or chat for a local bare JID finds no
resource to take it (RFC 6121 8.5.2.2.1). If the account exists the message is stored, stamped
``<delay xmlns='urn:xmpp:delay' from='domain' stamp='...Z'/>``; a full store (``max_per_user``) or an
unknown account answers ``service-unavailable``. Pure chat-state notifications (XEP-0085) and messages
hinted ``no-store``/``no-permanent-store`` (XEP-0334) are dropped instead.

Stored messages go to the first resource that becomes available with a non-negative priority (the
presence plugin's ``presence/initial`` and ``presence/changed`` hooks), oldest first, and are deleted only
once written to that session: a session that goes away midway leaves the rest stored.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.parser import FramedParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.stanza import BODY, SUBJECT, Stanza

DEPENDS = ()

DELAY = "{" + ns.DELAY + "}delay"
CHATSTATES = "http://jabber.org/protocol/chatstates"
HINTS = "urn:xmpp:hints"
_NO_STORE = frozenset({"{" + HINTS + "}no-store", "{" + HINTS + "}no-permanent-store"})
_MAX_PAYLOAD = 16 * 1048576


@dataclass(frozen=True)
class Options:
    max_per_user: int = 1000

    def validate(self) -> None:
        if self.max_per_user < 0:
            raise ValueError("max_per_user: must not be negative")


def utc_stamp(now: datetime.datetime | None = None) -> str:
    """An XEP-0082 DateTime in UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def serialize(el: Element) -> bytes:
    """The stanza as standalone XML (with its ``jabber:client`` namespace declared)."""
    return el.to_string().encode()


def parse(payload: bytes) -> Element:
    """Parse one stored stanza; raises ``ValueError`` if it is not one complete element."""
    parser = FramedParser(max_stanza_size=max(len(payload) + 1, 262144), max_depth=64)
    events = parser.receive_data(payload)
    if len(events) != 1 or not isinstance(events[0], ElementParsed):
        raise ValueError("not a stored stanza")
    return events[0].element


def worth_storing(el: Element) -> bool:
    """False for chat-state-only notifications and messages hinted not to be stored."""
    children = list(el.elements())
    if any(c.tag in _NO_STORE for c in children):
        return False
    if any(c.tag in (BODY, SUBJECT) for c in children):
        return True
    return any(c.ns not in (CHATSTATES, HINTS) and c.local != "thread" for c in children)


class OfflineService:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self._delivering: dict[str, list[Any]] = {}

    @property
    def store(self) -> Any:
        return self.api.storage.offline

    async def on_offline(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        if to is None or to.local is None or stanza.type not in ("normal", "chat"):
            return False
        if not await self.api.ctx.accounts.exists(to.local):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)  # RFC 6121 8.5.1
        if not worth_storing(stanza.el):
            return True
        el = stanza.el.copy()
        el.add(DELAY, {"from": self.api.domain, "stamp": utc_stamp()}, "Offline Storage")
        if not await self.store.push(to.local, serialize(el), self.options.max_per_user):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "the recipient's offline storage is full")
        return True

    async def on_initial(self, session: Session) -> None:
        if session.priority >= 0:
            await self.deliver(session)

    async def on_changed(self, session: Session, old_priority: int) -> None:
        if old_priority < 0 <= session.priority:
            await self.deliver(session)

    def _live(self, session: Session) -> bool:
        return (
            session.available
            and not getattr(session.conn, "closed", False)
            and self.api.sessions.get(session.jid) is session
        )

    async def deliver(self, session: Session) -> int:
        """Send the stored messages to ``session``; returns how many were delivered (and deleted)."""
        username = session.bare.local
        if username is None:
            return 0
        entry = self._delivering.setdefault(username, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:  # one delivery per user at a time: a message goes to one resource
                return await self._deliver(session, username)
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._delivering.get(username) is entry:
                del self._delivering[username]

    async def _deliver(self, session: Session, username: str) -> int:
        stored = await self.store.fetch(username)
        done: list[str] = []
        for message_id, payload in stored:
            if not self._live(session):
                break
            try:
                el = parse(payload)
            except Exception:
                self.api.log.error("offline.unreadable", username=username, message_id=message_id)
                done.append(message_id)
                continue
            session.send(el)
            if getattr(session.conn, "closed", False):
                break  # perhaps not written: kept, so a later delivery repeats it rather than lose it
            done.append(message_id)
        await self.store.delete(username, done)
        return len(done)

    async def count(self, username: str) -> int:
        n: int = await self.store.count(username)
        return n


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    service = OfflineService(api, options)
    api.export(service)
    api.add_feature(ns.OFFLINE)
    api.on("message/offline", service.on_offline)
    api.on("presence/initial", service.on_initial)
    api.on("presence/changed", service.on_changed)
