"""XEP-0280: Message Carbons (urn:xmpp:carbons:2).

A resource turns carbons on with ``<enable/>`` (and off with ``<disable/>``) for its session. Then:

- *sent carbons*: an eligible message a resource of the user sends is copied, wrapped in
  ``<sent><forwarded/></sent>``, to the user's other carbons-enabled resources (section 7);
- *received carbons*: an eligible message delivered to some of the user's resources (addressed to the
  bare or a full JID) is copied, wrapped in ``<received><forwarded/></received>``, to the enabled
  resources that did not get it (section 6).

Eligible (section 6.1): type ``chat``; type ``normal`` with a ``<body/>`` or an IM payload (chat states,
receipts, chat markers). Never: ``groupchat``, ``headline``, ``error``, MUC private messages (``<x
xmlns='http://jabber.org/protocol/muc#user'/>``), messages carrying ``<private xmlns='urn:xmpp:carbons:2'/>``
or the ``<no-copy xmlns='urn:xmpp:hints'/>`` hint, and messages between resources of the same account.
The copies are built after archiving, so they carry the recipient's XEP-0359 stanza-id.
"""

from __future__ import annotations

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import BODY, MESSAGE, Stanza

DEPENDS = ()

NS = ns.CARBONS
PRIVATE = f"{{{NS}}}private"
NO_COPY = "{urn:xmpp:hints}no-copy"
MUC_USER = f"{{{ns.MUC_USER}}}x"
FORWARDED = f"{{{ns.FORWARD}}}forwarded"
IM_PAYLOADS = frozenset(
    {"http://jabber.org/protocol/chatstates", "urn:xmpp:receipts", "urn:xmpp:chat-markers:0"}
)
ENABLED = "carbons.enabled"
# Below blocking (1000) and archiving (500): blocked messages are not copied, copies carry stanza-ids.
PRIORITY = 100


def eligible(stanza: Stanza) -> bool:
    """XEP-0280 6.1, for a message (the caller checks that it is one)."""
    if stanza.type not in ("chat", "normal"):
        return False
    im_payload = stanza.type == "chat"
    for child in stanza.el.elements():
        tag = child.tag
        if tag in (PRIVATE, NO_COPY, MUC_USER):
            return False
        if tag == BODY or child.ns in IM_PAYLOADS:
            im_payload = True
    return im_payload


def wrap(el: Element, direction: str, user: JID, to: JID) -> Element:
    """``el`` forwarded inside ``<sent/>`` or ``<received/>``, from the user's bare JID to one resource."""
    forwarded = Element(FORWARDED, None, [el])
    attrs = {"from": str(user), "to": str(to), "type": el.attrs.get("type", "normal")}
    return Element(MESSAGE, attrs, [Element(f"{{{NS}}}{direction}", None, [forwarded])])


class Carbons:
    def __init__(self, api: PluginAPI) -> None:
        self.api = api

    def copy_to(self, user: JID, el: Element, direction: str, skip: list[Session]) -> None:
        for session in self.api.sessions.resources(user):
            if session.data.get(ENABLED) and session not in skip:
                session.send(wrap(el, direction, user, session.jid))

    async def on_sent(self, stanza: Stanza, session: Session) -> bool:
        """A message from one of the user's resources (``stanza/in``): sent carbons."""
        to = stanza.to
        if stanza.kind == "message" and to is not None and to.bare != session.bare and eligible(stanza):
            self.copy_to(session.bare, stanza.el, "sent", [session])
        return False

    async def on_to_full(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        if to is None or not self._received_candidate(stanza):
            return False
        target = self.api.sessions.get(to)
        if target is not None:  # an unknown resource falls back to message/bare, handled there
            self.copy_to(to.bare, stanza.el, "received", [target])
        return False

    async def on_to_bare(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        if to is None or not self._received_candidate(stanza):
            return False
        targets = self.api.router.message_targets(to.bare, stanza.type)
        if targets:  # nobody got it: it goes to offline storage, and no copies either
            self.copy_to(to.bare, stanza.el, "received", targets)
        return False

    def _received_candidate(self, stanza: Stanza) -> bool:
        sender, to = stanza.from_, stanza.to
        return (
            to is not None
            and to.local is not None
            and (sender is None or sender.bare != to.bare)
            and eligible(stanza)
        )

    async def on_toggle(self, iq: Stanza, origin: Session | None) -> Stanza:
        if origin is None or (iq.to is not None and iq.to.bare != origin.bare):
            raise StanzaError(StanzaCondition.FORBIDDEN, "carbons are switched by the session itself")
        payload = iq.payload
        assert payload is not None
        if payload.local == "enable":
            origin.data[ENABLED] = True
        else:
            origin.data.pop(ENABLED, None)
        return iq.result()


def setup(api: PluginAPI) -> None:
    carbons = Carbons(api)
    api.export(carbons)
    api.add_feature(NS)
    api.on_iq("set", NS, "enable", carbons.on_toggle, target="account")
    api.on_iq("set", NS, "disable", carbons.on_toggle, target="account")
    api.on("stanza/in", carbons.on_sent, priority=PRIORITY)
    api.on("message/full", carbons.on_to_full, priority=PRIORITY)
    api.on("message/bare", carbons.on_to_bare, priority=PRIORITY)
