"""XEP-0045 room state and permission decisions, as a pure module (no I/O, no asyncio).

The decisions follow the privilege tables of XEP-0045 sections 5.1.2 (roles) and 5.2.2 (affiliations) and
the error rules of sections 7.2 (entering), 8 (moderators), 9 (admins) and 10 (owners). Each decision
function returns the stanza error condition to send, or ``None`` when the action is allowed; the service
turns a condition into a :class:`StanzaError`.

Occupants: one :class:`Occupant` per nickname. Several sessions (resources) of the same user may share a
nickname ("multi-session nick sharing"): they are one occupant to everybody else, each session gets the
room's traffic, and the occupant leaves when its last session does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition
from mbeon_chat.xmpp.jid import JID

__all__ = [
    "Affiliation",
    "Occupant",
    "Role",
    "Room",
    "RoomConfig",
    "affiliation_change_error",
    "can_list",
    "default_role",
    "groupchat_error",
    "invite_error",
    "join_error",
    "pm_error",
    "role_change_error",
    "sees_real_jids",
    "subject_error",
]


class Role(StrEnum):
    MODERATOR = "moderator"
    PARTICIPANT = "participant"
    VISITOR = "visitor"
    NONE = "none"


class Affiliation(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    NONE = "none"
    OUTCAST = "outcast"


AFFILIATION_RANK = {
    Affiliation.OUTCAST: -1,
    Affiliation.NONE: 0,
    Affiliation.MEMBER: 1,
    Affiliation.ADMIN: 2,
    Affiliation.OWNER: 3,
}
ALLOW_PM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")
ROLE_NAMES = ("moderator", "participant", "visitor")


def rank(affiliation: Affiliation) -> int:
    return AFFILIATION_RANK[affiliation]


@dataclass(slots=True)
class RoomConfig:
    """The room configuration (muc#roomconfig); plain values so it round-trips through JSON."""

    name: str = ""
    description: str = ""
    persistent: bool = True
    public: bool = False
    members_only: bool = True
    moderated: bool = False
    password: str = ""  # empty: not password-protected
    whois: str = "moderators"  # moderators: semi-anonymous; anyone: non-anonymous
    max_users: int = 0  # 0: only the service limit applies
    change_subject: bool = False  # participants (not only moderators) may change the subject
    allow_invites: bool = False  # participants (not only admins/moderators) may invite
    allow_pm: str = "anyone"  # who may send private messages: anyone | participants | moderators | none
    logging: bool = False  # the room is archived (status code 170)
    history_length: int = 20  # at most this many messages are sent on join
    allow_voice_requests: bool = True
    get_member_list: tuple[str, ...] = ("moderator",)  # roles that may retrieve the member list

    @property
    def password_protected(self) -> bool:
        return bool(self.password)

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["get_member_list"] = list(self.get_member_list)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomConfig:
        """Build from stored data; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "get_member_list" in values:
            values["get_member_list"] = tuple(values["get_member_list"])
        return cls(**values)


@dataclass(slots=True)
class Occupant:
    """One nickname in a room; ``sessions`` maps each real full JID to its string form."""

    nick: str
    bare: JID
    role: Role
    affiliation: Affiliation
    sessions: dict[JID, str] = field(default_factory=dict)
    #: The presence payload (show, status, caps ...) without the MUC extension.
    presence: list[Element | str] = field(default_factory=list)

    @property
    def jid(self) -> JID:
        """The real JID shown to those who may see it: the first session that joined."""
        return next(iter(self.sessions))


@dataclass
class Room:
    jid: JID
    config: RoomConfig
    affiliations: dict[JID, Affiliation] = field(default_factory=dict)
    reserved_nicks: dict[JID, str] = field(default_factory=dict)
    occupants: dict[str, Occupant] = field(default_factory=dict)
    by_session: dict[JID, Occupant] = field(default_factory=dict)
    subject: str = ""
    subject_nick: str = ""
    locked: bool = False
    created_at: int = 0
    history: deque[Any] = field(default_factory=deque)
    jid_str: str = ""

    def __post_init__(self) -> None:
        self.jid_str = str(self.jid)

    # --- affiliations ---------------------------------------------------------------------------
    def affiliation(self, bare: JID) -> Affiliation:
        return self.affiliations.get(bare, Affiliation.NONE)

    def with_affiliation(self, affiliation: Affiliation) -> list[JID]:
        return [jid for jid, aff in self.affiliations.items() if aff is affiliation]

    def set_affiliation(self, bare: JID, affiliation: Affiliation, nick: str | None = None) -> None:
        if affiliation is Affiliation.NONE:
            self.affiliations.pop(bare, None)
            self.reserved_nicks.pop(bare, None)
            return
        self.affiliations[bare] = affiliation
        if nick:
            self.reserved_nicks[bare] = nick

    def nick_holder(self, nick: str) -> JID | None:
        """The bare JID that holds ``nick`` now (an occupant) or has it reserved."""
        occupant = self.occupants.get(nick)
        if occupant is not None:
            return occupant.bare
        for bare, reserved in self.reserved_nicks.items():
            if reserved == nick:
                return bare
        return None

    # --- occupants ------------------------------------------------------------------------------
    def occupant_of(self, bare: JID) -> Occupant | None:
        for occupant in self.occupants.values():
            if occupant.bare == bare:
                return occupant
        return None

    def add_session(self, occupant: Occupant, full: JID) -> None:
        self.occupants[occupant.nick] = occupant
        occupant.sessions[full] = str(full)
        self.by_session[full] = occupant

    def remove_session(self, full: JID) -> Occupant | None:
        """Remove one session; returns its occupant (gone from the room if it has no sessions left)."""
        occupant = self.by_session.pop(full, None)
        if occupant is None:
            return None
        occupant.sessions.pop(full, None)
        if not occupant.sessions:
            self.occupants.pop(occupant.nick, None)
        return occupant

    def remove_occupant(self, occupant: Occupant) -> None:
        self.occupants.pop(occupant.nick, None)
        for full in occupant.sessions:
            self.by_session.pop(full, None)

    def rename(self, occupant: Occupant, nick: str) -> None:
        self.occupants.pop(occupant.nick, None)
        occupant.nick = nick
        self.occupants[nick] = occupant

    def count_affiliation(self, affiliation: Affiliation) -> int:
        return sum(1 for aff in self.affiliations.values() if aff is affiliation)


# --- decisions -------------------------------------------------------------------------------------
def default_role(affiliation: Affiliation, config: RoomConfig) -> Role:
    """The role an occupant gets on entering (XEP-0045 5.1.1)."""
    if affiliation in (Affiliation.OWNER, Affiliation.ADMIN):
        return Role.MODERATOR
    if affiliation is Affiliation.MEMBER:
        return Role.PARTICIPANT
    if affiliation is Affiliation.OUTCAST:
        return Role.NONE
    return Role.VISITOR if config.moderated else Role.PARTICIPANT


def join_error(
    config: RoomConfig,
    affiliation: Affiliation,
    *,
    password: str | None,
    nick_taken: bool,
    occupants: int,
    service_max: int,
) -> StanzaCondition | None:
    """Whether a user may enter (XEP-0045 7.2.6 - 7.2.11); owners and admins skip password and size."""
    if affiliation is Affiliation.OUTCAST:
        return StanzaCondition.FORBIDDEN
    if config.members_only and rank(affiliation) < rank(Affiliation.MEMBER):
        return StanzaCondition.REGISTRATION_REQUIRED
    privileged = rank(affiliation) >= rank(Affiliation.ADMIN)
    if config.password and not privileged and password != config.password:
        return StanzaCondition.NOT_AUTHORIZED
    if nick_taken:
        return StanzaCondition.CONFLICT
    limits = [x for x in (config.max_users, service_max) if x > 0]
    limit = min(limits) if limits else 0
    if limit and occupants >= limit and not privileged:
        return StanzaCondition.SERVICE_UNAVAILABLE
    return None


def role_change_error(
    actor_role: Role,
    actor_aff: Affiliation,
    target_role: Role,
    target_aff: Affiliation,
    new_role: Role,
    *,
    is_self: bool = False,
) -> StanzaCondition | None:
    """May the actor give the target ``new_role`` (kick = none; XEP-0045 8.2-8.5, 9.6, 9.7)?"""
    if actor_role is not Role.MODERATOR:
        return StanzaCondition.FORBIDDEN
    if new_role is target_role:
        return None
    if new_role is Role.NONE:  # kicking
        if is_self:
            return StanzaCondition.CONFLICT
        if rank(target_aff) >= rank(Affiliation.ADMIN):
            # Only an owner may kick an admin; nobody kicks an owner.
            ok = actor_aff is Affiliation.OWNER and target_aff is Affiliation.ADMIN
            return None if ok else StanzaCondition.NOT_ALLOWED
        if rank(target_aff) > rank(actor_aff):
            return StanzaCondition.NOT_ALLOWED  # "cannot be kicked by a moderator with a lower affiliation"
        return None
    privileged_actor = rank(actor_aff) >= rank(Affiliation.ADMIN)
    if (new_role is Role.MODERATOR or target_role is Role.MODERATOR) and not privileged_actor:
        return StanzaCondition.FORBIDDEN  # granting or revoking moderator status is for admins and owners
    if new_role is Role.MODERATOR:
        return None
    if rank(target_aff) >= rank(Affiliation.ADMIN):
        return StanzaCondition.NOT_ALLOWED  # admins and owners keep moderator status and voice
    if target_role is Role.VISITOR:  # granting voice
        return None
    # Revoking voice or moderator status: not from someone at or above the actor's affiliation.
    if rank(target_aff) >= rank(actor_aff):
        return StanzaCondition.NOT_ALLOWED
    return None


def affiliation_change_error(
    actor_aff: Affiliation,
    target_aff: Affiliation,
    new_aff: Affiliation,
    *,
    owners_after: int,
) -> StanzaCondition | None:
    """May the actor change the target's affiliation (XEP-0045 9.1-9.5 admins, 10.3-10.8 owners)?"""
    if rank(actor_aff) < rank(Affiliation.ADMIN):
        return StanzaCondition.FORBIDDEN
    if actor_aff is Affiliation.ADMIN:
        if new_aff in (Affiliation.ADMIN, Affiliation.OWNER):
            return StanzaCondition.FORBIDDEN  # only owners edit the admin and owner lists
        if target_aff in (Affiliation.ADMIN, Affiliation.OWNER):
            return StanzaCondition.NOT_ALLOWED  # an admin cannot demote or ban an admin or owner
        return None
    if owners_after < 1:
        return StanzaCondition.CONFLICT  # the room must keep an owner
    return None


def groupchat_error(occupant: Occupant | None, config: RoomConfig) -> StanzaCondition | None:
    """May this sender post to the room (XEP-0045 7.4, 8.3)?"""
    if occupant is None:
        return StanzaCondition.NOT_ACCEPTABLE
    if occupant.role is Role.VISITOR or occupant.role is Role.NONE:
        return StanzaCondition.FORBIDDEN
    return None


def subject_error(occupant: Occupant | None, config: RoomConfig) -> StanzaCondition | None:
    """Moderators may always change the subject; participants if the room allows it (XEP-0045 8.1)."""
    if occupant is None:
        return StanzaCondition.NOT_ACCEPTABLE
    if occupant.role is Role.MODERATOR:
        return None
    if occupant.role is Role.PARTICIPANT and config.change_subject:
        return None
    return StanzaCondition.FORBIDDEN


def pm_error(sender: Occupant | None, config: RoomConfig) -> StanzaCondition | None:
    """Private messages between occupants (XEP-0045 7.5) per muc#roomconfig_allowpm."""
    if sender is None:
        return StanzaCondition.NOT_ACCEPTABLE
    policy = config.allow_pm
    if policy == "anyone":
        return None
    if policy == "participants" and sender.role in (Role.PARTICIPANT, Role.MODERATOR):
        return None
    if policy == "moderators" and sender.role is Role.MODERATOR:
        return None
    return StanzaCondition.FORBIDDEN


def invite_error(
    sender: Occupant | None, affiliation: Affiliation, config: RoomConfig
) -> StanzaCondition | None:
    """Mediated invitations (XEP-0045 7.8.2): admins, owners and moderators; others if the room allows."""
    if sender is None and rank(affiliation) < rank(Affiliation.ADMIN):
        return StanzaCondition.NOT_ACCEPTABLE
    if rank(affiliation) >= rank(Affiliation.ADMIN):
        return None
    assert sender is not None
    if sender.role is Role.MODERATOR or (config.allow_invites and sender.role is Role.PARTICIPANT):
        return None
    return StanzaCondition.FORBIDDEN


def sees_real_jids(role: Role, config: RoomConfig) -> bool:
    """Semi-anonymous rooms show real JIDs to moderators only; non-anonymous rooms to everyone."""
    return config.whois == "anyone" or role is Role.MODERATOR


def can_list(kind: str, actor_role: Role, actor_aff: Affiliation, config: RoomConfig) -> bool:
    """May the actor retrieve the list of ``kind``, an affiliation or role (XEP-0045 8.5, 9.5, 10.5)?"""
    privileged = rank(actor_aff) >= rank(Affiliation.ADMIN)
    if kind in ("owner", "admin", "outcast"):
        return privileged
    if kind == "member":
        return privileged or (actor_role.value in config.get_member_list)
    if kind in ("participant", "visitor"):
        return actor_role is Role.MODERATOR
    if kind == "moderator":
        return privileged
    return False
