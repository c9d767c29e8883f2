"""Moderation and ownership (XEP-0045 8 - 10): muc#admin role and affiliation changes and lists,
muc#owner configuration (instant and reserved rooms), destruction.

A muc#admin set is checked item by item before anything changes: one refused item refuses the whole
request. Admins and owners act as moderators even while they are not in the room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str
from mbeon_chat.xmpp.stanza import Stanza

from . import presence
from .config_form import FORM, config_form, parse_config
from .room import (
    Affiliation,
    Occupant,
    Role,
    Room,
    RoomConfig,
    affiliation_change_error,
    can_list,
    default_role,
    rank,
    role_change_error,
    sees_real_jids,
)
from .stanzas import (
    ADMIN_ITEM,
    ADMIN_REASON,
    MUC_ADMIN_QUERY,
    MUC_OWNER_QUERY,
    OWNER_DESTROY,
    OWNER_REASON,
    USER_DESTROY,
    USER_ITEM,
    USER_REASON,
    item_element,
    status_message,
    user_x,
)
from .stanzas import presence as presence_el

if TYPE_CHECKING:
    from .service import MucService


@dataclass(slots=True)
class _RoleChange:
    target: Occupant
    role: Role
    reason: str | None


@dataclass(slots=True)
class _AffiliationChange:
    jid: JID
    affiliation: Affiliation
    nick: str | None
    reason: str | None


def _actor(svc: MucService, room: Room, sender: JID) -> tuple[Occupant | None, Role, Affiliation]:
    occupant = room.by_session.get(sender)
    affiliation = svc.affiliation(room, sender.bare)
    role = occupant.role if occupant is not None else Role.NONE
    if rank(affiliation) >= rank(Affiliation.ADMIN):
        role = Role.MODERATOR
    return occupant, role, affiliation


async def on_admin(svc: MucService, room: Room, stanza: Stanza, query: Element) -> None:
    sender = stanza.from_
    assert sender is not None
    occupant, role, affiliation = _actor(svc, room, sender)
    items = query.findall(ADMIN_ITEM)
    if not items:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "an item is needed")
    if stanza.type == "get":
        await svc.reply(stanza, _list(room, items[0], role, affiliation))
        return
    changes = _plan(svc, room, items, occupant, role, affiliation)
    actor = occupant.nick if occupant is not None else None
    for change in changes:
        if isinstance(change, _RoleChange):
            _apply_role(svc, room, change, actor)
        else:
            _apply_affiliation(svc, room, change, actor)
    presence.forget_if_empty(svc, room)
    await svc.reply(stanza)


def _list(room: Room, item: Element, role: Role, affiliation: Affiliation) -> Element:
    """XEP-0045 8.5, 9.5, 9.8, 10.5: an affiliation list or the occupants with a role."""
    query = Element(MUC_ADMIN_QUERY)
    if "affiliation" in item.attrs:
        kind = item.attrs["affiliation"]
        if kind not in ("owner", "admin", "member", "outcast"):
            raise StanzaError(StanzaCondition.BAD_REQUEST, f"cannot list affiliation {kind!r}")
        if not can_list(kind, role, affiliation, room.config):
            raise StanzaError(StanzaCondition.FORBIDDEN)
        for jid in sorted(room.with_affiliation(Affiliation(kind)), key=str):
            query.append(
                item_element(ADMIN_ITEM, kind, None, jid=str(jid), nick=room.reserved_nicks.get(jid))
            )
        return query
    kind = item.attrs.get("role", "")
    if kind not in ("moderator", "participant", "visitor"):
        raise StanzaError(StanzaCondition.BAD_REQUEST, "list an affiliation or a role")
    if not can_list(kind, role, affiliation, room.config):
        raise StanzaError(StanzaCondition.FORBIDDEN)
    with_jid = sees_real_jids(role, room.config)
    for occ in room.occupants.values():
        if occ.role.value == kind:
            real = str(occ.jid) if with_jid else None
            query.append(item_element(ADMIN_ITEM, occ.affiliation, occ.role, jid=real, nick=occ.nick))
    return query


def _plan(
    svc: MucService,
    room: Room,
    items: list[Element],
    actor: Occupant | None,
    role: Role,
    affiliation: Affiliation,
) -> list[_RoleChange | _AffiliationChange]:
    """Check every item of a muc#admin set; raise the first refusal."""
    changes: list[_RoleChange | _AffiliationChange] = []
    affiliations = dict(room.affiliations)
    for item in items:
        nick = item.get("nick")
        reason = item.findtext(ADMIN_REASON)
        if "affiliation" in item.attrs:
            try:
                new_aff = Affiliation(item.attrs["affiliation"])
            except ValueError:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "unknown affiliation") from None
            if item.get("jid"):
                try:
                    jid = jid_from_str(item.attrs["jid"]).bare
                except InvalidJID:
                    raise StanzaError(StanzaCondition.JID_MALFORMED) from None
            elif nick and nick in room.occupants:
                jid, nick = room.occupants[nick].bare, None
            else:
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND if nick else StanzaCondition.BAD_REQUEST)
            current = affiliations.get(jid, Affiliation.NONE)
            affiliations[jid] = new_aff
            owners = sum(1 for a in affiliations.values() if a is Affiliation.OWNER)
            error = affiliation_change_error(affiliation, current, new_aff, owners_after=owners)
            if error is not None:
                raise StanzaError(error, f"you may not make {jid} {new_aff}")
            changes.append(_AffiliationChange(jid, new_aff, nick, reason))
        elif "role" in item.attrs:
            try:
                new_role = Role(item.attrs["role"])
            except ValueError:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "unknown role") from None
            if not nick:
                raise StanzaError(StanzaCondition.BAD_REQUEST, "a role change names the occupant's nick")
            target = room.occupants.get(nick)
            if target is None:
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
            error = role_change_error(
                role, affiliation, target.role, target.affiliation, new_role, is_self=target is actor
            )
            if error is not None:
                raise StanzaError(error, f"you may not make {nick} {new_role}")
            changes.append(_RoleChange(target, new_role, reason))
        else:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "an item carries a role or an affiliation")
    return changes


