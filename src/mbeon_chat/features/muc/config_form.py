"""XEP-0004 data forms for XEP-0045: room configuration (muc#roomconfig, section 10.2 and 15.5.3),
room information (muc#roominfo, 15.5.4) and voice requests (muc#request, 8.6).

Pure module. ``parse_config`` rejects fields the room configuration form does not offer (the service
answers ``bad-request``) and values it cannot use (``not-acceptable``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError

from .room import ALLOW_PM, ROLE_NAMES, WHOIS, RoomConfig

__all__ = [
    "FORM",
    "ROOMCONFIG",
    "ROOMINFO",
    "VOICE_REQUEST",
    "build_form",
    "config_form",
    "form_values",
    "parse_config",
    "roominfo_form",
    "voice_request_form",
]

FORM = f"{{{ns.DATA_FORMS}}}x"
_FIELD = f"{{{ns.DATA_FORMS}}}field"
_VALUE = f"{{{ns.DATA_FORMS}}}value"
_OPTION = f"{{{ns.DATA_FORMS}}}option"
_TITLE = f"{{{ns.DATA_FORMS}}}title"
_INSTRUCTIONS = f"{{{ns.DATA_FORMS}}}instructions"

ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
VOICE_REQUEST = "http://jabber.org/protocol/muc#request"

Field = tuple[str, str, str | None, list[str], list[str]]  # var, type, label, values, options

_MAXUSERS_OPTIONS = ["10", "20", "30", "50", "100", "200", "none"]


def build_form(form_type: str, kind: str, fields: list[Field], title: str | None = None) -> Element:
    x = Element(FORM, {"type": kind})
    if title:
        x.add(_TITLE, None, title)
    x.append(_field("FORM_TYPE", "hidden", None, [form_type], []))
    for f in fields:
        x.append(_field(*f))
    return x


def _field(var: str, type_: str, label: str | None, values: list[str], options: list[str]) -> Element:
    el = Element(_FIELD, {"var": var, "type": type_})
    if label:
        el.attrs["label"] = label
    for option in options:
        el.add(_OPTION, {"label": option}).add(_VALUE, None, option)
    for value in values:
        el.add(_VALUE, None, value)
    return el


def form_values(x: Element) -> dict[str, list[str]]:
    """The submitted values by field name (FORM_TYPE included)."""
    out: dict[str, list[str]] = {}
    for f in x.findall(_FIELD):
        var = f.get("var")
        if var:
            out[var] = [v.text for v in f.findall(_VALUE)]
    return out


def _bool(value: str) -> bool:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _b(flag: bool) -> list[str]:
    return ["1" if flag else "0"]


def config_form(config: RoomConfig, room_title: str) -> Element:
    maxusers = str(config.max_users) if config.max_users else "none"
    options = _MAXUSERS_OPTIONS if maxusers in _MAXUSERS_OPTIONS else [*_MAXUSERS_OPTIONS, maxusers]
    fields: list[Field] = [
        ("muc#roomconfig_roomname", "text-single", "Name", [config.name], []),
        ("muc#roomconfig_roomdesc", "text-single", "Description", [config.description], []),
        (
            "muc#roomconfig_persistentroom",
            "boolean",
            "Keep the room when it is empty",
            _b(config.persistent),
            [],
        ),
        ("muc#roomconfig_publicroom", "boolean", "List the room publicly", _b(config.public), []),
        ("muc#roomconfig_membersonly", "boolean", "Only members may enter", _b(config.members_only), []),
        ("muc#roomconfig_moderatedroom", "boolean", "Only participants may speak", _b(config.moderated), []),
        (
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Require a password to enter",
            _b(config.password_protected),
            [],
        ),
        ("muc#roomconfig_roomsecret", "text-private", "Password", [config.password], []),
        ("muc#roomconfig_whois", "list-single", "Who may see real addresses", [config.whois], list(WHOIS)),
        ("muc#roomconfig_maxusers", "list-single", "Maximum number of occupants", [maxusers], options),
        (
            "muc#roomconfig_changesubject",
            "boolean",
            "Participants may change the subject",
            _b(config.change_subject),
            [],
        ),
        (
            "muc#roomconfig_allowinvites",
            "boolean",
            "Participants may invite others",
            _b(config.allow_invites),
            [],
        ),
        (
            "muc#roomconfig_allowpm",
            "list-single",
            "Who may send private messages",
            [config.allow_pm],
            list(ALLOW_PM),
        ),
        ("muc#roomconfig_enablelogging", "boolean", "Archive the room", _b(config.logging), []),
        ("muc#maxhistoryfetch", "text-single", "Messages sent on entering", [str(config.history_length)], []),
        (
            "muc#roomconfig_allowvoicerequests",
            "boolean",
            "Visitors may ask for voice",
            _b(config.allow_voice_requests),
            [],
        ),
        (
            "muc#roomconfig_getmemberlist",
            "list-multi",
            "Roles that may see the member list",
            list(config.get_member_list),
            list(ROLE_NAMES),
        ),
    ]
    return build_form(ROOMCONFIG, "form", fields, title=f"Configuration of {room_title}")


def parse_config(x: Element, current: RoomConfig, *, history_max: int) -> RoomConfig:
    """The configuration a submitted form asks for; absent fields keep their ``current`` value."""
    values = form_values(x)
    form_type = values.pop("FORM_TYPE", [ROOMCONFIG])
    if form_type and form_type[0] != ROOMCONFIG:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "not a muc#roomconfig form")
    changes: dict[str, Any] = {}
    password_flag: bool | None = None
    for var, vals in values.items():
        value = vals[0] if vals else ""
        try:
            if var == "muc#roomconfig_getmemberlist":
                bad = [v for v in vals if v not in ROLE_NAMES]
                if bad:
                    raise ValueError(f"unknown role {bad[0]!r}")
                changes["get_member_list"] = tuple(vals)
            elif var == "muc#roomconfig_passwordprotectedroom":
                password_flag = _bool(value)
            elif var in _SIMPLE:
                attr, convert = _SIMPLE[var]
                changes[attr] = convert(value)
            else:
                raise StanzaError(StanzaCondition.BAD_REQUEST, f"unknown configuration field {var!r}")
        except ValueError as exc:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, f"{var}: {exc}") from None
    new = dataclasses.replace(current, **changes)
    if password_flag is False:
        new.password = ""
    elif password_flag is True and not new.password:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "a password-protected room needs a password")
    if new.whois not in WHOIS:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, f"muc#roomconfig_whois: {new.whois!r}")
    if new.allow_pm not in ALLOW_PM:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, f"muc#roomconfig_allowpm: {new.allow_pm!r}")
    if not 0 <= new.history_length <= history_max:
        new.history_length = max(0, min(new.history_length, history_max))
    if new.max_users < 0:
        raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "muc#roomconfig_maxusers: negative")
    return new


def _maxusers(value: str) -> int:
    return 0 if value in ("", "none", "0") else int(value)


def _text(value: str) -> str:
    return value


_SIMPLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "muc#roomconfig_roomname": ("name", _text),
    "muc#roomconfig_roomdesc": ("description", _text),
    "muc#roomconfig_persistentroom": ("persistent", _bool),
    "muc#roomconfig_publicroom": ("public", _bool),
    "muc#roomconfig_membersonly": ("members_only", _bool),
    "muc#roomconfig_moderatedroom": ("moderated", _bool),
    "muc#roomconfig_roomsecret": ("password", _text),
    "muc#roomconfig_whois": ("whois", _text),
    "muc#roomconfig_maxusers": ("max_users", _maxusers),
    "muc#roomconfig_changesubject": ("change_subject", _bool),
    "muc#roomconfig_allowinvites": ("allow_invites", _bool),
    "muc#roomconfig_allowpm": ("allow_pm", _text),
    "muc#roomconfig_enablelogging": ("logging", _bool),
    "muc#maxhistoryfetch": ("history_length", int),
    "muc#roomconfig_allowvoicerequests": ("allow_voice_requests", _bool),
}


def roominfo_form(config: RoomConfig, occupants: int, subject: str | None) -> Element:
    """Extended room information for disco#info (XEP-0045 6.4); ``subject`` None hides it."""
    fields: list[Field] = [
        ("muc#roominfo_description", "text-single", "Description", [config.description], []),
        ("muc#roominfo_occupants", "text-single", "Number of occupants", [str(occupants)], []),
        ("muc#roomconfig_roomname", "text-single", "Name", [config.name], []),
        ("muc#roomconfig_changesubject", "boolean", None, _b(config.change_subject), []),
    ]
    if subject is not None:
        fields.append(("muc#roominfo_subject", "text-single", "Subject", [subject], []))
    return build_form(ROOMINFO, "result", fields)


def voice_request_form(real_jid: str, nick: str) -> Element:
    """The approval form sent to moderators (XEP-0045 8.6, example 92)."""
    fields: list[Field] = [
        ("muc#role", "list-single", "Requested role", ["participant"], []),
        ("muc#jid", "jid-single", "User ID", [real_jid], []),
        ("muc#roomnick", "text-single", "Room Nickname", [nick], []),
        ("muc#request_allow", "boolean", "Grant voice to this person?", ["false"], []),
    ]
    form = build_form(VOICE_REQUEST, "form", fields, title="Voice request")
    form.add(_INSTRUCTIONS, None, "To approve this request for voice, select the checkbox and submit.")
    return form


def parse_bool(values: list[str] | None) -> bool:
    if not values:
        return False
    try:
        return _bool(values[0])
    except ValueError:
        return False
