"""Rooms to and from plain data: the reload snapshot (live occupants included) and stored records.

After a plugin reload the classes of the old version are different classes, so the handover is JSON-like
data only: strings, numbers, lists and dicts (stanzas as XML text). ``SNAPSHOT_VERSION`` changes whenever
the shape does; a new version that does not know the old shape reloads the rooms from the database.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.jid import JID

from .history import HistoryEntry, element_from_bytes, element_to_bytes
from .room import Affiliation, Occupant, Role, Room, RoomConfig
from .store import RoomRecord

__all__ = ["SNAPSHOT_VERSION", "room_from_record", "room_from_snapshot", "room_snapshot"]

SNAPSHOT_VERSION = 1


def room_snapshot(room: Room) -> dict[str, Any]:
    return {
        "jid": str(room.jid),
        "config": room.config.to_dict(),
        "affiliations": [[str(jid), aff.value] for jid, aff in room.affiliations.items()],
        "reserved_nicks": [[str(jid), nick] for jid, nick in room.reserved_nicks.items()],
        "subject": room.subject,
        "subject_nick": room.subject_nick,
        "locked": room.locked,
        "created_at": room.created_at,
        "occupants": [
            {
                "nick": occ.nick,
                "bare": str(occ.bare),
                "role": occ.role.value,
                "affiliation": occ.affiliation.value,
                "sessions": list(occ.sessions.values()),
                "presence": [c.to_string() for c in occ.presence if isinstance(c, Element)],
            }
            for occ in room.occupants.values()
        ],
        "history": [[e.id, e.nick, e.at_ms, element_to_bytes(e.stanza).decode()] for e in room.history],
    }


def room_from_snapshot(data: dict[str, Any], history_max: int) -> Room:
    jid = JID.parse(data["jid"])
    room = Room(
        jid,
        RoomConfig.from_dict(data["config"]),
        subject=data["subject"],
        subject_nick=data["subject_nick"],
        locked=data["locked"],
        created_at=data["created_at"],
        history=deque(maxlen=history_max),
    )
    for bare, aff in data["affiliations"]:
        room.affiliations[JID.parse(bare)] = Affiliation(aff)
    for bare, nick in data["reserved_nicks"]:
        room.reserved_nicks[JID.parse(bare)] = nick
    for o in data["occupants"]:
        presence: list[Element | str] = [element_from_bytes(p.encode()) for p in o["presence"]]
        occupant = Occupant(o["nick"], JID.parse(o["bare"]), Role(o["role"]), Affiliation(o["affiliation"]))
        occupant.presence = presence
        for full in o["sessions"]:
            room.add_session(occupant, JID.parse(full))
    for entry_id, nick, at_ms, xml in data["history"]:
        room.history.append(
            HistoryEntry(entry_id, room.jid_str, nick, at_ms, element_from_bytes(xml.encode()))
        )
    return room


def room_from_record(record: RoomRecord, history: list[HistoryEntry], history_max: int) -> Room:
    room = Room(
        JID.parse(record.room),
        RoomConfig.from_dict(record.config),
        subject=record.subject,
        subject_nick=record.subject_nick,
        created_at=record.created_at,
        history=deque(history, maxlen=history_max),
    )
    for item in record.affiliations:
        room.set_affiliation(JID.parse(item.jid), Affiliation(item.affiliation), item.nick)
    return room
