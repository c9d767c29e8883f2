"""The MUC service component (XEP-0045): owns the rooms, routes stanzas to the presence, message and
moderation handlers, and delivers what rooms send.

Every stanza addressed to the service domain reaches :meth:`MucService.handle`. Handlers raise
``StanzaError``; the router turns that into the error reply (from the address the stanza was sent to).

Delivery: occupants are local sessions, so the room writes straight to them (``Session.send``) without a
hook chain per recipient. A broadcast builds each variant of a stanza once (with or without real JIDs,
self-presence) and per recipient only a shallow element with its own ``to`` (the children are shared).
Delivery never awaits, so every occupant sees the room's traffic in the same order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

from . import messages, moderation, presence
from .config_form import roominfo_form
from .room import Affiliation, Occupant, Room, RoomConfig, rank, sees_real_jids
from .stanzas import (
    DISCO_INFO_QUERY,
    DISCO_ITEMS_QUERY,
    MUC_ADMIN_QUERY,
    MUC_OWNER_QUERY,
    PING,
    USER_ITEM,
    item_element,
    user_x,
)
from .stanzas import presence as presence_el
from .store import AffiliationRecord, RoomRecord, WriteBehind

if TYPE_CHECKING:
    from mbeon_chat.plugin.api import PluginAPI

__all__ = ["MucService"]

ROOMUSER_NODE = "x-roomuser-item"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MucService:
    def __init__(self, api: PluginAPI, options: Any, writer: WriteBehind | None) -> None:
        self.api = api
        self.options = options
        self.domain = f"{options.subdomain}.{api.domain}"
        self.jid = JID(None, self.domain, None)
        self.rooms: dict[JID, Room] = {}
        #: Real full JID -> the rooms it is in (to leave them when the session ends).
        self.joined: dict[JID, set[JID]] = {}
        self.ready = asyncio.Event()
        self.writer = writer
        self.registry = api.sessions
        self.log = api.log
        creators = set(options.creators) | set(options.counsellors)
        self.anyone_creates = "*" in creators
        self.creators = {JID.parse(c).bare for c in creators if c != "*"}

    # --- entry point ------------------------------------------------------------------------------
    async def handle(self, stanza: Stanza, origin: Any) -> None:
        if not self.ready.is_set():
            await self.ready.wait()
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None:
            return
        if to.local is None:
            await self._service_stanza(stanza)
            return
        room = self.rooms.get(to.bare)
        kind = stanza.kind
        if kind == "presence":
            await presence.on_presence(self, room, stanza)
        elif kind == "message":
            await messages.on_message(self, room, stanza)
        elif to.resource is not None:
            await self._occupant_iq(room, stanza)
        else:
            await self._room_iq(room, stanza)

    # --- who is who -------------------------------------------------------------------------------
    def affiliation(self, room: Room, bare: JID) -> Affiliation:
        """The stored affiliation; server admins are owners of every room."""
        if self.api.is_admin(bare):
            return Affiliation.OWNER
        return room.affiliation(bare)

    def may_create(self, bare: JID) -> bool:
        return self.anyone_creates or bare in self.creators or self.api.is_admin(bare)

    def new_room(self, jid: JID, owner: JID) -> Room:
        o = self.options
        config = RoomConfig(
            persistent=o.default_persistent,
            public=o.default_public,
            members_only=o.default_members_only,
            moderated=o.default_moderated,
            whois=o.default_whois,
            history_length=o.history_default,
        )
        room = Room(jid, config, locked=True, created_at=now_ms(), history=deque(maxlen=o.history_max))
        room.set_affiliation(owner, Affiliation.OWNER)
        self.rooms[jid] = room
        return room

    # --- delivery ---------------------------------------------------------------------------------
    def deliver(self, el: Element, full: JID, full_str: str) -> None:
        """Send ``el`` (without ``to``) to one session; a session that is gone is skipped."""
        session = self.registry.get(full)
        if session is not None:
            session.send(Element(el.tag, {**el.attrs, "to": full_str}, el.children))

    def send_to(self, occupant: Occupant, el: Element) -> None:
        for full, full_str in occupant.sessions.items():
            self.deliver(el, full, full_str)

    def broadcast(self, room: Room, el: Element, occupants: Iterable[Occupant] | None = None) -> None:
        for occupant in room.occupants.values() if occupants is None else occupants:
            for full, full_str in occupant.sessions.items():
                self.deliver(el, full, full_str)

    def broadcast_presence(
        self,
        room: Room,
        subject: Occupant,
        *,
        type_: str | None = None,
        payload: list[Element | str] | None = None,
        codes: tuple[int, ...] = (),
        self_codes: tuple[int, ...] = (),
        nick: str | None = None,
        from_nick: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        extra: tuple[Element, ...] = (),
        also_self: bool = True,
    ) -> None:
        """``subject``'s presence to every occupant (and to ``subject`` itself, who may have left already).

        Moderators (or everybody, in non-anonymous rooms) get the item with the real JID; the subject gets
        ``self_codes`` (110 ...) too. The item carries ``subject``'s current role and affiliation.
        """
        config = room.config
        from_ = f"{room.jid_str}/{from_nick or subject.nick}"
        body = subject.presence if payload is None else payload
        role = subject.role
        variants: dict[tuple[bool, bool], Element] = {}

        def variant(with_jid: bool, is_self: bool) -> Element:
            key = (with_jid, is_self)
            el = variants.get(key)
            if el is None:
                item = item_element(
                    USER_ITEM,
                    subject.affiliation,
                    role,
                    jid=str(subject.jid) if with_jid and subject.sessions else None,
                    nick=nick,
                    actor_nick=actor,
                    reason=reason,
                )
                all_codes = (*codes, *self_codes) if is_self else codes
                el = variants[key] = presence_el(from_, body, user_x(item, all_codes, extra), type_)
            return el

        for occupant in room.occupants.values():
            if occupant is subject:
                continue
            el = variant(sees_real_jids(occupant.role, config), False)
            for full, full_str in occupant.sessions.items():
                self.deliver(el, full, full_str)
        if also_self:
            el = variant(True, True)
            for full, full_str in subject.sessions.items():
                self.deliver(el, full, full_str)

    async def reply(self, stanza: Stanza, payload: Element | None = None) -> None:
        result = stanza.result(payload)
        await self.api.send(result)

    # --- persistence ------------------------------------------------------------------------------
    def record(self, room: Room, *, with_affiliations: bool = False) -> RoomRecord:
        affs: tuple[AffiliationRecord, ...] = ()
        if with_affiliations:
            affs = tuple(
                AffiliationRecord(str(jid), aff.value, room.reserved_nicks.get(jid))
                for jid, aff in room.affiliations.items()
            )
        return RoomRecord(
            str(room.jid), room.config.to_dict(), room.subject, room.subject_nick, room.created_at, affs
        )

    def persist(self, room: Room, *, with_affiliations: bool = False) -> None:
        if self.writer is not None and room.config.persistent and not room.locked:
            kind = "room_full" if with_affiliations else "room"
            self.writer.put(kind, self.record(room, with_affiliations=with_affiliations))

    def persist_affiliation(self, room: Room, bare: JID, reason: str | None = None) -> None:
        if self.writer is not None and room.config.persistent and not room.locked:
            aff = room.affiliation(bare)
            item = AffiliationRecord(str(bare), aff.value, room.reserved_nicks.get(bare), reason)
            self.writer.put("affiliation", (str(room.jid), item))

    def forget(self, room: Room) -> None:
        """Remove the room from memory and (if it was stored) from the database."""
        self.rooms.pop(room.jid, None)
        for occupant in room.occupants.values():
            for full in occupant.sessions:
                self.unindex(full, room.jid)
        if self.writer is not None:
            self.writer.put("delete", str(room.jid))

    def index(self, full: JID, room: JID) -> None:
        self.joined.setdefault(full, set()).add(room)

    def unindex(self, full: JID, room: JID) -> None:
        rooms = self.joined.get(full)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.joined[full]

    # --- sessions going away ----------------------------------------------------------------------
    async def session_ended(self, full: JID, status: str | None = None) -> None:
        for room_jid in list(self.joined.get(full, ())):
            room = self.rooms.get(room_jid)
            if room is not None:
                presence.leave(self, room, full, status)
        self.joined.pop(full, None)

    # --- iq ---------------------------------------------------------------------------------------
    async def _service_stanza(self, stanza: Stanza) -> None:
        if stanza.kind != "iq" or stanza.type not in ("get", "set"):
            if stanza.kind == "message" and stanza.type not in ("error", "groupchat"):
                raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
            return
        payload = stanza.payload
        tag = payload.tag if payload is not None else ""
        if (
            stanza.type == "get"
            and tag == DISCO_INFO_QUERY
            and payload is not None
            and not payload.get("node")
        ):
            query = Element(DISCO_INFO_QUERY)
            query.add(
                f"{{{ns.DISCO_INFO}}}identity",
                {"category": "conference", "type": "text", "name": self.options.name},
            )
            for var in (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.MUC, ns.PING):
                query.add(f"{{{ns.DISCO_INFO}}}feature", {"var": var})
            await self.reply(stanza, query)
        elif stanza.type == "get" and tag == DISCO_ITEMS_QUERY:
            query = Element(DISCO_ITEMS_QUERY)
            for room in sorted(self.rooms.values(), key=lambda r: r.jid_str):
                if room.config.public and not room.locked:
                    query.add(
                        f"{{{ns.DISCO_ITEMS}}}item",
                        {"jid": room.jid_str, "name": room.config.name or room.jid.local or ""},
                    )
            await self.reply(stanza, query)
        elif stanza.type == "get" and tag == PING:
            await self.reply(stanza)
        else:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)

    async def _room_iq(self, room: Room | None, stanza: Stanza) -> None:
        if stanza.type not in ("get", "set"):
            return
        sender = stanza.from_
        assert sender is not None
        payload = stanza.payload
        if payload is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        tag = payload.tag
        if room is None or (room.locked and self.affiliation(room, sender.bare) is not Affiliation.OWNER):
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such room")
        if tag == MUC_ADMIN_QUERY:
            await moderation.on_admin(self, room, stanza, payload)
        elif tag == MUC_OWNER_QUERY:
            await moderation.on_owner(self, room, stanza, payload)
        elif stanza.type == "get" and tag == DISCO_INFO_QUERY:
            await self.reply(stanza, self._room_info(room, sender, payload.get("node")))
        elif stanza.type == "get" and tag == DISCO_ITEMS_QUERY:
            await self.reply(stanza, self._room_items(room, sender))
        elif stanza.type == "get" and tag == PING:
            await self.reply(stanza)
        else:
            raise StanzaError(StanzaCondition.FEATURE_NOT_IMPLEMENTED)

    def _room_info(self, room: Room, sender: JID, node: str | None) -> Element:
        query = Element(DISCO_INFO_QUERY)
        identity = f"{{{ns.DISCO_INFO}}}identity"
        feature = f"{{{ns.DISCO_INFO}}}feature"
        if node == ROOMUSER_NODE:  # XEP-0045 7.12: the requester's reserved nickname
            query.attrs["node"] = node
            nick = room.reserved_nicks.get(sender.bare)
            if nick:
                query.add(identity, {"category": "conference", "type": "text", "name": nick})
            return query
        if node:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        c = room.config
        query.add(
            identity, {"category": "conference", "type": "text", "name": c.name or room.jid.local or ""}
        )
        features = [
            ns.MUC,
            ns.DISCO_INFO,
            ns.DISCO_ITEMS,
            "muc_membersonly" if c.members_only else "muc_open",
            "muc_nonanonymous" if c.non_anonymous else "muc_semianonymous",
            "muc_persistent" if c.persistent else "muc_temporary",
            "muc_public" if c.public else "muc_hidden",
            "muc_passwordprotected" if c.password else "muc_unsecured",
            "muc_moderated" if c.moderated else "muc_unmoderated",
            ns.SID,
        ]
        for var in features:
            query.add(feature, {"var": var})
        insider = sender in room.by_session or rank(self.affiliation(room, sender.bare)) >= rank(
            Affiliation.MEMBER
        )
        if insider or not c.members_only:
            query.append(roominfo_form(c, len(room.occupants), room.subject if insider else None))
        return query

    def _room_items(self, room: Room, sender: JID) -> Element:
        """The occupants' room JIDs, for occupants only (participants are protected from outsiders)."""
        query = Element(DISCO_ITEMS_QUERY)
        if sender in room.by_session:
            for nick in room.occupants:
                query.add(f"{{{ns.DISCO_ITEMS}}}item", {"jid": f"{room.jid_str}/{nick}"})
        return query

    async def _occupant_iq(self, room: Room | None, stanza: Stanza) -> None:
        """iq to room/nick: self-ping (XEP-0410) is answered; other iqs go to the occupant's first session."""
        sender, to = stanza.from_, stanza.to
        assert sender is not None and to is not None and to.resource is not None
        if room is None:
            if stanza.type in ("get", "set"):
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
            return
        occupant = room.by_session.get(sender)
        if occupant is None:
            if stanza.type in ("get", "set"):
                raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "only occupants may address occupants")
            return
        target = room.occupants.get(to.resource)
        if target is None:
            if stanza.type in ("get", "set"):
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
            return
        payload = stanza.payload
        if target is occupant and stanza.type == "get" and payload is not None and payload.tag == PING:
            await self.reply(stanza)
            return
        el = stanza.el
        attrs = {k: v for k, v in el.attrs.items() if k not in ("to", "from")}
        attrs["from"] = f"{room.jid_str}/{occupant.nick}"
        forwarded = Element(el.tag, attrs, el.children)
        full = target.jid
        self.deliver(forwarded, full, target.sessions[full])
