"""Occupancy (XEP-0045 7.1 - 7.6, 7.14, 10.1): entering (and creating) a room, presence updates,
nickname changes, leaving, and removing occupants (kick, ban, affiliation changes, destruction).

Entering sends, in this order (7.2.3 - 7.2.15): the other occupants' presence, the newcomer's presence to
everybody with the self-presence (status 110 ...) last, the history, the subject.

Multi-session nick sharing: a second session of the same user entering with the same nickname joins the
existing occupant; it receives the room state, nobody else sees a change. It leaves silently too, unless it
is the occupant's last session.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import STATUS, Stanza

from .history import HISTORY, delayed_copy, select_history
from .room import Affiliation, Occupant, Role, Room, default_role, join_error, sees_real_jids
from .stanzas import (
    MUC_JOIN,
    occupant_presence,
    presence_payload,
    subject_message,
    unavailable_payload,
)

if TYPE_CHECKING:
    from .service import MucService

_PASSWORD = "{http://jabber.org/protocol/muc}password"


async def on_presence(svc: MucService, room: Room | None, stanza: Stanza) -> None:
    sender, to = stanza.from_, stanza.to
    assert sender is not None and to is not None
    kind = stanza.type
    if kind in ("unavailable", "error"):
        # An error bounced by an occupant's client ends its occupancy like leaving (XEP-0045 18.1).
        if room is not None and sender in room.by_session:
            leave(svc, room, sender, stanza.el.findtext(STATUS) if kind == "unavailable" else None)
        return
    if kind != "available":
        return  # subscriptions and probes mean nothing to a room
    nick = to.resource
    if nick is None:
        raise StanzaError(StanzaCondition.JID_MALFORMED, "enter a room as room@service/nickname")
    if room is not None:
        occupant = room.by_session.get(sender)
        if occupant is not None:
            if occupant.nick != nick:
                change_nick(svc, room, occupant, nick, stanza)
            elif stanza.el.find(MUC_JOIN) is not None:
                attach(svc, room, occupant, sender, stanza.el.find(MUC_JOIN))  # a client re-entering
            else:
                occupant.presence = presence_payload(stanza.el.children)
                svc.broadcast_presence(room, occupant, self_codes=(110,))
            return
    join(svc, room, stanza, nick)


def join(svc: MucService, room: Room | None, stanza: Stanza, nick: str) -> None:
    sender, to = stanza.from_, stanza.to
    assert sender is not None and to is not None
    bare = sender.bare
    created = False
    if room is None:
        if not svc.may_create(bare):
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "only counsellors may create rooms")
        room = svc.new_room(to.bare, bare)
        created = True
    elif room.locked and svc.affiliation(room, bare) is not Affiliation.OWNER:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "the room is not configured yet")
    x = stanza.el.find(MUC_JOIN)
    existing = room.occupants.get(nick)
    if existing is not None and existing.bare == bare:
        attach(svc, room, existing, sender, x)
        return
    affiliation = svc.affiliation(room, bare)
    holder = room.nick_holder(nick)
    error = join_error(
        room.config,
        affiliation,
        password=x.findtext(_PASSWORD) if x is not None else None,
        nick_taken=holder is not None and holder != bare,
        occupants=len(room.occupants),
        service_max=svc.options.max_occupants,
    )
    if error is not None:
        raise StanzaError(error)
    occupant = Occupant(nick, bare, default_role(affiliation, room.config), affiliation)
    occupant.presence = presence_payload(stanza.el.children)
    send_occupants(svc, room, sender, occupant.role)
    room.add_session(occupant, sender)
    svc.index(sender, room.jid)
    codes = [110]
    if room.config.non_anonymous:
        codes.append(100)
    if room.config.logging:
        codes.append(170)
    if created:
        codes.append(201)
    if (stanza.el.get("to") or "").partition("/")[2] != nick:
        codes.append(210)  # the nickname was normalised (resourceprep)
    svc.broadcast_presence(room, occupant, self_codes=tuple(codes))
    send_history(svc, room, sender, x)


def attach(svc: MucService, room: Room, occupant: Occupant, full: JID, x: Element | None) -> None:
    """Another session of an occupant enters with the same nickname (or a session re-enters)."""
    send_occupants(svc, room, full, occupant.role, skip=occupant)
    room.add_session(occupant, full)
    svc.index(full, room.jid)
    codes = [110, 100] if room.config.non_anonymous else [110]
    el = occupant_presence(
        room.jid_str,
        occupant.nick,
        occupant.affiliation,
        occupant.role,
        occupant.presence,
        jid=str(occupant.jid),
        codes=codes,
    )
    svc.deliver(el, full, occupant.sessions[full])
    send_history(svc, room, full, x)


def send_occupants(
    svc: MucService, room: Room, full: JID, viewer: Role, skip: Occupant | None = None
) -> None:
    to = str(full)
    with_jid = sees_real_jids(viewer, room.config)
    for other in room.occupants.values():
        if other is skip:
            continue
        el = occupant_presence(
            room.jid_str,
            other.nick,
            other.affiliation,
            other.role,
            other.presence,
            jid=str(other.jid) if with_jid else None,
        )
        svc.deliver(el, full, to)


def send_history(svc: MucService, room: Room, full: JID, x: Element | None) -> None:
    """The history (with delay stamps from the room), then the subject, which ends the entering."""
    to = str(full)
    request = x.find(HISTORY) if x is not None else None
    entries = select_history(
        room.history,
        request,
        limit=svc.options.history_max,
        default=room.config.history_length,
        now_ms=time.time_ns() // 1_000_000,
    )
    for entry in entries:
        svc.deliver(delayed_copy(entry, room.jid_str), full, to)
    svc.deliver(subject_message(room.jid_str, room.subject_nick, room.subject), full, to)


def change_nick(svc: MucService, room: Room, occupant: Occupant, nick: str, stanza: Stanza) -> None:
    """XEP-0045 7.6: unavailable with 303 and the new nick, then the presence under the new nick."""
    holder = room.nick_holder(nick)
    if nick in room.occupants or (holder is not None and holder != occupant.bare):
        raise StanzaError(StanzaCondition.CONFLICT, "that nickname is taken")
    svc.broadcast_presence(
        room, occupant, type_="unavailable", payload=[], codes=(303,), self_codes=(110,), nick=nick
    )
    room.rename(occupant, nick)
    occupant.presence = presence_payload(stanza.el.children)
    svc.broadcast_presence(room, occupant, self_codes=(110,))


def leave(svc: MucService, room: Room, full: JID, status: str | None) -> None:
    occupant = room.by_session.get(full)
    if occupant is None:
        return
    svc.unindex(full, room.jid)
    if len(occupant.sessions) > 1:  # one of several sessions sharing the nickname
        el = occupant_presence(
            room.jid_str,
            occupant.nick,
            occupant.affiliation,
            Role.NONE,
            unavailable_payload(status),
            jid=str(full),
            codes=(110,),
            type_="unavailable",
        )
        svc.deliver(el, full, occupant.sessions[full])
        room.remove_session(full)
        return
    occupant.role = Role.NONE
    svc.broadcast_presence(
        room, occupant, type_="unavailable", payload=unavailable_payload(status), self_codes=(110,)
    )
    room.remove_session(full)
    forget_if_empty(svc, room)


def remove(
    svc: MucService,
    room: Room,
    occupant: Occupant,
    codes: tuple[int, ...],
    *,
    actor: str | None = None,
    reason: str | None = None,
    extra: tuple[Element, ...] = (),
) -> None:
    """Take an occupant out of the room (kicked 307, banned 301, affiliation 321, members-only 322 ...)."""
    occupant.role = Role.NONE
    svc.broadcast_presence(
        room,
        occupant,
        type_="unavailable",
        payload=[],
        codes=codes,
        self_codes=(110,),
        actor=actor,
        reason=reason,
        extra=extra,
    )
    room.remove_occupant(occupant)
    for full in occupant.sessions:
        svc.unindex(full, room.jid)


def forget_if_empty(svc: MucService, room: Room) -> None:
    """A temporary room (or one never configured) ends with its last occupant (XEP-0045 10.1.3)."""
    if not room.occupants and (room.locked or not room.config.persistent):
        svc.forget(room)


def refresh(
    svc: MucService, room: Room, occupant: Occupant, *, reason: str | None = None, actor: str | None = None
) -> None:
    """Announce a changed role or affiliation of an occupant who stays."""
    svc.broadcast_presence(room, occupant, self_codes=(110,), actor=actor, reason=reason)
