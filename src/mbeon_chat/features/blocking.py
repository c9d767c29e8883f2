"""XEP-0191: Blocking Command (urn:xmpp:blocking), with the blocklist persisted per account.

- The account's own resources get, block and unblock (``<blocklist/>``, ``<block/>``, ``<unblock/>``; an
  empty ``<unblock/>`` unblocks everyone). Changes are pushed to every resource that requested the
  blocklist (3.3, 3.4).
- A blocklist item matches as privacy lists do (XEP-0016 2.1): ``user@domain/resource`` only that resource,
  ``user@domain`` every resource, ``domain`` every JID at the domain, ``domain/resource`` that resource
  of the domain itself. The server's own domain and the account itself are never blocked.
- From a blocked JID to the user (3.5): messages bounce with ``service-unavailable``, iq get/set too,
  presence (subscription requests and probes included) and iq results are dropped: nothing reveals the
  block. Stanzas the server sends on the user's behalf to a blocked JID (presence broadcasts, probe
  answers, PEP notifications) are dropped.
- From the user to a blocked JID (3.6): ``not-acceptable`` with ``<blocked
  xmlns='urn:xmpp:blocking:errors'/>``; errors and iq results are dropped.
- Blocking a contact who sees the user's presence sends them unavailable presence; unblocking sends the
  current presence and probes the contact's (3.3, 3.4).

The blocklists of users the server recently looked at are cached in memory (bounded); only this plugin
changes them, so the cache is exact within one server process.
"""

from __future__ import annotations

import functools
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.storage.schema import JID_LENGTH
from mbeon_chat.storage.stores.client import SqlBlocklistStore
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str
from mbeon_chat.xmpp.stanza import IQ, Stanza

DEPENDS = ()  # roster and presence are asked for at run time (presence on block/unblock)

NS = "urn:xmpp:blocking"
ERRORS_NS = "urn:xmpp:blocking:errors"
ITEM = f"{{{NS}}}item"
PRIORITY = 1000  # before archiving (500) and delivery: a blocked stanza is neither stored nor routed
INTERESTED = "blocking.interested"


@dataclass(frozen=True)
class Options:
    max_items: int = 1000  # blocked JIDs per account
    cache_size: int = 10000  # accounts whose blocklist is kept in memory

    def validate(self) -> None:
        if self.max_items < 1:
            raise ValueError("max_items: must be at least 1")
        if self.cache_size < 1:
            raise ValueError("cache_size: must be at least 1")


def matches(blocked: frozenset[str], jid: JID) -> bool:
    """Whether ``jid`` is covered by a blocklist (XEP-0016 2.1 matching)."""
    if not blocked:
        return False
    candidates = [str(jid), jid.domain]
    if jid.local is not None:
        candidates.append(str(jid.bare))
    if jid.resource is not None:
        candidates.append(f"{jid.domain}/{jid.resource}")
    return any(c in blocked for c in candidates)


def blocked_error() -> StanzaError:
    return StanzaError(StanzaCondition.NOT_ACCEPTABLE, app_condition=Element(f"{{{ERRORS_NS}}}blocked"))


