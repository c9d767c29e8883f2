"""XEP-0045 permission tables as pure decisions (features/muc/room.py)."""

from __future__ import annotations

import pytest

from mbeon_chat.features.muc.room import (
    Affiliation,
    Occupant,
    Role,
    Room,
    RoomConfig,
    affiliation_change_error,
    can_list,
    default_role,
    groupchat_error,
    invite_error,
    join_error,
    pm_error,
    role_change_error,
    sees_real_jids,
    subject_error,
)
from mbeon_chat.xmpp.errors import StanzaCondition as C
from mbeon_chat.xmpp.jid import JID

A = Affiliation
R = Role


def occupant(role: Role = R.PARTICIPANT, aff: Affiliation = A.NONE) -> Occupant:
    return Occupant("nick", JID.parse("u@example.org"), role, aff)


@pytest.mark.parametrize(
    ("aff", "moderated", "role"),
    [
        (A.OWNER, False, R.MODERATOR),
        (A.ADMIN, True, R.MODERATOR),
        (A.MEMBER, True, R.PARTICIPANT),
        (A.NONE, False, R.PARTICIPANT),
        (A.NONE, True, R.VISITOR),
        (A.OUTCAST, False, R.NONE),
    ],
)
def test_default_role_follows_affiliation_and_moderation(
    aff: Affiliation, moderated: bool, role: Role
) -> None:
    assert default_role(aff, RoomConfig(moderated=moderated)) is role


def _join(config: RoomConfig, aff: Affiliation, **kw: object) -> C | None:
    args: dict[str, object] = {"password": None, "nick_taken": False, "occupants": 0, "service_max": 100}
    args.update(kw)
    return join_error(config, aff, **args)  # type: ignore[arg-type]


def test_banned_users_are_forbidden_before_anything_else() -> None:
    assert _join(RoomConfig(members_only=True, password="x"), A.OUTCAST) is C.FORBIDDEN


def test_members_only_rooms_need_registration() -> None:
    config = RoomConfig(members_only=True)
    assert _join(config, A.NONE) is C.REGISTRATION_REQUIRED
    assert _join(config, A.MEMBER) is None
    assert _join(RoomConfig(members_only=False), A.NONE) is None


def test_password_rooms_refuse_a_wrong_password_but_not_admins() -> None:
    config = RoomConfig(members_only=False, password="secret")
    assert _join(config, A.NONE) is C.NOT_AUTHORIZED
    assert _join(config, A.NONE, password="wrong") is C.NOT_AUTHORIZED
    assert _join(config, A.NONE, password="secret") is None
    assert _join(config, A.ADMIN) is None


def test_nick_conflict_and_full_rooms() -> None:
    config = RoomConfig(members_only=False, max_users=2)
    assert _join(config, A.NONE, nick_taken=True) is C.CONFLICT
    assert _join(config, A.NONE, occupants=2) is C.SERVICE_UNAVAILABLE
    assert _join(config, A.OWNER, occupants=2) is None
    assert _join(RoomConfig(members_only=False), A.NONE, occupants=5, service_max=5) is C.SERVICE_UNAVAILABLE


