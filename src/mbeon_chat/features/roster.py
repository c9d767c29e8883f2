"""RFC 6121 section 2: the roster (jabber:iq:roster), versioning (2.6) and the subscription state table.

The roster belongs to the account; only its own resources may read or change it (RFC 6121 2.1.5). A
resource that requested the roster is *interested* (2.1.6) and gets every roster push. Versions are the
store's per-user counter: a client whose ``ver`` is current gets an empty result (2.6.3); any other
``ver`` gets the whole roster, which 2.6.3 allows.

Subscription states change only through :meth:`RosterService.apply`, driven by the two tables below,
which are RFC 6121 Appendix A.2 (outbound) and A.3 (inbound) written as data, plus pre-approval (3.4).
Records that only carry a pending inbound request (``in_roster=False``) are never shown to the user.

Exported for other plugins (``api.plugin("roster")``): :class:`RosterService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.storage.api import RosterItem
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str
from mbeon_chat.xmpp.stanza import IQ, PRESENCE, Stanza

DEPENDS = ()

QUERY = "{" + ns.ROSTER + "}query"
ITEM = "{" + ns.ROSTER + "}item"
GROUP = "{" + ns.ROSTER + "}group"

# --- RFC 6121 Appendix A: state -> new state; a missing entry means "no state change" -----------------
# A state is the subscription plus "+out" (we asked them, ask="subscribe") and "+in" (they asked us).
OUTBOUND: dict[str, dict[str, str]] = {
    "subscribe": {"none": "none+out", "none+in": "none+out+in", "from": "from+out"},
    "unsubscribe": {
        "none+out": "none",
        "none+out+in": "none+in",
        "to": "none",
        "to+in": "none+in",
        "from+out": "from",
        "both": "from",
    },
    "subscribed": {"none+in": "from", "none+out+in": "from+out", "to+in": "both"},
    "unsubscribed": {
        "none+in": "none",
        "none+out+in": "none+out",
        "to+in": "to",
        "from": "none",
        "from+out": "none+out",
        "both": "to",
    },
}
INBOUND: dict[str, dict[str, str]] = {
    "subscribe": {"none": "none+in", "none+out": "none+out+in", "to": "to+in"},
    "unsubscribe": {
        "none+in": "none",
        "none+out+in": "none+out",
        "to+in": "to",
        "from": "none",
        "from+out": "none+out",
        "both": "to",
    },
    "subscribed": {"none+out": "to", "none+out+in": "to+in", "from+out": "both"},
    "unsubscribed": {
        "none+out": "none",
        "none+out+in": "none+in",
        "to": "none",
        "to+in": "none+in",
        "from+out": "from",
        "both": "from",
    },
}
# RFC 6121 3.4: a "subscribed" sent without a pending request pre-approves, in these states; an inbound
# "subscribe" is then answered at once, moving to the state on the right.
PRE_APPROVABLE = {"none": "from", "none+out": "from+out", "to": "both"}
TABLES = {"out": OUTBOUND, "in": INBOUND}
Reply = Callable[[], None] | None


def state_of(item: RosterItem | None) -> str:
    if item is None:
        return "none"
    sub = item.subscription
    state = sub
    if item.ask_out and sub in ("none", "from"):
        state += "+out"
    if item.pending_in and sub in ("none", "to"):
        state += "+in"
    return state


def has_to(state: str) -> bool:
    """The user receives the contact's presence."""
    return state.startswith(("to", "both"))


def has_from(state: str) -> bool:
    """The contact receives the user's presence."""
    return state.startswith(("from", "both"))


@dataclass(frozen=True, slots=True)
class Change:
    """What :meth:`RosterService.apply` did to one roster item."""

    before: RosterItem | None
    after: RosterItem | None
    state_before: str
    state_after: str
    auto_approved: bool = False  # an inbound subscribe met a pre-approval (RFC 6121 3.4)

    @property
    def changed(self) -> bool:
        return self.state_before != self.state_after


