"""Messages in a room (XEP-0045 7.4 - 7.5, 7.8, 8.1, 8.6): groupchat fan-out and history, subject
changes, private messages between occupants, mediated invitations and declines, voice requests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mbeon_chat.storage.ids import new_id
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str
from mbeon_chat.xmpp.stanza import BODY, MESSAGE, SUBJECT, Stanza

from . import presence
from .config_form import FORM, VOICE_REQUEST, form_values, parse_bool, voice_request_form
from .history import HistoryEntry
from .room import (
    Affiliation,
    Role,
    Room,
    groupchat_error,
    invite_error,
    pm_error,
    rank,
    role_change_error,
    subject_error,
)
from .stanzas import (
    MUC_USER,
    STANZA_ID,
    USER_DECLINE,
    USER_INVITE,
    USER_PASSWORD,
    USER_REASON,
    strip_for_room,
    subject_message,
)

if TYPE_CHECKING:
    from .service import MucService


async def on_message(svc: MucService, room: Room | None, stanza: Stanza) -> None:
    if stanza.type == "error":
        return  # a bounce from an occupant's client: nothing to answer
    to = stanza.to
    assert to is not None
    if room is None or (room.locked and stanza.from_ not in room.by_session):
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such room")
    if to.resource is not None:
        private_message(svc, room, stanza, to.resource)
    elif stanza.type == "groupchat":
        groupchat(svc, room, stanza)
    else:
        await to_room(svc, room, stanza)


def groupchat(svc: MucService, room: Room, stanza: Stanza) -> None:
    """Reflect an occupant's message to every occupant, in one order for all (XEP-0045 7.4)."""
    occupant = room.by_session.get(stanza.from_)  # type: ignore[arg-type]
    el = stanza.el
    subject = el.find(SUBJECT)
    has_body = el.find(BODY) is not None
    if subject is not None and not has_body:
        error = subject_error(occupant, room.config)
        if error is not None:
            raise StanzaError(error, "you may not change the subject")
        assert occupant is not None
        room.subject, room.subject_nick = subject.text, occupant.nick
        svc.broadcast(room, subject_message(room.jid_str, occupant.nick, room.subject))
        svc.persist(room)
        return
    error = groupchat_error(occupant, room.config)
    if error is not None:
        raise StanzaError(error, "you are not an occupant" if occupant is None else "you have no voice here")
    assert occupant is not None
    stanza_id = new_id()
    children = strip_for_room(el.children, room.jid_str)
    children.append(Element(STANZA_ID, {"id": stanza_id, "by": room.jid_str}))
    attrs = {"from": f"{room.jid_str}/{occupant.nick}", "type": "groupchat"}
    if stanza.id is not None:
        attrs["id"] = stanza.id
    out = Element(MESSAGE, attrs, children)
    svc.broadcast(room, out)
    if has_body:
        entry = HistoryEntry(stanza_id, room.jid_str, occupant.nick, time.time_ns() // 1_000_000, out)
        room.history.append(entry)
        if svc.writer is not None and room.config.persistent:
            svc.writer.put("history", entry)


def private_message(svc: MucService, room: Room, stanza: Stanza, nick: str) -> None:
    """XEP-0045 7.5: to room/nick, delivered from the sender's room JID with an empty muc#user x."""
    if stanza.type == "groupchat":
        raise StanzaError(StanzaCondition.BAD_REQUEST, "private messages are not of type groupchat")
    sender = room.by_session.get(stanza.from_)  # type: ignore[arg-type]
    error = pm_error(sender, room.config)
    if error is not None:
        raise StanzaError(error, "private messages are not allowed here")
    assert sender is not None
    target = room.occupants.get(nick)
    if target is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
    el = stanza.el
    attrs = {k: v for k, v in el.attrs.items() if k not in ("to", "from")}
    attrs["from"] = f"{room.jid_str}/{sender.nick}"
    children = strip_for_room(el.children, room.jid_str)
    children.append(Element(MUC_USER))
    svc.send_to(target, Element(MESSAGE, attrs, children))


async def to_room(svc: MucService, room: Room, stanza: Stanza) -> None:
    """Non-groupchat messages to the room: invitations, declines, voice requests and their approval."""
    el = stanza.el
    x = el.find(MUC_USER)
    if x is not None:
        invites = x.findall(USER_INVITE)
        if invites:
            await invite(svc, room, stanza, invites)
            return
        decline_el = x.find(USER_DECLINE)
        if decline_el is not None:
            await decline(svc, room, stanza, decline_el)
            return
    form = el.find(FORM)
    if form is not None:
        values = form_values(form)
        if values.get("FORM_TYPE") == [VOICE_REQUEST]:
            if "muc#request_allow" in values:
                approve_voice(svc, room, stanza, values)
            else:
                request_voice(svc, room, stanza)
            return
    if el.find(BODY) is not None:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "send groupchat messages to the room")