# --- roles (XEP-0045 5.1.2, 8.2 - 8.5, 9.6, 9.7) --------------------------------------------------
@pytest.mark.parametrize(
    ("actor", "target", "new", "expected"),
    [
        # only moderators change roles
        ((R.PARTICIPANT, A.MEMBER), (R.PARTICIPANT, A.NONE), R.NONE, C.FORBIDDEN),
        # kicking
        ((R.MODERATOR, A.NONE), (R.PARTICIPANT, A.NONE), R.NONE, None),
        ((R.MODERATOR, A.NONE), (R.PARTICIPANT, A.MEMBER), R.NONE, C.NOT_ALLOWED),
        ((R.MODERATOR, A.MEMBER), (R.MODERATOR, A.ADMIN), R.NONE, C.NOT_ALLOWED),
        ((R.MODERATOR, A.ADMIN), (R.MODERATOR, A.OWNER), R.NONE, C.NOT_ALLOWED),
        ((R.MODERATOR, A.ADMIN), (R.MODERATOR, A.ADMIN), R.NONE, C.NOT_ALLOWED),
        ((R.MODERATOR, A.OWNER), (R.MODERATOR, A.ADMIN), R.NONE, None),
        ((R.MODERATOR, A.OWNER), (R.PARTICIPANT, A.MEMBER), R.NONE, None),
        # voice
        ((R.MODERATOR, A.NONE), (R.VISITOR, A.NONE), R.PARTICIPANT, None),
        ((R.MODERATOR, A.ADMIN), (R.PARTICIPANT, A.MEMBER), R.VISITOR, None),
        ((R.MODERATOR, A.MEMBER), (R.PARTICIPANT, A.MEMBER), R.VISITOR, C.NOT_ALLOWED),
        ((R.MODERATOR, A.OWNER), (R.MODERATOR, A.ADMIN), R.VISITOR, C.NOT_ALLOWED),
        # moderator status: admins and owners only
        ((R.MODERATOR, A.MEMBER), (R.PARTICIPANT, A.NONE), R.MODERATOR, C.FORBIDDEN),
        ((R.MODERATOR, A.ADMIN), (R.PARTICIPANT, A.MEMBER), R.MODERATOR, None),
        ((R.MODERATOR, A.ADMIN), (R.MODERATOR, A.MEMBER), R.PARTICIPANT, None),
        ((R.MODERATOR, A.MEMBER), (R.MODERATOR, A.MEMBER), R.PARTICIPANT, C.FORBIDDEN),
        ((R.MODERATOR, A.OWNER), (R.MODERATOR, A.ADMIN), R.PARTICIPANT, C.NOT_ALLOWED),
        # nothing to change
        ((R.MODERATOR, A.NONE), (R.PARTICIPANT, A.OWNER), R.PARTICIPANT, None),
    ],
)
def test_role_changes_follow_the_xep_0045_tables(
    actor: tuple[Role, Affiliation], target: tuple[Role, Affiliation], new: Role, expected: C | None
) -> None:
    assert role_change_error(actor[0], actor[1], target[0], target[1], new) is expected


def test_kicking_yourself_is_a_conflict() -> None:
    assert role_change_error(R.MODERATOR, A.NONE, R.MODERATOR, A.NONE, R.NONE, is_self=True) is C.CONFLICT
    assert role_change_error(R.MODERATOR, A.OWNER, R.MODERATOR, A.OWNER, R.NONE, is_self=True) is C.CONFLICT


# --- affiliations (XEP-0045 5.2.2, 9, 10) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("actor", "target", "new", "expected"),
    [
        (A.MEMBER, A.NONE, A.MEMBER, C.FORBIDDEN),
        (A.NONE, A.NONE, A.OUTCAST, C.FORBIDDEN),
        (A.ADMIN, A.NONE, A.MEMBER, None),
        (A.ADMIN, A.MEMBER, A.OUTCAST, None),
        (A.ADMIN, A.MEMBER, A.NONE, None),
        (A.ADMIN, A.NONE, A.ADMIN, C.FORBIDDEN),
        (A.ADMIN, A.MEMBER, A.OWNER, C.FORBIDDEN),
        (A.ADMIN, A.ADMIN, A.OUTCAST, C.NOT_ALLOWED),
        (A.ADMIN, A.OWNER, A.OUTCAST, C.NOT_ALLOWED),
        (A.ADMIN, A.OWNER, A.MEMBER, C.NOT_ALLOWED),
        (A.OWNER, A.ADMIN, A.OUTCAST, None),
        (A.OWNER, A.MEMBER, A.ADMIN, None),
        (A.OWNER, A.MEMBER, A.OWNER, None),
    ],
)
def test_affiliation_changes_follow_the_xep_0045_tables(
    actor: Affiliation, target: Affiliation, new: Affiliation, expected: C | None
) -> None:
    assert affiliation_change_error(actor, target, new, owners_after=1) is expected


def test_the_last_owner_cannot_step_down() -> None:
    assert affiliation_change_error(A.OWNER, A.OWNER, A.ADMIN, owners_after=0) is C.CONFLICT
    assert affiliation_change_error(A.OWNER, A.OWNER, A.ADMIN, owners_after=1) is None


# --- speaking, subject, private messages, invitations ---------------------------------------------
def test_groupchat_needs_an_occupant_with_voice() -> None:
    config = RoomConfig(moderated=True)
    assert groupchat_error(None, config) is C.NOT_ACCEPTABLE
    assert groupchat_error(occupant(R.VISITOR), config) is C.FORBIDDEN
    assert groupchat_error(occupant(R.PARTICIPANT), config) is None


