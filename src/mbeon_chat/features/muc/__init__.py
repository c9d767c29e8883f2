"""XEP-0045: Multi-User Chat, for group counselling sessions.

A component on ``<subdomain>.<domain>`` (default ``groups.``). Rooms created by counsellors default to
members-only, semi-anonymous (only moderators see real JIDs), persistent and hidden. Who may create rooms:
``counsellors`` and ``creators`` (bare JIDs; ``"*"`` lets anyone) plus the server admins, who are also
owners of every room.

Slices: ``room`` (state and permission decisions, pure), ``service`` (the component: routing, delivery,
disco), ``presence`` (entering, leaving, nicknames), ``messages`` (groupchat, private messages,
invitations, voice requests), ``moderation`` (muc#admin, muc#owner), ``config_form`` (XEP-0004 forms),
``history`` (history on entering, archive interface), ``store`` (database), ``state`` (reload snapshot).

Persistent rooms, their affiliations, configuration and history live in the database and are loaded when
the plugin starts. On a reload the live rooms, occupants included, are handed to the new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp.jid import JID, InvalidJID
from mbeon_chat.xmpp.stanza import STATUS, Stanza

from . import moderation, presence
from .service import MucService
from .state import SNAPSHOT_VERSION, room_from_record, room_from_snapshot, room_snapshot
from .store import SqlHistoryArchive, SqlRoomStore, WriteBehind

DEPENDS = ()


@dataclass(frozen=True)
class Options:
    subdomain: str = "groups"
    name: str = "Group sessions"
    #: Bare JIDs that may create rooms ("*": anybody); counsellors and server admins always may.
    creators: tuple[str, ...] = ()
    counsellors: tuple[str, ...] = ()
    # Configuration of new rooms (owners change it with the room configuration form).
    default_members_only: bool = True
    default_persistent: bool = True
    default_public: bool = False
    default_moderated: bool = False
    default_whois: str = "moderators"  # moderators (semi-anonymous) | anyone (non-anonymous)
    history_default: int = 20  # messages sent on entering unless the occupant asks otherwise
    history_max: int = 100  # messages a room keeps for entering occupants
    max_occupants: int = 200  # per room (owners and admins may still enter)

    def validate(self) -> None:
        if not self.subdomain:
            raise ValueError("subdomain: must not be empty")
        try:
            JID.parse(f"{self.subdomain}.example")
        except InvalidJID:
            raise ValueError(f"subdomain: {self.subdomain!r} is not a valid domain label") from None
        for key in ("creators", "counsellors"):
            for i, value in enumerate(getattr(self, key)):
                if value == "*":
                    continue
                try:
                    jid = JID.parse(value)
                except InvalidJID:
                    raise ValueError(f"{key}[{i}]: {value!r} is not a JID") from None
                if jid.resource is not None:
                    raise ValueError(f"{key}[{i}]: use a bare JID")
        if self.default_whois not in ("moderators", "anyone"):
            raise ValueError("default_whois: must be moderators or anyone")
        if not 0 <= self.history_default <= self.history_max <= 1000:
            raise ValueError("history_default: need 0 <= history_default <= history_max <= 1000")
        if self.max_occupants < 1:
            raise ValueError("max_occupants: must be at least 1")


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    domain = f"{options.subdomain}.{api.domain}"
    storage = api.storage
    rooms_store = SqlRoomStore(storage.database, domain) if storage is not None else None
    archive = SqlHistoryArchive(storage.database) if storage is not None else None
    writer = WriteBehind(rooms_store, archive) if rooms_store is not None else None
    svc = MucService(api, options, writer)
    api.add_component(domain, svc, name=options.name)
    api.export(svc)

    async def on_session_ended(session: Any, reason: str) -> None:
        await svc.session_ended(session.jid)

    async def on_self_presence(stanza: Stanza, origin: Any) -> None:
        # Broadcast unavailable presence also leaves the rooms (the presence plugin may tell them too).
        if stanza.type == "unavailable" and stanza.from_ in svc.joined:
            await svc.session_ended(stanza.from_, stanza.el.findtext(STATUS))

    api.on("session/ended", on_session_ended)
    api.on("presence/self", on_self_presence, priority=100)

    state = api.previous_state
    if state and state.get("version") == SNAPSHOT_VERSION:
        for data in state["rooms"]:
            room = room_from_snapshot(data, options.history_max)
            svc.rooms[room.jid] = room
            for full in room.by_session:
                svc.index(full, room.jid)
        svc.ready.set()
        api.on_activate(lambda: _prune(svc))
    elif rooms_store is not None and archive is not None:
        api.add_task(lambda: _load(svc, rooms_store, archive))
    else:
        svc.ready.set()
    if writer is not None:
        api.add_task(writer.run)

    saved = False

    def save() -> dict[str, Any]:
        nonlocal saved
        saved = True
        if not svc.ready.is_set():
            return {}  # still loading (so nobody entered yet): the next version loads from the database
        return {"version": SNAPSHOT_VERSION, "rooms": [room_snapshot(r) for r in svc.rooms.values()]}

    async def unload() -> None:
        if not saved:
            moderation.shutdown(svc)
        if writer is not None:
            await writer.drain()

    api.on_save(save)
    api.on_unload(unload)


async def _load(svc: MucService, store: SqlRoomStore, archive: SqlHistoryArchive) -> None:
    """Restore the persistent rooms (configuration, affiliations, recent history) at start-up."""
    try:
        for record in await store.load_rooms():
            history = await archive.recent(record.room, svc.options.history_max)
            room = room_from_record(record, history, svc.options.history_max)
            svc.rooms.setdefault(room.jid, room)
        svc.log.info("muc.rooms_loaded", rooms=len(svc.rooms), service=svc.domain)
    except Exception:
        svc.log.exception("muc.load_failed", service=svc.domain)
    finally:
        svc.ready.set()


def _prune(svc: MucService) -> None:
    """After a reload: sessions that ended during the handover leave their rooms now."""
    for room in list(svc.rooms.values()):
        for full in list(room.by_session):
            if svc.registry.get(full) is None:
                presence.leave(svc, room, full, None)