@dataclass(frozen=True)
class Options:
    versioning: bool = True  # RFC 6121 2.6 (advertised as <ver xmlns='urn:xmpp:features:rosterver'/>)
    max_items: int = 1000
    max_name_length: int = 1023  # characters (the store's column size)
    max_group_length: int = 1023
    max_groups: int = 64

    def validate(self) -> None:
        if self.max_items < 1:
            raise ValueError("max_items: must be at least 1")
        if not 1 <= self.max_name_length <= 1023:
            raise ValueError("max_name_length: must be 1..1023")
        if not 1 <= self.max_group_length <= 4096:
            raise ValueError("max_group_length: must be 1..4096")
        if self.max_groups < 1:
            raise ValueError("max_groups: must be at least 1")


def item_element(item: RosterItem, *, remove: bool = False) -> Element:
    """The ``<item/>`` of a roster result or push (RFC 6121 2.1.2)."""
    if remove:
        return Element(ITEM, {"jid": item.contact, "subscription": "remove"})
    attrs = {"jid": item.contact}
    if item.name:
        attrs["name"] = item.name
    state = state_of(item)
    attrs["subscription"] = item.subscription
    if "+out" in state:
        attrs["ask"] = "subscribe"
    if item.approved:
        attrs["approved"] = "true"
    el = Element(ITEM, attrs)
    for group in item.groups:
        el.add(GROUP, None, group)
    return el


def _with_state(item: RosterItem, state: str, approved: bool, in_roster: bool) -> RosterItem:
    sub = state.split("+", 1)[0]
    ask_out = "+out" in state
    return dataclasses.replace(
        item,
        subscription=sub,
        ask_out=ask_out,
        pending_in="+in" in state,
        approved=approved,
        in_roster=in_roster or sub != "none" or ask_out,
    )


