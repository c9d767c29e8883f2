"""XEP-0054: vcard-temp, stored per account.

- ``<iq type='set'><vCard xmlns='vcard-temp'>...</vCard></iq>`` from one of the account's own resources
  (without ``to``, or to the account's bare JID) replaces the account's vCard. Larger than ``max_bytes``
  (serialised): ``not-acceptable``.
- ``<iq type='get'><vCard xmlns='vcard-temp'/></iq>`` to a local account's bare JID (or without ``to``
  for one's own) returns the stored vCard, or an empty ``<vCard/>`` if there is none (section 3.1). A JID
  that is not an account gets ``service-unavailable`` (RFC 6121 8.5.1). vCards are public, as in
  XEP-0054; a user who blocked the requester answers nothing (blocking plugin).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.storage.stores.client import SqlVCardStore
from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.parser import FramedParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()

VCARD = f"{{{ns.VCARD}}}vCard"


@dataclass(frozen=True)
class Options:
    max_bytes: int = 65536  # serialised size of one vCard (photos are base64 inside it)

    def validate(self) -> None:
        if not 256 <= self.max_bytes <= 16 * 1048576:
            raise ValueError("max_bytes: must be 256..16777216")


def parse(payload: bytes) -> Element:
    events = FramedParser(max_stanza_size=len(payload) + 1).receive_data(payload)
    if len(events) != 1 or not isinstance(events[0], ElementParsed):
        raise ValueError("not a stored vCard")
    return events[0].element


class VCards:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options

    @functools.cached_property
    def store(self) -> SqlVCardStore:
        return SqlVCardStore(self.api.storage.database)  # not in setup: check-config has no storage

    async def on_get(self, iq: Stanza, origin: Session | None) -> Element:
        owner = iq.to.bare if iq.to is not None else iq.from_.bare if iq.from_ is not None else None
        if owner is None or owner.local is None or not await self.api.ctx.accounts.exists(owner.local):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        stored = await self.store.get(owner.local)
        if stored is None:
            return Element(VCARD)
        try:
            return parse(stored)
        except ValueError:
            self.api.log.error("vcard.unreadable", username=owner.local)
            return Element(VCARD)

    async def on_set(self, iq: Stanza, origin: Session | None) -> Stanza:
        if origin is None or origin.bare.local is None or (iq.to is not None and iq.to.bare != origin.bare):
            raise StanzaError(
                StanzaCondition.FORBIDDEN, "only the account's own resources may change its vCard"
            )
        vcard = iq.payload
        assert vcard is not None
        payload = vcard.to_string().encode()
        if len(payload) > self.options.max_bytes:
            raise StanzaError(
                StanzaCondition.NOT_ACCEPTABLE, f"the vCard is larger than {self.options.max_bytes} bytes"
            )
        await self.store.put(origin.bare.local, payload)
        return iq.result()


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    vcards = VCards(api, options)
    for target in ("host", "account"):
        api.add_feature(ns.VCARD, target=target)
    api.on_iq("get", ns.VCARD, "vCard", vcards.on_get, target="account")
    api.on_iq("set", ns.VCARD, "vCard", vcards.on_set, target="account")
