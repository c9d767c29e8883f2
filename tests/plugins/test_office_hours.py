"""plugins/office_hours.py: replies outside hours only, once per sender and closed period, in the sender's
language, marked; the schedule is time-zone aware (DST, overnight ranges, closed dates)."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from reload_kit import SITE_PLUGINS, ConfigFile

from clients import connect, disconnect
from harness import running_server

UTC = dt.UTC
MARK = "{urn:mbeon:auto-reply}auto-reply"
REPLIES = {"en": "We are closed.", "de": "Wir sind gerade nicht da."}


@pytest.fixture(scope="module")
def oh() -> ModuleType:
    spec = importlib.util.spec_from_file_location("office_hours_under_test", SITE_PLUGINS / "office_hours.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_schedule_is_local_to_its_time_zone(oh: ModuleType) -> None:
    berlin = oh.Schedule(("mon-fri 09:00-17:00",), "Europe/Berlin")
    new_york = oh.Schedule(("mon-fri 09:00-17:00",), "America/New_York")
    monday_0830_berlin = dt.datetime(2025, 1, 6, 7, 30, tzinfo=UTC)  # CET = UTC+1
    monday_0930_berlin = dt.datetime(2025, 1, 6, 8, 30, tzinfo=UTC)
    assert not berlin.is_open(monday_0830_berlin)
    assert berlin.is_open(monday_0930_berlin)
    assert not new_york.is_open(monday_0930_berlin)  # 03:30 in New York
    assert berlin.is_open(dt.datetime(2025, 7, 7, 7, 30, tzinfo=UTC))  # CEST = UTC+2: 09:30
    saturday = dt.datetime(2025, 1, 11, 12, 0, tzinfo=UTC)
    assert not berlin.is_open(saturday)
    # the closed period is named after when it ends: the next opening, Monday 09:00 Berlin time
    assert berlin.closed_period(saturday) == "2025-01-13T09:00:00+01:00"
    assert berlin.closed_period(dt.datetime(2025, 1, 12, 12, 0, tzinfo=UTC)) == berlin.closed_period(saturday)


def test_overnight_ranges_closed_dates_and_day_lists(oh: ModuleType) -> None:
    s = oh.Schedule(("fri 22:00-02:00", "sat,sun 10:00-12:00"), "UTC", ("2025-01-12",))
    assert s.is_open(dt.datetime(2025, 1, 10, 23, 0, tzinfo=UTC))  # Friday night
    assert s.is_open(dt.datetime(2025, 1, 11, 1, 30, tzinfo=UTC))  # after midnight, still Friday's range
    assert not s.is_open(dt.datetime(2025, 1, 11, 2, 30, tzinfo=UTC))
    assert s.is_open(dt.datetime(2025, 1, 11, 11, 0, tzinfo=UTC))  # Saturday
    assert not s.is_open(dt.datetime(2025, 1, 12, 11, 0, tzinfo=UTC))  # Sunday is a closed date
    assert oh.parse_hours("fri-mon 08:00-09:00") == [
        (4, 480, 540),
        (5, 480, 540),
        (6, 480, 540),
        (0, 480, 540),
    ]
    with pytest.raises(ValueError):
        oh.parse_hours("weekdays 9-5")


def test_language_choice(oh: ModuleType) -> None:
    assert oh.pick_language("de-AT", REPLIES, "en") == "de"
    assert oh.pick_language("DE", REPLIES, "en") == "de"
    assert oh.pick_language("fr", REPLIES, "en") == "en"
    assert oh.pick_language(None, REPLIES, "de") == "de"


def options(hours: list[str], **extra: Any) -> dict[str, Any]:
    base = {
        "counsellors": ["bob@localhost"],
        "timezone": "Europe/Berlin",
        "hours": hours,
        "replies": REPLIES,
        "default_language": "en",
    }
    return {**base, **extra}


async def send(client: Any, to: str, body: str, lang: str | None = None) -> None:
    msg = client.make_message(mto=to, mbody=body, mtype="chat")
    if lang:
        msg["lang"] = lang
    msg.send()


async def no_message(client: Any, wait: float = 0.4) -> None:
    await asyncio.sleep(wait)
    assert client.messages.empty(), client.messages.get_nowait()


async def test_outside_hours_each_sender_gets_one_marked_reply_in_their_language(tmp_path: Path) -> None:
    enabled = ["ping", "office_hours"]
    cfg = ConfigFile(tmp_path, tmp_path, {"plugins": {"enabled": enabled, "office_hours": options([])}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        carol = await connect(srv, "carol", get_roster=False, send_presence=False)
        try:
            await send(alice, "bob@localhost/test", "Hallo, ist jemand da?", lang="de")
            reply = await alice.next_message()
            assert str(reply["from"]) == "bob@localhost"
            assert reply["body"] == "[Automatische Antwort] Wir sind gerade nicht da."
            assert reply["lang"] == "de" and reply.xml.find(MARK) is not None
            assert (await bob.next_message())["body"] == "Hallo, ist jemand da?"  # delivered all the same

            await send(alice, "bob@localhost/test", "noch eine Frage")  # same closed period: no second reply
            assert (await bob.next_message())["body"] == "noch eine Frage"
            await no_message(alice)

            await send(carol, "bob@localhost/test", "hello?", lang="en-GB")
            assert (await carol.next_message())["body"] == "[Automatic reply] We are closed."

            await send(alice, "carol@localhost/test", "not a counsellor")  # no reply
            await carol.next_message()
            await no_message(alice)

            # the reply marker prevents loops: a marked message gets no reply
            msg = carol.make_message(mto="bob@localhost/test", mbody="auto", mtype="chat")
            msg.append(ET.Element(MARK))
            msg.send()
            await bob.next_message()

            # who was answered survives a reload of the plugin (state handover)
            assert (await srv.app.reload("office_hours")).ok
            await send(alice, "bob@localhost/test", "after the reload")
            await bob.next_message()
            await no_message(alice)
            assert srv.app.ctx.exports["office_hours"]["stats"]["replies"] == 2
        finally:
            await disconnect(alice, bob, carol)


async def test_no_reply_during_office_hours_and_unmarked_when_configured(tmp_path: Path) -> None:
    enabled = ["ping", "office_hours"]
    cfg = ConfigFile(
        tmp_path,
        tmp_path,
        {"plugins": {"enabled": enabled, "office_hours": options(["mon-sun 00:00-24:00"])}},
    )
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            await send(alice, "bob@localhost/test", "open?")
            await bob.next_message()
            await no_message(alice)

            # closed from now on, replies unmarked: a config reload applies both
            cfg.write({"plugins": {"enabled": enabled, "office_hours": options([], mark=False)}})
            report = await srv.app.reload()
            assert report.ok and report.plugins == ["office_hours"]
            await send(alice, "bob@localhost/test", "closed?")
            reply = await alice.next_message()
            assert reply["body"] == "We are closed." and reply.xml.find(MARK) is None
        finally:
            await disconnect(alice, bob)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"timezone": "Mars/Olympus"}, "plugins.office_hours.timezone: unknown time zone 'Mars/Olympus'"),
        ({"hours": ["mon-fri 09:00-17:00", "weekends 10-12"]}, "plugins.office_hours.hours[1]: "),
        ({"counsellors": ["bob@localhost/phone"]}, "plugins.office_hours.counsellors[0]: must be a bare JID"),
        ({"default_language": "fr"}, "plugins.office_hours.replies: needs a text for default_language 'fr'"),
    ],
)
async def test_invalid_options_name_their_key(tmp_path: Path, bad: dict[str, Any], error: str) -> None:
    enabled = ["ping", "office_hours"]
    cfg = ConfigFile(tmp_path, tmp_path, {"plugins": {"enabled": enabled, "office_hours": options([])}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        cfg.write({"plugins": {"enabled": enabled, "office_hours": {**options([]), **bad}}})
        report = await srv.app.reload()
        assert not report.ok and report.error.startswith(error), report.error