def test_subject_changes_by_moderators_or_participants_if_allowed() -> None:
    assert subject_error(occupant(R.MODERATOR), RoomConfig()) is None
    assert subject_error(occupant(R.PARTICIPANT), RoomConfig(change_subject=False)) is C.FORBIDDEN
    assert subject_error(occupant(R.PARTICIPANT), RoomConfig(change_subject=True)) is None
    assert subject_error(occupant(R.VISITOR), RoomConfig(change_subject=True)) is C.FORBIDDEN
    assert subject_error(None, RoomConfig()) is C.NOT_ACCEPTABLE


def test_private_messages_per_allowpm() -> None:
    assert pm_error(occupant(R.VISITOR), RoomConfig(allow_pm="anyone")) is None
    assert pm_error(occupant(R.VISITOR), RoomConfig(allow_pm="participants")) is C.FORBIDDEN
    assert pm_error(occupant(R.PARTICIPANT), RoomConfig(allow_pm="moderators")) is C.FORBIDDEN
    assert pm_error(occupant(R.MODERATOR), RoomConfig(allow_pm="moderators")) is None
    assert pm_error(occupant(R.MODERATOR), RoomConfig(allow_pm="none")) is C.FORBIDDEN
    assert pm_error(None, RoomConfig()) is C.NOT_ACCEPTABLE


def test_invitations_by_admins_moderators_and_participants_if_allowed() -> None:
    assert invite_error(None, A.OWNER, RoomConfig()) is None
    assert invite_error(None, A.MEMBER, RoomConfig()) is C.NOT_ACCEPTABLE
    assert invite_error(occupant(R.MODERATOR), A.NONE, RoomConfig()) is None
    assert invite_error(occupant(R.PARTICIPANT), A.MEMBER, RoomConfig(allow_invites=False)) is C.FORBIDDEN
    assert invite_error(occupant(R.PARTICIPANT), A.MEMBER, RoomConfig(allow_invites=True)) is None


def test_semi_anonymous_rooms_show_real_jids_to_moderators_only() -> None:
    semi = RoomConfig(whois="moderators")
    assert sees_real_jids(R.MODERATOR, semi)
    assert not sees_real_jids(R.PARTICIPANT, semi)
    assert sees_real_jids(R.VISITOR, RoomConfig(whois="anyone"))


def test_lists_by_privilege() -> None:
    config = RoomConfig(get_member_list=("moderator",))
    assert can_list("outcast", R.MODERATOR, A.ADMIN, config)
    assert not can_list("outcast", R.MODERATOR, A.MEMBER, config)
    assert can_list("member", R.MODERATOR, A.NONE, config)
    assert not can_list("member", R.PARTICIPANT, A.MEMBER, config)
    assert can_list("participant", R.MODERATOR, A.NONE, config)
    assert not can_list("moderator", R.MODERATOR, A.MEMBER, config)


# --- room state ------------------------------------------------------------------------------------
def test_sessions_share_a_nick_and_the_occupant_leaves_with_the_last_one() -> None:
    room = Room(JID.parse("r@groups.example.org"), RoomConfig())
    occ = Occupant("anna", JID.parse("anna@example.org"), R.PARTICIPANT, A.MEMBER)
    phone, laptop = JID.parse("anna@example.org/phone"), JID.parse("anna@example.org/laptop")
    room.add_session(occ, phone)
    room.add_session(occ, laptop)
    assert occ.jid == phone and room.occupants == {"anna": occ}

    assert room.remove_session(phone) is occ
    assert "anna" in room.occupants and occ.jid == laptop
    room.remove_session(laptop)
    assert room.occupants == {} and room.by_session == {}


def test_reserved_nicks_belong_to_their_member() -> None:
    room = Room(JID.parse("r@groups.example.org"), RoomConfig())
    anna = JID.parse("anna@example.org")
    room.set_affiliation(anna, A.MEMBER, "Anna")
    assert room.nick_holder("Anna") == anna
    room.set_affiliation(anna, A.NONE)
    assert room.nick_holder("Anna") is None and room.affiliation(anna) is A.NONE


def test_config_round_trips_through_plain_data() -> None:
    config = RoomConfig(name="Group", password="pw", get_member_list=("moderator", "participant"))
    assert RoomConfig.from_dict({**config.to_dict(), "from_the_future": 1}) == config
