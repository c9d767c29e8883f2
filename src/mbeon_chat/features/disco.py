"""XEP-0030: Service Discovery, for the server and (on their behalf) for accounts' bare JIDs.

The server answers disco#info with its identity (server/im), the identities plugins added and every
feature plugins registered for the host; disco#items lists the components (MUC, counselling ...).
For an account's bare JID it answers only to the account owner and to contacts the account shares
presence with (subscription "from" or "both", asked of the roster feature; XEP-0030 section 8):
anyone else gets ``service-unavailable`` for disco#info and an empty disco#items result, so the
answers do not reveal whether an account exists. A ``node`` nobody serves is ``item-not-found``.
"""

from __future__ import annotations

from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import Identity, PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()

INFO = "{" + ns.DISCO_INFO + "}query"
ITEMS = "{" + ns.DISCO_ITEMS + "}query"
_OWN_FEATURES = (ns.DISCO_INFO, ns.DISCO_ITEMS)
_SHARES_PRESENCE = frozenset({"from", "both"})


def _info(node: str | None, identities: list[Identity], features: list[str]) -> Element:
    query = Element(INFO, {"node": node} if node else None)
    seen: set[tuple[str, str, str | None]] = set()
    for ident in identities:
        key = (ident.category, ident.type, ident.name)
        if key in seen:
            continue
        seen.add(key)
        attrs = {"category": ident.category, "type": ident.type}
        if ident.name:
            attrs["name"] = ident.name
        query.add("{" + ns.DISCO_INFO + "}identity", attrs)
    for var in sorted(set(features)):
        query.add("{" + ns.DISCO_INFO + "}feature", {"var": var})
    return query


def _items(node: str | None, items: list[tuple[str, str | None]]) -> Element:
    query = Element(ITEMS, {"node": node} if node else None)
    for jid, name in items:
        attrs = {"jid": jid}
        if name:
            attrs["name"] = name
        query.add("{" + ns.DISCO_ITEMS + "}item", attrs)
    return query


def _node(iq: Stanza) -> str | None:
    payload = iq.payload
    return payload.get("node") if payload is not None else None


class Disco:
    """The handlers; exported so other plugins can ask whether a requester may see an account."""

    def __init__(self, api: PluginAPI) -> None:
        self.api = api

    # --- the server ------------------------------------------------------------------------------
    async def host_info(self, iq: Stanza, origin: Session | None) -> Element:
        node = _node(iq)
        if node:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        ctx = self.api.ctx
        name = getattr(self.api.config.server, "name", None) or "mbeon-chat"
        identities = [Identity("server", "im", name), *ctx.identities("host")]
        return _info(None, identities, [*ctx.features("host"), *_OWN_FEATURES])

    async def host_items(self, iq: Stanza, origin: Session | None) -> Element:
        node = _node(iq)
        if node:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        return _items(None, sorted(self.api.ctx.component_items()))

    # --- an account's bare JID -------------------------------------------------------------------
    async def account_info(self, iq: Stanza, origin: Session | None) -> Element:
        owner = self._target(iq)
        if not await self.may_see(owner, iq.from_):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        if _node(iq):
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        ctx = self.api.ctx
        identities = [Identity("account", "registered"), *ctx.identities("account")]
        return _info(None, identities, [*ctx.features("account"), *_OWN_FEATURES])

    async def account_items(self, iq: Stanza, origin: Session | None) -> Element:
        owner = self._target(iq)
        node = _node(iq)
        if not await self.may_see(owner, iq.from_):
            return _items(node, [])  # XEP-0030 8: an empty result, whether or not the account exists
        if node:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        resources = [(str(s.jid), None) for s in self.api.sessions.available(owner)]
        return _items(None, sorted(resources))

    def _target(self, iq: Stanza) -> JID:
        if iq.to is not None:
            return iq.to.bare
        if iq.from_ is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        return iq.from_.bare

    async def may_see(self, owner: JID, requester: JID | None) -> bool:
        """The owner, or a contact the owner shares presence with; only for existing accounts."""
        if requester is None or owner.local is None:
            return False
        accounts = self.api.ctx.accounts
        if accounts is not None and not await accounts.exists(owner.local):
            return False
        if requester.bare == owner:
            return True
        return await self._shares_presence(owner, requester.bare)

    async def _shares_presence(self, owner: JID, contact: JID) -> bool:
        """Whether ``owner`` shares presence with ``contact`` (asked of the roster feature per request)."""
        roster: Any = self.api.plugin("roster")
        if roster is None:
            return False  # without the roster feature, nobody but the owner is a contact
        check = getattr(roster, "is_subscribed", None)
        if callable(check):
            return bool(await check(owner.local, str(contact)))
        item = await self.api.storage.roster.get_item(owner.local, str(contact))
        return item is not None and item.subscription in _SHARES_PRESENCE


def setup(api: PluginAPI) -> None:
    disco = Disco(api)
    api.export(disco)
    for target in ("host", "account"):
        api.add_feature(ns.DISCO_INFO, target=target)
        api.add_feature(ns.DISCO_ITEMS, target=target)
    api.on_iq("get", ns.DISCO_INFO, "query", disco.host_info, target="host")
    api.on_iq("get", ns.DISCO_ITEMS, "query", disco.host_items, target="host")
    api.on_iq("get", ns.DISCO_INFO, "query", disco.account_info, target="account")
    api.on_iq("get", ns.DISCO_ITEMS, "query", disco.account_items, target="account")