def _apply_role(svc: MucService, room: Room, change: _RoleChange, actor: str | None) -> None:
    target = change.target
    if room.occupants.get(target.nick) is not target or target.role is change.role:
        return
    if change.role is Role.NONE:
        presence.remove(svc, room, target, (307,), actor=actor, reason=change.reason)
    else:
        target.role = change.role
        presence.refresh(svc, room, target, actor=actor, reason=change.reason)


def _apply_affiliation(svc: MucService, room: Room, change: _AffiliationChange, actor: str | None) -> None:
    room.set_affiliation(change.jid, change.affiliation, change.nick)
    svc.persist_affiliation(room, change.jid, change.reason)
    effective = svc.affiliation(room, change.jid)
    for occ in [o for o in room.occupants.values() if o.bare == change.jid]:
        occ.affiliation = effective
        if effective is Affiliation.OUTCAST:
            presence.remove(svc, room, occ, (301,), actor=actor, reason=change.reason)
        elif room.config.members_only and rank(effective) < rank(Affiliation.MEMBER):
            presence.remove(svc, room, occ, (321,), actor=actor, reason=change.reason)
        else:
            occ.role = default_role(effective, room.config)
            presence.refresh(svc, room, occ, actor=actor, reason=change.reason)


# --- owners ----------------------------------------------------------------------------------------
async def on_owner(svc: MucService, room: Room, stanza: Stanza, query: Element) -> None:
    sender = stanza.from_
    assert sender is not None
    if svc.affiliation(room, sender.bare) is not Affiliation.OWNER:
        raise StanzaError(StanzaCondition.FORBIDDEN, "only owners configure a room")
    if stanza.type == "get":
        result = Element(MUC_OWNER_QUERY)
        result.append(config_form(room.config, room.config.name or room.jid_str))
        await svc.reply(stanza, result)
        return
    destroy_el = query.find(OWNER_DESTROY)
    if destroy_el is not None:
        destroy(svc, room, destroy_el.get("jid"), destroy_el.findtext(OWNER_REASON))
        await svc.reply(stanza)
        return
    form = query.find(FORM)
    if form is None:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "submit a configuration form or destroy the room")
    kind = form.get("type")
    if kind == "cancel":
        if room.locked:  # XEP-0045 10.1.3: cancelling the initial configuration destroys the room
            destroy(svc, room, None, None)
        await svc.reply(stanza)
        return
    if kind != "submit":
        raise StanzaError(StanzaCondition.BAD_REQUEST, "the form type must be submit or cancel")
    apply_config(svc, room, parse_config(form, room.config, history_max=svc.options.history_max))
    await svc.reply(stanza)


def apply_config(svc: MucService, room: Room, new: RoomConfig) -> None:
    old, was_locked = room.config, room.locked
    room.config, room.locked = new, False
    if was_locked:
        svc.persist(room, with_affiliations=True)
        return
    codes = [104]
    if old.logging != new.logging:
        codes.append(170 if new.logging else 171)
    if old.whois != new.whois:
        codes.append(172 if new.non_anonymous else 173)
    svc.broadcast(room, status_message(room.jid_str, codes))
    if new.members_only and not old.members_only:
        for occ in list(room.occupants.values()):
            if rank(occ.affiliation) < rank(Affiliation.MEMBER):
                presence.remove(svc, room, occ, (322,))
    if old.persistent and not new.persistent:
        if svc.writer is not None:
            svc.writer.put("delete", str(room.jid))
        presence.forget_if_empty(svc, room)
    else:
        svc.persist(room, with_affiliations=not old.persistent)


def destroy(svc: MucService, room: Room, alternate: str | None, reason: str | None) -> None:
    """XEP-0045 10.9: every occupant gets unavailable presence with the destroy notice, then the room goes."""
    notice = Element(USER_DESTROY, {"jid": alternate} if alternate else {})
    if reason:
        notice.add(USER_REASON, None, reason)
    item = item_element(USER_ITEM, "none", "none")
    for occ in room.occupants.values():
        el = presence_el(f"{room.jid_str}/{occ.nick}", [], user_x(item, (), (notice,)), "unavailable")
        svc.send_to(occ, el)
    svc.forget(room)


def shutdown(svc: MucService) -> None:
    """The service goes away (unloaded, not reloaded): occupants get unavailable with status 332."""
    for room in list(svc.rooms.values()):
        for occ in room.occupants.values():
            item = item_element(USER_ITEM, occ.affiliation, "none")
            el = presence_el(f"{room.jid_str}/{occ.nick}", [], user_x(item, (110, 332)), "unavailable")
            svc.send_to(occ, el)
    svc.joined.clear()