class RosterService:
    """Rosters of local accounts: reads, changes (with roster pushes) and the subscription state table.

    ``username`` is an account's localpart; ``contact`` a bare JID string, as stored.
    """

    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self._locks: dict[str, list[Any]] = {}

    # --- reads -----------------------------------------------------------------------------------------
    @property
    def store(self) -> Any:
        return self.api.storage.roster

    async def get_item(self, username: str, contact: str) -> RosterItem | None:
        """The item, including a record that only holds a pending inbound request (``in_roster=False``)."""
        item: RosterItem | None = await self.store.get_item(username, contact)
        return item

    async def items(self, username: str) -> tuple[int, list[RosterItem]]:
        """The version and the items the user sees (``in_roster``)."""
        version, items = await self.store.get_roster(username)
        return version, [i for i in items if i.in_roster]

    async def all_items(self, username: str) -> list[RosterItem]:
        """Every record, pending-only ones included (for presence fan-out and redelivery)."""
        _, items = await self.store.get_roster(username)
        return list(items)

    async def subscription(self, username: str, contact: str) -> str:
        """``none``, ``to``, ``from`` or ``both``."""
        item = await self.get_item(username, contact)
        return item.subscription if item is not None else "none"

    async def is_subscribed(self, username: str, contact: str) -> bool:
        """Whether ``contact`` may see the presence of ``username`` (subscription ``from``/``both``)."""
        return has_from(await self.subscription(username, contact))

    async def is_subscribed_to(self, username: str, contact: str) -> bool:
        """Whether ``username`` sees the presence of ``contact`` (subscription ``to``/``both``)."""
        return has_to(await self.subscription(username, contact))

    async def subscribers(self, username: str) -> list[str]:
        """Contacts that receive the user's presence broadcasts (``from``/``both``)."""
        items = await self.store.contacts_with_subscription(username, {"from", "both"})
        return [i.contact for i in items]

    # --- changes ---------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def locked(self, username: str) -> AsyncIterator[None]:
        """Serialise read-modify-write changes of one user's roster (within this process)."""
        entry = self._locks.get(username)
        if entry is None:
            entry = self._locks[username] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._locks.get(username) is entry:
                del self._locks[username]

    async def apply(self, username: str, contact: str, direction: str, kind: str) -> Change:
        """Apply a subscription stanza (``direction`` "out": sent by the user; "in": received) to the item.

        Stores the result and sends the roster push when the visible item changed.
        """
        table = TABLES[direction][kind]
        async with self.locked(username):
            item = await self.get_item(username, contact)
            state = state_of(item)
            approved = item.approved if item is not None else False
            new_state = table.get(state, state)
            new_approved = approved
            auto = False
            creates = False
            if direction == "out":
                if kind == "subscribed":
                    if new_state != state:
                        new_approved = False
                    elif state in PRE_APPROVABLE:
                        new_approved = True
                        creates = True
                    creates = creates or new_state != state
                elif kind == "unsubscribed":
                    new_approved = False
                elif kind == "subscribe":
                    creates = True
            elif kind == "subscribe" and approved and state in PRE_APPROVABLE:
                new_state, new_approved, auto = PRE_APPROVABLE[state], False, True
            if new_state == state and new_approved == approved and not (creates and not _visible(item)):
                return Change(item, item, state, state)
            base = item if item is not None else RosterItem(contact=contact, in_roster=False)
            new = _with_state(base, new_state, new_approved, base.in_roster or creates)
            if not new.in_roster and not new.pending_in:
                version = await self.store.delete_item(username, contact)
                after: RosterItem | None = None
            else:
                version = await self.store.put_item(username, new)
                after = new
        if (
            after is not None
            and after.in_roster
            and (item is None or not item.in_roster or _shown(item) != _shown(after))
        ):
            self.push(username, after, version)
        return Change(item, after, state, new_state if after is not None else "none", auto)

    async def set_item(
        self, username: str, contact: str, name: str | None, groups: tuple[str, ...], *, reply: Reply = None
    ) -> RosterItem:
        """Add or update an item from a roster set (RFC 6121 2.3, 2.4); subscription state is kept.

        ``reply`` runs after the change is stored and before the roster push (the order of RFC 6121 2.3.2).
        """
        async with self.locked(username):
            item = await self.get_item(username, contact)
            if item is None or not item.in_roster:
                _, items = await self.items(username)
                if len(items) >= self.options.max_items:
                    raise StanzaError(StanzaCondition.RESOURCE_CONSTRAINT, "the roster is full")
            base = item if item is not None else RosterItem(contact=contact)
            new = dataclasses.replace(base, name=name, groups=groups, in_roster=True)
            version = await self.store.put_item(username, new)
        if reply is not None:
            reply()
        self.push(username, new, version)
        return new

    async def remove_item(self, username: str, contact: str, *, reply: Reply = None) -> RosterItem:
        """Remove an item (RFC 6121 2.5) and push the removal; returns what it was. Raises ``item-not-found``.

        The caller then cancels the subscriptions (:meth:`cancel_subscriptions`).
        """
        async with self.locked(username):
            item = await self.get_item(username, contact)
            if item is None or not item.in_roster:
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
            version = await self.store.delete_item(username, contact)
        if reply is not None:
            reply()
        self.push(username, item, version, remove=True)
        return item

    async def cancel_subscriptions(self, username: str, item: RosterItem) -> None:
        """RFC 6121 2.5.2: after removing ``item``, cancel the subscriptions both ways (3.2.2 and 3.3.2)."""
        state = state_of(item)
        user = JID(username, self.api.domain, None)
        if has_from(state) or "+in" in state:
            if has_from(state):
                for session in self.api.sessions.available(user):
                    el = Element(
                        PRESENCE, {"type": "unavailable", "from": str(session.jid), "to": item.contact}
                    )
                    await self.api.send(el)
            await self.api.send(
                Element(PRESENCE, {"type": "unsubscribed", "from": str(user), "to": item.contact})
            )
        if has_to(state) or "+out" in state:
            await self.api.send(
                Element(PRESENCE, {"type": "unsubscribe", "from": str(user), "to": item.contact})
            )

    def push(self, username: str, item: RosterItem, version: int, *, remove: bool = False) -> None:
        """Send a roster push (RFC 6121 2.1.6) to every interested resource of the user."""
        user = JID(username, self.api.domain, None)
        query = Element(QUERY, {"ver": str(version)} if self.options.versioning else None)
        query.append(item_element(item, remove=remove))
        for session in self.api.sessions.resources(user):
            if session.interested:
                attrs = {"type": "set", "id": "push-" + secrets.token_hex(6), "to": str(session.jid)}
                session.send(Element(IQ, attrs, [query]))