class Blocking:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self._cache: OrderedDict[str, frozenset[str]] = OrderedDict()

    @functools.cached_property
    def store(self) -> SqlBlocklistStore:
        return SqlBlocklistStore(self.api.storage.database)  # not in setup: check-config has no storage

    # --- the blocklist -------------------------------------------------------------------------------
    async def blocklist(self, username: str) -> frozenset[str]:
        cached = self._cache.get(username)
        if cached is None:
            cached = frozenset(await self.store.get(username))
            self._remember(username, cached)
        else:
            self._cache.move_to_end(username)
        return cached

    def _remember(self, username: str, jids: frozenset[str]) -> None:
        self._cache[username] = jids
        self._cache.move_to_end(username)
        while len(self._cache) > self.options.cache_size:
            self._cache.popitem(last=False)

    async def is_blocked(self, username: str, jid: JID) -> bool:
        """Whether the account ``username`` blocks ``jid`` (never the server itself, nor the account)."""
        if jid.local is None and jid.domain == self.api.domain:
            return False
        if jid.local == username and jid.domain == self.api.domain:
            return False
        return matches(await self.blocklist(username), jid)

    def _local(self, jid: JID | None) -> str | None:
        """The username if ``jid`` is a local account's (bare or full) JID."""
        if jid is None or jid.local is None or jid.domain != self.api.domain:
            return None
        return jid.local

    # --- stanzas from the user's clients (3.6) -------------------------------------------------------
    async def on_stanza_in(self, stanza: Stanza, session: Session) -> bool:
        to, username = stanza.to, session.bare.local
        if to is None or username is None or not await self.is_blocked(username, to):
            return False
        if stanza.type != "error" and not (stanza.kind == "iq" and stanza.type == "result"):
            session.send(stanza.error_reply(blocked_error()).el)  # straight back: routing would drop it
        return True

    # --- stanzas to a local account (3.5) and on a user's behalf to a blocked JID -------------------
    async def on_delivery(self, stanza: Stanza, origin: Session | None) -> bool:
        sender, recipient = stanza.from_, self._local(stanza.to)
        if sender is None or recipient is None:
            return False
        if await self.is_blocked(recipient, sender):
            bounce = stanza.kind == "message" or (stanza.kind == "iq" and stanza.type in ("get", "set"))
            if bounce and stanza.type != "error":
                raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
            return True
        # Sent on a blocking user's behalf (their clients' stanzas were checked on the way in); error
        # replies pass, so the bounce above reaches the blocked sender.
        sender_name = self._local(sender)
        if sender_name is None or stanza.type == "error":
            return False
        assert stanza.to is not None
        return await self.is_blocked(sender_name, stanza.to)

    # --- the iq handlers -----------------------------------------------------------------------------
    def _owner(self, iq: Stanza, origin: Session | None) -> str:
        if origin is None or origin.bare.local is None or (iq.to is not None and iq.to.bare != origin.bare):
            raise StanzaError(StanzaCondition.FORBIDDEN, "only the account's own resources may do this")
        return origin.bare.local

    async def on_get(self, iq: Stanza, origin: Session | None) -> Element:
        username = self._owner(iq, origin)
        assert origin is not None
        origin.data[INTERESTED] = True
        result = Element(f"{{{NS}}}blocklist")
        for jid in sorted(await self.blocklist(username)):
            result.add(ITEM, {"jid": jid})
        return result

    async def on_block(self, iq: Stanza, origin: Session | None) -> Stanza:
        username = self._owner(iq, origin)
        assert iq.payload is not None
        jids = _items(iq.payload)
        if not jids:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "a block needs at least one item")
        current = await self.blocklist(username)
        new = [j for j in jids if str(j) not in current]
        if len(current) + len(new) > self.options.max_items:
            raise StanzaError(StanzaCondition.RESOURCE_CONSTRAINT, "the blocklist is full")
        for jid in new:  # 3.3: told while they still may receive it
            await self._send_presence(username, jid, unavailable=True)
        await self.store.block(username, [str(j) for j in new])
        self._remember(username, current | {str(j) for j in new})
        self._push(username, "block", [str(j) for j in jids])
        return iq.result()

    async def on_unblock(self, iq: Stanza, origin: Session | None) -> Stanza:
        username = self._owner(iq, origin)
        assert iq.payload is not None
        jids = _items(iq.payload)
        self._cache.pop(username, None)
        gone = await self.store.unblock(username, [str(j) for j in jids] if jids else None)
        self._cache.pop(username, None)
        self._push(username, "unblock", [str(j) for j in jids])  # empty: "unblock all", as requested
        for raw in gone:
            await self._send_presence(username, jid_from_str(raw), unavailable=False)
        return iq.result()

    def _push(self, username: str, kind: str, jids: list[str]) -> None:
        user = JID(username, self.api.domain, None)
        for session in self.api.sessions.resources(user):
            if session.data.get(INTERESTED):
                payload = Element(f"{{{NS}}}{kind}")
                for jid in jids:
                    payload.add(ITEM, {"jid": jid})
                attrs = {"type": "set", "id": "block-" + secrets.token_hex(6), "to": str(session.jid)}
                session.send(Element(IQ, attrs, [payload]))

    async def _send_presence(self, username: str, item: JID, *, unavailable: bool) -> None:
        """Unavailable (block) or current presence and a probe (unblock) for the contacts ``item`` covers."""
        roster: Any = self.api.plugin("roster")
        presence: Any = self.api.plugin("presence")
        if roster is None or presence is None:
            return
        user = JID(username, self.api.domain, None)
        if item.local is not None:
            contacts = [item.bare]
        else:
            contacts = [
                c for c in map(jid_from_str, await roster.subscribers(username)) if c.domain == item.domain
            ]
        for contact in contacts:
            if await roster.is_subscribed(username, str(contact)):
                await presence.send_presence_of(
                    user, item if item.local is not None else contact, unavailable=unavailable
                )
            if not unavailable and await roster.is_subscribed_to(username, str(contact)):
                for session in self.api.sessions.available(user):
                    await presence.answer_probe(contact, session.jid, internal=True)


def _items(payload: Element) -> list[JID]:
    jids: list[JID] = []
    for el in payload.findall(ITEM):
        raw = el.get("jid")
        if not raw:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "an item needs a 'jid'")
        try:
            jid = jid_from_str(raw)
        except InvalidJID:
            raise StanzaError(StanzaCondition.JID_MALFORMED) from None
        if len(str(jid)) > JID_LENGTH:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, f"JIDs longer than {JID_LENGTH} characters")
        if jid not in jids:
            jids.append(jid)
    return jids


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    blocking = Blocking(api, options)
    api.export(blocking)
    for target in ("host", "account"):
        api.add_feature(NS, target=target)
    api.on_iq("get", NS, "blocklist", blocking.on_get, target="account")
    api.on_iq("set", NS, "block", blocking.on_block, target="account")
    api.on_iq("set", NS, "unblock", blocking.on_unblock, target="account")
    api.on("stanza/in", blocking.on_stanza_in, priority=PRIORITY)
    for kind in ("message", "presence", "iq"):
        for target in ("bare", "full"):
            api.on(f"{kind}/{target}", blocking.on_delivery, priority=PRIORITY)
