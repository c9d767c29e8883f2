"""The component at ``counselling.<domain>``: stanzas in, lifecycle operations out.

- ``<message>`` with a body: a plain-text interface that works from any client. Someone who is not a
  counsellor starts a request with the default topic and language by writing anything ("cancel",
  "close", "status" and "help" are commands); counsellors write "accept <id>", "decline <id>", "queue" ...
- ``<iq>``: disco#info / disco#items for the service, XEP-0050 commands (handed to the adhoc plugin),
  ping. Anything else is ``service-unavailable``.
- ``<presence>``: subscriptions to the service are approved, probes answered (so the service shows
  online in a roster); everything else is ignored.

Counsellor availability comes from the sessions' presence (``Session.available`` / ``.presence``, kept
by the presence plugin); ``observe_presence`` also reads initial and changed presence as it passes, so the
service reacts without waiting for another plugin.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str
from mbeon_chat.xmpp.stanza import BODY, SHOW, Stanza, make_presence

from . import policy, texts, views
from .lifecycle import Lifecycle

C = StanzaCondition
INFO = f"{{{ns.DISCO_INFO}}}query"
ITEMS = f"{{{ns.DISCO_ITEMS}}}query"
IDENTITY = f"{{{ns.DISCO_INFO}}}identity"
FEATURE = f"{{{ns.DISCO_INFO}}}feature"
PING = f"{{{ns.PING}}}ping"
READY_TIMEOUT = 10.0
COUNSELLOR_ONLY = frozenset({"accept", "decline", "transfer", "queue", "sessions", "team"})


class CounsellingService:
    def __init__(self, api: PluginAPI, jid: JID, lifecycle: Lifecycle, name: str = "Counselling") -> None:
        self.api = api
        self.jid = jid
        self.name = name
        self.lc = lifecycle
        self.ready = asyncio.Event()
        #: full JID -> (available, show) as last seen passing by (see observe_presence).
        self.presence: dict[JID, tuple[bool, str | None]] = {}
        self.adhoc: Any = None

    # --- availability -----------------------------------------------------------------------------------
    def availability(self, bare: str) -> tuple[bool, bool]:
        """(online: a resource with available presence, offerable: one of them not away/xa/dnd)."""
        try:
            jid = jid_from_str(bare)
        except InvalidJID:
            return False, False
        online = offerable = False
        for session in self.api.sessions.resources(jid):
            seen = self.presence.get(session.jid)
            if seen is None:
                pres = session.presence
                seen = (session.available, pres.findtext(SHOW) if pres is not None else None)
            if seen[0]:
                online = True
                offerable = offerable or policy.is_available(*seen)
        return online, offerable

    async def observe_presence(self, stanza: Stanza, origin: Session | None) -> None:
        """Hook ``presence/self`` (high priority, never stops the chain)."""
        if origin is None or stanza.type not in ("available", "unavailable"):
            return
        show = stanza.el.findtext(SHOW) if stanza.type == "available" else None
        self.presence[origin.jid] = (stanza.type == "available", (show or "").strip() or None)
        if "presence" not in self.api.ctx.active:  # else its presence/* hooks tell us, after it is applied
            self._counsellor_changed(str(origin.bare))

    async def presence_applied(self, session: Session, *args: Any) -> None:
        """Hooks ``presence/initial``, ``/changed``, ``/unavailable`` (fired by the presence plugin)."""
        self._counsellor_changed(str(session.bare))

    async def session_ended(self, session: Session, reason: str = "") -> None:
        """Hook ``session/ended``: the registry no longer has this resource."""
        self.presence.pop(session.jid, None)
        self._counsellor_changed(str(session.bare))

    def _counsellor_changed(self, bare: str) -> None:
        if self.lc.is_counsellor(bare) and self.ready.is_set():
            self.api.spawn(self.lc.presence_changed(bare))

    # --- stanzas ----------------------------------------------------------------------------------------
    async def handle(self, stanza: Stanza, origin: Session | None) -> None:
        if stanza.from_ is None or stanza.type == "error":
            return
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT)
            except TimeoutError:
                raise StanzaError(C.SERVICE_UNAVAILABLE, "the counselling service is starting") from None
        if stanza.kind == "message":
            await self._message(stanza)
        elif stanza.kind == "iq":
            await self._iq(stanza, origin)
        else:
            await self._presence(stanza)

    async def _send_text(self, to: str, body: str, payload: Element | None = None) -> None:
        await self.api.send(texts.notice(self.jid, to, body, payload))

    async def _message(self, stanza: Stanza) -> None:
        if stanza.type in ("groupchat", "headline"):
            return
        body = stanza.el.findtext(BODY)
        text = (body or "").strip()
        if not text:
            return  # chat states, receipts ...
        assert stanza.from_ is not None
        sender = str(stanza.from_.bare)
        words = text.split()
        command = words[0].lower()
        if self.lc.is_counsellor(sender):
            await self._counsellor_text(sender, command, words[1:])
        else:
            await self._client_text(sender, command, text)

    async def _client_text(self, client: str, command: str, text: str) -> None:
        """A one-word message is a command ("help me please" is a request for help, "help" is not)."""
        lc = self.lc
        word = text.lower().strip(" .!?") if len(text.split()) == 1 else ""
        if word == "cancel":
            await lc.cancel(client)
        elif word == "close":
            await lc.close(client, None)
        elif word == "status":
            await self._send_text(client, views.client_status(lc, client))
        elif word == "help":
            await self._send_text(client, texts.CLIENT_HELP)
        elif command in COUNSELLOR_ONLY:
            raise StanzaError(C.FORBIDDEN, f"only counsellors can use '{command}'")
        else:
            await lc.request_help(client, None, None, text)

    async def _counsellor_text(self, counsellor: str, command: str, args: list[str]) -> None:
        lc = self.lc
        if command in ("accept", "decline") and len(args) == 1:
            if command == "accept":
                await lc.accept(counsellor, args[0])
            else:
                r = await lc.decline(counsellor, args[0])
                await self._send_text(counsellor, f"You declined request {r.short}.")
        elif command == "close" and len(args) <= 1:
            await lc.close(counsellor, args[0] if args else None)
        elif command == "transfer" and len(args) == 2:
            target = _bare(args[1])
            await lc.transfer(counsellor, args[0], target)
            wait = int(lc.options.offer_timeout)
            await self._send_text(counsellor, f"Asked {target} to take over; waiting up to {wait} s.")
        elif command in ("queue", "sessions", "team") and not args:
            await self._send_text(counsellor, views.as_text(command, views.table(lc, command)))
        elif command == "help":
            await self._send_text(counsellor, texts.COUNSELLOR_HELP)
        else:
            raise StanzaError(C.BAD_REQUEST, "unknown command. " + texts.COUNSELLOR_HELP)

    async def _presence(self, stanza: Stanza) -> None:
        assert stanza.from_ is not None
        requester = stanza.from_.bare
        if stanza.type == "subscribe":
            await self.api.send(make_presence(requester, "subscribed", self.jid))
            await self.api.send(make_presence(requester, None, self.jid))
        elif stanza.type == "probe":
            await self.api.send(make_presence(requester, None, self.jid))

    # --- iq -------------------------------------------------------------------------------------------
    async def _iq(self, stanza: Stanza, origin: Session | None) -> None:
        if stanza.type not in ("get", "set"):
            return
        payload = stanza.payload
        if payload is None:
            raise StanzaError(C.BAD_REQUEST)
        node = payload.get("node")
        if self.adhoc is not None and (payload.ns == ns.COMMANDS or (node and payload.tag in (INFO, ITEMS))):
            reply = await self.adhoc.handle_iq(stanza, origin)
            if reply is not None:
                await self.api.send(reply)
                return
        if payload.tag in (INFO, ITEMS) and stanza.type == "get":
            if node:
                raise StanzaError(C.ITEM_NOT_FOUND)
            await self.api.send(stanza.result(self._disco_info() if payload.tag == INFO else Element(ITEMS)))
        elif payload.tag == PING and stanza.type == "get":
            await self.api.send(stanza.result())
        else:
            raise StanzaError(C.SERVICE_UNAVAILABLE)

    def _disco_info(self) -> Element:
        query = Element(INFO)
        query.add(IDENTITY, {"category": "component", "type": "generic", "name": self.name})
        features = [ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, texts.NS]
        if self.adhoc is not None:
            features.append(ns.COMMANDS)
        for var in sorted(features):
            query.add(FEATURE, {"var": var})
        return query


def _bare(value: str) -> str:
    try:
        return str(jid_from_str(value).bare)
    except InvalidJID:
        raise StanzaError(C.JID_MALFORMED, f"{value!r} is not an address") from None
