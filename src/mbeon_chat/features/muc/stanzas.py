"""Element builders for XEP-0045: the muc#user extension with items and status codes, room presence,
room messages. Pure module.

Status codes used (XEP-0045 15.6): 100 non-anonymous room, 104 configuration changed, 110 self-presence,
170/171 logging on/off, 172/173 non-anonymous/semi-anonymous now, 201 room created, 210 nick modified,
301 banned, 303 nick changed, 307 kicked, 321 removed (affiliation change), 322 removed (now members-only),
332 service shutting down.
"""

from __future__ import annotations

from collections.abc import Iterable

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.stanza import BODY, MESSAGE, PRESENCE, STATUS, SUBJECT

__all__ = [
    "MUC_ADMIN_QUERY",
    "MUC_JOIN",
    "MUC_OWNER_QUERY",
    "MUC_USER",
    "item_element",
    "message",
    "presence",
    "user_x",
]

MUC_JOIN = f"{{{ns.MUC}}}x"
MUC_USER = f"{{{ns.MUC_USER}}}x"
MUC_ADMIN_QUERY = f"{{{ns.MUC_ADMIN}}}query"
MUC_OWNER_QUERY = f"{{{ns.MUC_OWNER}}}query"
USER_ITEM = f"{{{ns.MUC_USER}}}item"
USER_STATUS = f"{{{ns.MUC_USER}}}status"
USER_ACTOR = f"{{{ns.MUC_USER}}}actor"
USER_REASON = f"{{{ns.MUC_USER}}}reason"
USER_INVITE = f"{{{ns.MUC_USER}}}invite"
USER_DECLINE = f"{{{ns.MUC_USER}}}decline"
USER_PASSWORD = f"{{{ns.MUC_USER}}}password"
USER_DESTROY = f"{{{ns.MUC_USER}}}destroy"
ADMIN_ITEM = f"{{{ns.MUC_ADMIN}}}item"
ADMIN_REASON = f"{{{ns.MUC_ADMIN}}}reason"
OWNER_DESTROY = f"{{{ns.MUC_OWNER}}}destroy"
OWNER_REASON = f"{{{ns.MUC_OWNER}}}reason"
OWNER_PASSWORD = f"{{{ns.MUC_OWNER}}}password"
STANZA_ID = f"{{{ns.SID}}}stanza-id"
ORIGIN_ID = f"{{{ns.SID}}}origin-id"
DISCO_INFO_QUERY = f"{{{ns.DISCO_INFO}}}query"
DISCO_ITEMS_QUERY = f"{{{ns.DISCO_ITEMS}}}query"
PING = f"{{{ns.PING}}}ping"


def item_element(
    tag: str,
    affiliation: str | None,
    role: str | None,
    *,
    jid: str | None = None,
    nick: str | None = None,
    actor_nick: str | None = None,
    reason: str | None = None,
) -> Element:
    attrs: dict[str, str] = {}
    if affiliation is not None:
        attrs["affiliation"] = affiliation
    if jid is not None:
        attrs["jid"] = jid
    if nick is not None:
        attrs["nick"] = nick
    if role is not None:
        attrs["role"] = role
    item = Element(tag, attrs)
    ns_ = tag[: tag.index("}") + 1]
    if actor_nick is not None:
        item.add(ns_ + "actor", {"nick": actor_nick})
    if reason:
        item.add(ns_ + "reason", None, reason)
    return item


def user_x(item: Element | None, codes: Iterable[int] = (), extra: Iterable[Element] = ()) -> Element:
    x = Element(MUC_USER)
    if item is not None:
        x.append(item)
    for code in codes:
        x.add(USER_STATUS, {"code": str(code)})
    for el in extra:
        x.append(el)
    return x


def presence(from_: str, payload: Iterable[Element | str], x: Element, type_: str | None = None) -> Element:
    attrs = {"from": from_}
    if type_ is not None:
        attrs["type"] = type_
    return Element(PRESENCE, attrs, [*payload, x])


def unavailable_payload(status: str | None) -> list[Element | str]:
    return [Element(STATUS, None, [status])] if status else []


def message(from_: str, type_: str, *children: Element, body: str | None = None) -> Element:
    el = Element(MESSAGE, {"from": from_, "type": type_})
    if body is not None:
        el.add(BODY, None, body)
    for child in children:
        el.append(child)
    return el


def subject_message(room: str, nick: str, subject: str) -> Element:
    """The subject as sent on entering and on change; from the room itself when nobody set it."""
    el = Element(MESSAGE, {"from": f"{room}/{nick}" if nick else room, "type": "groupchat"})
    el.add(SUBJECT, None, subject or None)
    return el


def status_message(room: str, codes: Iterable[int]) -> Element:
    """A message from the room carrying status codes only (e.g. 104 configuration changed)."""
    return message(room, "groupchat", user_x(None, codes))


def strip_for_room(children: list[Element | str], room: str) -> list[Element | str]:
    """The payload of an occupant's message without what only the room may say (muc#user, its stanza-id)."""
    out: list[Element | str] = []
    for child in children:
        if isinstance(child, Element) and (
            child.tag == MUC_USER or (child.tag == STANZA_ID and child.get("by") == room)
        ):
            continue
        out.append(child)
    return out


def presence_payload(children: list[Element | str]) -> list[Element | str]:
    """What of an occupant's presence the room repeats: everything but the MUC join/user extensions."""
    return [c for c in children if isinstance(c, Element) and c.tag not in (MUC_JOIN, MUC_USER)]


def occupant_presence(
    room_jid: str,
    nick: str,
    affiliation: str,
    role: str,
    payload: Iterable[Element | str],
    *,
    jid: str | None = None,
    codes: Iterable[int] = (),
    type_: str | None = None,
) -> Element:
    """One occupant's presence as the room shows it (XEP-0045 7.2.3)."""
    item = item_element(USER_ITEM, affiliation, role, jid=jid)
    return presence(f"{room_jid}/{nick}", payload, user_x(item, codes), type_)