def _visible(item: RosterItem | None) -> bool:
    return item is not None and item.in_roster


def _shown(item: RosterItem) -> dict[str, str]:
    """The attributes a client sees for the item's subscription state."""
    return item_element(item).attrs


# --- the iq handlers -------------------------------------------------------------------------------------
async def _owner(api: PluginAPI, iq: Stanza, origin: Session | None) -> str:
    """The username whose roster this iq may touch: only the account's own resources (RFC 6121 2.1.5)."""
    if origin is None or origin.bare.local is None:
        raise StanzaError(StanzaCondition.FORBIDDEN)
    to = iq.to
    if to is not None and to.bare != origin.bare:
        if to.local is not None and not await api.ctx.accounts.exists(to.local):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)  # RFC 6121 8.5.1
        raise StanzaError(StanzaCondition.FORBIDDEN, "only the account's own resources may use its roster")
    return origin.bare.local


def _parse_item(query: Element, origin: Session) -> tuple[JID, Element]:
    children = list(query.elements())
    if len(children) != 1 or children[0].tag != ITEM:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "a roster set carries exactly one <item/>")
    item = children[0]
    raw = item.get("jid")
    if not raw:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "the item has no 'jid'")
    try:
        contact = jid_from_str(raw)
    except InvalidJID:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "the item's 'jid' is not a valid JID") from None
    if contact.resource is not None:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "a roster item is a bare JID")
    if contact == origin.bare:
        raise StanzaError(StanzaCondition.NOT_ALLOWED, "you cannot add yourself to your roster")
    return contact, item


def _name_and_groups(item: Element, options: Options) -> tuple[str | None, tuple[str, ...]]:
    name = item.get("name") or None
    if name is not None and len(name) > options.max_name_length:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "the name is too long")
    groups: list[str] = []
    for el in item.findall(GROUP):
        group = el.text
        if not group:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "a group name is empty")
        if len(group) > options.max_group_length:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "a group name is too long")
        if group in groups:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "duplicate group")
        groups.append(group)
    if len(groups) > options.max_groups:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "too many groups")
    return name, tuple(groups)


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    roster = RosterService(api, options)
    api.export(roster)

    async def on_get(iq: Stanza, origin: Session | None) -> Element | Stanza:
        username = await _owner(api, iq, origin)
        assert origin is not None
        origin.interested = True
        version, items = await roster.items(username)
        query = iq.payload
        client_ver = query.get("ver") if query is not None else None
        if options.versioning and client_ver is not None and client_ver == str(version):
            return iq.result()  # RFC 6121 2.6.3: up to date; changes would follow as pushes
        result = Element(QUERY, {"ver": str(version)} if options.versioning else None)
        for item in items:
            result.append(item_element(item))
        return result

    async def on_set(iq: Stanza, origin: Session | None) -> None:
        username = await _owner(api, iq, origin)
        assert origin is not None and iq.payload is not None
        contact, item_el = _parse_item(iq.payload, origin)
        # RFC 6121 2.1.5: 'subscription' other than "remove", 'ask' and 'approved' are ignored in a set.
        reply = functools.partial(origin.send, iq.result().el)
        if item_el.get("subscription") == "remove":
            removed = await roster.remove_item(username, str(contact), reply=reply)
            await roster.cancel_subscriptions(username, removed)
            return
        name, groups = _name_and_groups(item_el, options)
        await roster.set_item(username, str(contact), name, groups, reply=reply)

    api.on_iq("get", ns.ROSTER, "query", on_get, target="account")
    api.on_iq("set", ns.ROSTER, "query", on_set, target="account")
    if options.versioning:
        api.add_stream_feature(lambda: Element("{" + ns.ROSTER_VER_FEATURE + "}ver"))
