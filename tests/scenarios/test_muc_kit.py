"""Helpers for the group session (XEP-0045) scenarios: configuration, clients, waiting for stanzas.

(No tests here; the ``test_`` prefix keeps it with the other MUC scenario modules.)
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from clients import Client, connect
from harness import RunningServer

PLUGINS = ["ping", "disco", "roster", "presence", "offline", "muc"]
OWNER_NS = "http://jabber.org/protocol/muc#owner"


def muc_overrides(**options: Any) -> dict[str, Any]:
    return {"plugins": {"enabled": PLUGINS, "muc": options}}


def service(srv: RunningServer) -> str:
    return f"groups.{srv.domain}"


class Seen:
    """Everything a client receives in a room (presence and messages), searchable in any order."""

    def __init__(self, client: Client) -> None:
        self.items: list[Any] = []
        self.changed = asyncio.Event()
        client.add_event_handler("groupchat_presence", self._add)
        # slixmpp's message events need a body, and error presence from a tracked room skips its presence
        # events: take those stanzas straight from the stream.
        client.register_handler(Callback("seen-messages", StanzaPath("message"), self._add))
        client.register_handler(Callback("seen-errors", StanzaPath("presence@type=error"), self._add))

    def _add(self, stanza: Any) -> None:
        self.items.append(stanza)
        self.changed.set()

    async def wait(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for i, stanza in enumerate(self.items):
                if predicate(stanza):
                    del self.items[i]
                    return stanza
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))

    async def presence(self, occupant: str, type_: str | None = None, **kw: Any) -> Any:
        def match(st: Any) -> bool:
            return (
                st.name == "presence"
                and str(st["from"]) == occupant
                and (type_ is None or st["type"] == type_)
            )

        return await self.wait(match, **kw)

    async def message(self, predicate: Callable[[Any], bool], **kw: Any) -> Any:
        return await self.wait(lambda st: st.name == "message" and predicate(st), **kw)

    def has_presence_from(self, occupant: str) -> bool:
        return any(st.name == "presence" and str(st["from"]) == occupant for st in self.items)


async def muc_client(srv: RunningServer, user: str, resource: str = "test") -> tuple[Client, Seen]:
    client = await connect(srv, user, resource, plugins=("xep_0045",))
    return client, Seen(client)


def codes(stanza: Any) -> set[int]:
    return set(stanza["muc"]["status_codes"])


async def owner_submit(
    client: Client, room: str, form_xml: str = "<x xmlns='jabber:x:data' type='submit'/>"
) -> None:
    """Submit a room configuration form (the empty one makes an instant room, XEP-0045 10.1.2)."""
    iq = client.make_iq_set(ito=room)
    iq.xml.append(ET.fromstring(f"<query xmlns='{OWNER_NS}'>{form_xml}</query>"))
    await iq.send(timeout=10)
