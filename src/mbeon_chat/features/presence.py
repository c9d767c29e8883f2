"""RFC 6121 sections 3 and 4: presence subscriptions, presence broadcast, probes and directed presence.

There is one domain and no server-to-server link, so both "servers" of the RFC run here:

- *Outbound* processing (the sender's server) happens on ``stanza/in``, for presence a local client sends
  with a ``to``: subscription stanzas are stamped with bare JIDs, change the sender's roster through the
  roster plugin's state table (RFC 6121 Appendix A.2), and are routed or not as 3.1.2-3.4 say; available
  and unavailable presence with a ``to`` is directed presence (4.6) and is remembered in
  ``session.directed``.
- *Inbound* processing (the contact's server) happens on ``presence/bare`` and ``presence/full`` for every
  subscription stanza or probe addressed to a local account, whoever sent it (Appendix A.3, 4.3.2).
- Presence without ``to`` (``presence/self``) is initial presence, a presence update or unavailable
  presence, broadcast to the contacts with subscription ``from``/``both`` and to the user's own available
  resources (4.2-4.5); a session that ends without unavailable presence gets one sent for it.

A subscription request that finds the contact with no available resource keeps its pending-in record in
the roster store and its complete stanza in memory (bounded); it is delivered again on each initial
presence until answered (3.1.3). After a restart the request is rebuilt from the pending-in record.

Hooks fired: ``presence/initial`` (session) after the first available presence of a session,
``presence/changed`` (session, old_priority) after a later available presence, ``presence/unavailable``
(session) once a session that was available is no longer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, jid_from_str
from mbeon_chat.xmpp.stanza import PRESENCE, PRIORITY, Stanza

DEPENDS = ("roster",)

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
KNOWN_TYPES = SUBSCRIPTION_TYPES | {"available", "unavailable", "probe", "error"}


@dataclass(frozen=True)
class Options:
    max_directed: int = 1000  # JIDs remembered per session for directed presence (RFC 6121 4.6)
    max_stored_requests: int = 10000  # complete subscription requests kept in memory (RFC 6121 3.1.3)
    pre_approval: bool = True  # RFC 6121 3.4, advertised as <sub xmlns='urn:xmpp:features:pre-approval'/>

    def validate(self) -> None:
        if self.max_directed < 0:
            raise ValueError("max_directed: must not be negative")
        if self.max_stored_requests < 0:
            raise ValueError("max_stored_requests: must not be negative")


def parse_priority(el: Element) -> int:
    """The ``<priority/>`` of a presence (RFC 6121 4.7.2.3): an integer, clamped to -128..127, default 0."""
    text = el.findtext(PRIORITY)
    if not text:
        return 0
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "priority must be an integer") from None
    return max(-128, min(127, value))


def _presence(type_: str | None, from_: JID | str, to: JID | str) -> Element:
    attrs = {"from": str(from_), "to": str(to)}
    if type_ is not None:
        attrs["type"] = type_
    return Element(PRESENCE, attrs)


def _has_from(state: str) -> bool:
    """The state (roster plugin's notation, e.g. "from+out") lets the contact see the user's presence."""
    return state.startswith(("from", "both"))


def _addressed(el: Element, to: JID | str) -> Element:
    """``el`` with another ``to`` (children shared, not copied: the stanza is not changed after this)."""
    return Element(el.tag, {**el.attrs, "to": str(to)}, el.children)


class PresenceService:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        # (username, contact) -> the subscribe stanza as received, oldest first (RFC 6121 3.1.3).
        self.requests: OrderedDict[tuple[str, str], Element] = OrderedDict()

    @property
    def roster(self) -> Any:
        return self.api.plugin("roster")

    async def route(self, el: Element, from_: JID, to: JID) -> None:
        await self.api.router.route(Stanza(el, "presence", to, from_), None)

    def is_local_account(self, jid: JID) -> bool:
        return jid.domain == self.api.domain and jid.local is not None

    # --- presence without 'to': initial, update, unavailable (RFC 6121 4.2, 4.4, 4.5) ----------------------
    async def on_self(self, stanza: Stanza, origin: Session | None) -> bool:
        if origin is None or stanza.kind != "presence":
            return True
        if stanza.type == "available":
            await self.available(origin, stanza.el)
        elif stanza.type == "unavailable":
            await self.unavailable(origin, stanza.el)
        elif stanza.type not in KNOWN_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "unknown presence type")
        # Subscription stanzas, probes and errors without 'to' have no meaning here: ignored.
        return True

    async def available(self, session: Session, el: Element) -> None:
        priority = parse_priority(el)
        el.attrs.pop("to", None)
        el.attrs["from"] = str(session.jid)
        initial = not session.available
        old_priority = session.priority
        session.available = True
        session.priority = priority
        session.presence = el
        username = session.bare.local
        assert username is not None
        if initial:
            items = await self.roster.all_items(username)
            subscribers = [i.contact for i in items if i.subscription in ("from", "both")]
        else:
            items = []
            subscribers = await self.roster.subscribers(username)
        await self.broadcast(session, el, subscribers)
        if not initial:
            await self.api.hooks.fire("presence/changed", session, old_priority)
            return
        # RFC 6121 4.2.2: probe the contacts whose presence the user receives.
        for item in items:
            if item.subscription in ("to", "both"):
                await self.answer_probe(jid_from_str(item.contact), session.jid, internal=True)
        # RFC 6121 3.1.3: subscription requests that waited for an available resource.
        for item in items:
            if item.pending_in and item.subscription in ("none", "to"):
                stored = self.requests.get((username, item.contact))
                session.send(
                    stored if stored is not None else _presence("subscribe", item.contact, session.bare)
                )
        await self.api.hooks.fire("presence/initial", session)

    async def broadcast(self, session: Session, el: Element, subscribers: list[str]) -> set[str]:
        """Send ``el`` to each subscriber and to the user's own available resources; returns the bare JIDs."""
        for contact in subscribers:
            await self.route(_addressed(el, contact), session.jid, jid_from_str(contact))
        own = _addressed(el, session.bare)
        for other in self.api.sessions.available(session.bare):
            other.send(own)  # RFC 6121 4.2.2: including the resource that sent it
        return {*subscribers, str(session.bare)}

    async def unavailable(self, session: Session, el: Element, *, ended: bool = False) -> None:
        el.attrs.pop("to", None)
        el.attrs["from"] = str(session.jid)
        was_available = session.available
        directed, session.directed = session.directed, set()
        session.available = False
        session.presence = None
        session.priority = 0
        done: set[str] = {str(session.bare)}
        if was_available:
            username = session.bare.local
            assert username is not None
            done = await self.broadcast(session, el, await self.roster.subscribers(username))
            if not ended:
                session.send(_addressed(el, session.bare))
        # RFC 6121 4.6.3: those who got directed presence and are not told by the broadcast.
        for jid in directed:
            if str(jid.bare) not in done:
                await self.route(_addressed(el, jid), session.jid, jid)
        if was_available:
            await self.api.hooks.fire("presence/unavailable", session)

    async def on_session_ended(self, session: Session, reason: str) -> None:
        if session.available or session.directed:
            await self.unavailable(session, _presence("unavailable", session.jid, session.bare), ended=True)

    # --- presence with 'to' from a local client: outbound processing --------------------------------------
    async def on_stanza_in(self, stanza: Stanza, session: Session) -> bool:
        if stanza.kind != "presence" or stanza.to is None:
            return False
        type_ = stanza.type
        if type_ == "available":
            if len(session.directed) < self.options.max_directed:
                session.directed.add(stanza.to)
            return False
        if type_ == "unavailable":
            session.directed.discard(stanza.to)
            return False
        if type_ in SUBSCRIPTION_TYPES and not (
            stanza.to.local is None and stanza.to.domain == self.api.domain
        ):
            await self.outbound_subscription(stanza, session)
            return True
        return False  # to the server itself: presence/host ignores it

    async def outbound_subscription(self, stanza: Stanza, session: Session) -> None:
        """RFC 6121 3.1.2, 3.1.5, 3.2.2, 3.3.2 and 3.4 at the sender's server."""
        user, contact = session.bare, stanza.to
        assert contact is not None and user.local is not None
        contact = contact.bare
        if contact == user:
            return  # a subscription to oneself means nothing (the user always has its own presence)
        stanza.set_from(user)
        stanza.set_to(contact)
        kind = stanza.type
        if kind == "subscribed" and not self.options.pre_approval:
            item = await self.roster.get_item(user.local, str(contact))
            if item is None or not item.pending_in:
                return
        change = await self.roster.apply(user.local, str(contact), "out", kind)
        if kind in ("subscribe", "unsubscribe"):
            await self.api.router.route(stanza, session)
        elif kind == "subscribed":
            if change.changed:  # an approval; a pre-approval is not routed (3.4)
                await self.api.router.route(stanza, session)
                await self.send_presence_of(user, contact)
        elif change.changed:  # unsubscribed: cancels or denies
            if _has_from(change.state_before):
                await self.send_presence_of(user, contact, unavailable=True)
            await self.api.router.route(stanza, session)

    async def send_presence_of(self, user: JID, to: JID, *, unavailable: bool = False) -> None:
        """The current (or unavailable) presence of each of the user's available resources, sent to ``to``."""
        for session in self.api.sessions.available(user):
            if unavailable or session.presence is None:
                el = _presence("unavailable", session.jid, to)
            else:
                el = _addressed(session.presence, to)
            await self.route(el, session.jid, to)

    # --- subscription stanzas and probes to a local account: inbound processing ---------------------------
    async def on_to_account(self, stanza: Stanza, origin: Session | None) -> bool:
        type_ = stanza.type
        if type_ in SUBSCRIPTION_TYPES:
            await self.inbound_subscription(stanza)
            return True
        if type_ == "probe":
            if stanza.to is not None and stanza.from_ is not None:
                await self.answer_probe(stanza.to.bare, stanza.from_)
            return True
        if type_ not in KNOWN_TYPES:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "unknown presence type")
        return False  # available, unavailable, error: delivered by the router (RFC 6121 8.5)

    async def inbound_subscription(self, stanza: Stanza) -> None:
        """RFC 6121 3.1.3, 3.1.6, 3.2.3, 3.3.3 and 3.4 at the contact's server."""
        to, from_ = stanza.to, stanza.from_
        if to is None or from_ is None or to.local is None:
            return
        contact, user, username = to.bare, from_.bare, to.local  # the account here, and who sent it
        if contact == user or not await self.api.ctx.accounts.exists(username):
            return  # RFC 6121 8.5.1: silently ignored for a non-existent account
        stanza.set_to(contact)
        kind = stanza.type
        change = await self.roster.apply(username, str(user), "in", kind)
        key = (username, str(user))
        if change.after is None or not change.after.pending_in:
            self.requests.pop(key, None)
        if kind == "subscribe":
            if change.auto_approved or _has_from(change.state_before):
                # Pre-approved, or already subscribed: the server answers for the contact (3.1.3, 3.4).
                await self.route(_presence("subscribed", contact, user), contact, user)
                await self.send_presence_of(contact, user)
                return
            if change.changed:  # already pending: not delivered again now (Appendix A.3.1)
                self.remember_request(key, stanza.el)
                for session in self.api.sessions.available(contact):
                    session.send(stanza.el)
            return
        if not change.changed:
            return  # no state change: not delivered (RFC 6121 Appendix A.3)
        for session in self.api.sessions.resources(contact):
            if session.interested or session.available:
                session.send(stanza.el)
        if kind == "unsubscribe" and _has_from(change.state_before):
            await self.send_presence_of(contact, user, unavailable=True)  # 3.3.3

    def remember_request(self, key: tuple[str, str], el: Element) -> None:
        if self.options.max_stored_requests == 0:
            return
        self.requests.pop(key, None)
        self.requests[key] = el
        while len(self.requests) > self.options.max_stored_requests:
            self.requests.popitem(last=False)

    async def answer_probe(self, contact: JID, requester: JID, *, internal: bool = False) -> None:
        """RFC 6121 4.3.2: the contact's server answers a probe from ``requester``.

        ``internal``: a probe the server makes for the user's initial presence (4.2.2), for a contact the
        user's roster says it is subscribed to; the contact's roster is then read only if it is online.
        """
        if not self.is_local_account(contact):
            return
        assert contact.local is not None
        sessions = [s for s in self.api.sessions.available(contact) if s.presence is not None]
        if contact == requester.bare:  # the user's own resources
            for s in sessions:
                if s.jid != requester and s.presence is not None:
                    await self.route(_addressed(s.presence, requester), s.jid, requester)
            return
        if not internal and not await self.api.ctx.accounts.exists(contact.local):
            return  # RFC 6121 8.5.1: ignored
        if (sessions or not internal) and not await self.roster.is_subscribed(
            contact.local, str(requester.bare)
        ):
            await self.route(_presence("unsubscribed", contact, requester.bare), contact, requester.bare)
            return
        if not sessions:
            await self.route(_presence("unavailable", contact, requester), contact, requester)
            return
        for s in sessions:
            if s.presence is not None:
                await self.route(_addressed(s.presence, requester), s.jid, requester)

    # --- reload handover ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        stored = [(u, c, el.to_string()) for (u, c), el in self.requests.items()]
        return {"presence.version": 1, "presence.requests": stored}

    def restore(self, state: dict[str, Any] | None) -> None:
        if not state or state.get("presence.version") != 1:
            return
        from mbeon_chat.stream.events import ElementParsed
        from mbeon_chat.stream.parser import FramedParser

        for username, contact, data in state.get("presence.requests", []):
            try:
                events = FramedParser().receive_data(data.encode())
            except Exception:
                continue
            if events and isinstance(events[0], ElementParsed):
                self.requests[(username, contact)] = events[0].element


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    service = PresenceService(api, options)
    service.restore(api.previous_state)
    api.export(service)
    api.on("presence/self", service.on_self)
    api.on("presence/bare", service.on_to_account)
    api.on("presence/full", service.on_to_account)
    api.on("stanza/in", service.on_stanza_in, priority=-100)
    api.on("session/ended", service.on_session_ended)
    api.on_save(service.snapshot)
    if options.pre_approval:
        api.add_stream_feature(lambda: Element("{" + ns.PRE_APPROVAL_FEATURE + "}sub"))