def _jid(value: str | None) -> JID:
    if not value:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "an address is missing")
    try:
        return jid_from_str(value)
    except InvalidJID:
        raise StanzaError(StanzaCondition.JID_MALFORMED) from None


async def invite(svc: MucService, room: Room, stanza: Stanza, invites: list[Element]) -> None:
    """XEP-0045 7.8.2. In a members-only room an admin's or owner's invitation makes the invitee a member."""
    sender = stanza.from_
    assert sender is not None
    occupant = room.by_session.get(sender)
    affiliation = svc.affiliation(room, sender.bare)
    error = invite_error(occupant, affiliation, room.config)
    if error is not None:
        raise StanzaError(error, "you may not invite to this room")
    for inv in invites:
        invitee = _jid(inv.get("to"))
        current = room.affiliation(invitee.bare)
        if current is Affiliation.OUTCAST:
            raise StanzaError(StanzaCondition.FORBIDDEN, f"{invitee.bare} is banned from this room")
        admin = rank(affiliation) >= rank(Affiliation.ADMIN)
        if room.config.members_only and current is Affiliation.NONE and admin:
            room.set_affiliation(invitee.bare, Affiliation.MEMBER)
            svc.persist_affiliation(room, invitee.bare)
        x = Element(MUC_USER)
        forwarded = x.add(USER_INVITE, {"from": str(sender.bare)})
        reason = inv.findtext(USER_REASON)
        if reason:
            forwarded.add(USER_REASON, None, reason)
        if room.config.password:
            x.add(USER_PASSWORD, None, room.config.password)
        body = f"{sender.bare} invites you to the room {room.jid_str}" + (f": {reason}" if reason else "")
        msg = Element(MESSAGE, {"from": room.jid_str, "to": str(invitee)})
        msg.add(BODY, None, body)
        msg.append(x)
        await svc.api.send(msg)


async def decline(svc: MucService, room: Room, stanza: Stanza, decline_el: Element) -> None:
    """XEP-0045 7.8.2: forward a decline to the inviter (who must belong to the room)."""
    sender = stanza.from_
    assert sender is not None
    target = _jid(decline_el.get("to"))
    if target.bare == room.jid and target.resource is not None:  # addressed by room nickname
        occupant = room.occupants.get(target.resource)
        if occupant is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        target = occupant.bare
    if room.occupant_of(target.bare) is None and room.affiliation(target.bare) in (
        Affiliation.NONE,
        Affiliation.OUTCAST,
    ):
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "that address did not invite you")
    x = Element(MUC_USER)
    forwarded = x.add(USER_DECLINE, {"from": str(sender.bare)})
    reason = decline_el.findtext(USER_REASON)
    if reason:
        forwarded.add(USER_REASON, None, reason)
    await svc.api.send(Element(MESSAGE, {"from": room.jid_str, "to": str(target)}, [x]))


def request_voice(svc: MucService, room: Room, stanza: Stanza) -> None:
    """XEP-0045 8.6: a visitor asks for voice; every moderator gets the approval form."""
    occupant = room.by_session.get(stanza.from_)  # type: ignore[arg-type]
    if occupant is None:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not an occupant")
    if occupant.role is not Role.VISITOR:
        return
    if not room.config.allow_voice_requests:
        raise StanzaError(StanzaCondition.FORBIDDEN, "voice requests are off in this room")
    msg = Element(MESSAGE, {"from": room.jid_str}, [voice_request_form(str(occupant.bare), occupant.nick)])
    for moderator in room.occupants.values():
        if moderator.role is Role.MODERATOR:
            svc.send_to(moderator, msg)


def approve_voice(svc: MucService, room: Room, stanza: Stanza, values: dict[str, list[str]]) -> None:
    """A moderator submits the voice request form with muc#request_allow true."""
    moderator = room.by_session.get(stanza.from_)  # type: ignore[arg-type]
    if moderator is None:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not an occupant")
    if not parse_bool(values.get("muc#request_allow")):
        return
    nick = (values.get("muc#roomnick") or [""])[0]
    target = room.occupants.get(nick)
    if target is None:
        raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
    error = role_change_error(
        moderator.role, moderator.affiliation, target.role, target.affiliation, Role.PARTICIPANT
    )
    if error is not None:
        raise StanzaError(error)
    if target.role is Role.VISITOR:
        target.role = Role.PARTICIPANT
        presence.refresh(svc, room, target, actor=moderator.nick)
