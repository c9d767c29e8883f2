"""Room configuration forms and history selection (features/muc/config_form.py, history.py)."""

from __future__ import annotations

import pytest

from mbeon_chat.features.muc.config_form import (
    ROOMCONFIG,
    build_form,
    config_form,
    form_values,
    parse_config,
)
from mbeon_chat.features.muc.history import (
    HistoryEntry,
    delayed_copy,
    element_from_bytes,
    element_to_bytes,
    select_history,
)
from mbeon_chat.features.muc.room import RoomConfig
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.stanza import make_message


def submit(**fields: str | list[str]) -> Element:
    return build_form(
        ROOMCONFIG,
        "submit",
        [(var, "text-single", None, v if isinstance(v, list) else [v], []) for var, v in fields.items()],
    )


def test_an_empty_submission_keeps_the_configuration() -> None:
    current = RoomConfig(name="x")
    assert parse_config(Element("{jabber:x:data}x", {"type": "submit"}), current, history_max=100) == current


def test_the_form_round_trips() -> None:
    config = RoomConfig(name="Group", members_only=False, password="pw", max_users=30, allow_pm="moderators")
    form = config_form(config, "r@groups")
    submitted = Element(form.tag, {"type": "submit"}, form.children)
    assert parse_config(submitted, RoomConfig(), history_max=100) == config


def test_submitted_fields_change_the_configuration() -> None:
    new = parse_config(
        submit(
            **{
                "muc#roomconfig_roomname": "Tuesday group",
                "muc#roomconfig_membersonly": "0",
                "muc#roomconfig_whois": "anyone",
                "muc#roomconfig_maxusers": "none",
                "muc#roomconfig_passwordprotectedroom": "1",
                "muc#roomconfig_roomsecret": "s3cret",
                "muc#maxhistoryfetch": "500",
            }
        ),
        RoomConfig(),
        history_max=100,
    )
    assert (new.name, new.members_only, new.whois, new.max_users) == ("Tuesday group", False, "anyone", 0)
    assert new.password == "s3cret" and new.history_length == 100


def test_an_unknown_field_is_a_bad_request() -> None:
    with pytest.raises(StanzaError) as err:
        parse_config(
            submit(**{"muc#roomconfig_roomname": "x", "muc#roomconfig_bogus": "1"}),
            RoomConfig(),
            history_max=9,
        )
    assert err.value.condition is StanzaCondition.BAD_REQUEST


@pytest.mark.parametrize(
    "fields",
    [
        {"muc#roomconfig_persistentroom": "maybe"},
        {"muc#roomconfig_whois": "everybody"},
        {"muc#roomconfig_passwordprotectedroom": "1"},
        {"muc#roomconfig_maxusers": "many"},
    ],
)
def test_unusable_values_are_not_acceptable(fields: dict[str, str]) -> None:
    with pytest.raises(StanzaError) as err:
        parse_config(submit(**fields), RoomConfig(), history_max=9)
    assert err.value.condition is StanzaCondition.NOT_ACCEPTABLE


def test_form_values_reads_multi_values() -> None:
    values = form_values(submit(**{"muc#roomconfig_getmemberlist": ["moderator", "participant"]}))
    assert values["muc#roomconfig_getmemberlist"] == ["moderator", "participant"]
    assert values["FORM_TYPE"] == [ROOMCONFIG]


# --- history ---------------------------------------------------------------------------------------
def entries(n: int, start_ms: int = 1_000_000) -> list[HistoryEntry]:
    return [
        HistoryEntry(f"id{i}", "r@g", "anna", start_ms + i * 1000, make_message("r@g", f"m{i}", "groupchat"))
        for i in range(n)
    ]


def history(**attrs: str) -> Element:
    return Element("{http://jabber.org/protocol/muc}history", attrs)


def test_default_history_is_the_room_default() -> None:
    got = select_history(entries(30), None, limit=100, default=20, now_ms=0)
    assert [e.id for e in got] == [f"id{i}" for i in range(10, 30)]


def test_maxstanzas_is_capped_by_the_limit() -> None:
    assert len(select_history(entries(30), history(maxstanzas="5"), limit=100, default=20, now_ms=0)) == 5
    assert len(select_history(entries(30), history(maxstanzas="50"), limit=25, default=20, now_ms=0)) == 25
    assert select_history(entries(30), history(maxstanzas="0"), limit=25, default=20, now_ms=0) == []


def test_seconds_and_since_select_recent_messages() -> None:
    items = entries(10, start_ms=1_000_000)  # at 1000 s ... 1009 s
    got = select_history(items, history(seconds="3"), limit=100, default=20, now_ms=1_009_000)
    assert [e.id for e in got] == ["id6", "id7", "id8", "id9"]
    got = select_history(items, history(since="1970-01-01T00:16:48Z"), limit=100, default=20, now_ms=0)
    assert [e.id for e in got] == ["id8", "id9"]  # 16:48 = 1008 s


def test_maxchars_counts_whole_stanzas_from_the_newest() -> None:
    items = entries(5)
    size = len(items[0].stanza.to_string("jabber:client"))
    got = select_history(items, history(maxchars=str(size * 2 + 1)), limit=100, default=20, now_ms=0)
    assert [e.id for e in got] == ["id3", "id4"]
    assert select_history(items, history(maxchars="0"), limit=100, default=20, now_ms=0) == []


def test_history_copies_carry_a_delay_from_the_room_and_leave_the_original_alone() -> None:
    entry = entries(1)[0]
    copy = delayed_copy(entry, "r@g")
    delay = copy.find("{urn:xmpp:delay}delay")
    assert (
        delay is not None and delay.get("from") == "r@g" and delay.get("stamp") == "1970-01-01T00:16:40.000Z"
    )
    assert entry.stanza.find("{urn:xmpp:delay}delay") is None


def test_stored_stanzas_parse_back_to_the_same_tree() -> None:
    el = make_message("r@g", "a <b> & 'c' ünïcode", "groupchat", from_="r@g/anna")
    el.add("{urn:xmpp:sid:0}stanza-id", {"id": "x", "by": "r@g"})
    el.attrs["{http://www.w3.org/XML/1998/namespace}lang"] = "de"
    assert element_to_bytes(element_from_bytes(element_to_bytes(el))) == element_to_bytes(el)
    assert element_from_bytes(element_to_bytes(el)).findtext("{jabber:client}body") == "a <b> & 'c' ünïcode"
