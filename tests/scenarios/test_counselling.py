"""The counselling service end to end: real slixmpp clients, counsellors and people asking for help."""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from clients import Client, connect, disconnect
from harness import RunningServer, running_server

NS = "urn:mbeon:counselling:0"
COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
SERVICE = "counselling.localhost"
PLUGINS = ["ping", "disco", "roster", "presence", "offline", "adhoc", "counselling"]
COUNSELLORS: list[dict[str, Any]] = [
    {"jid": "anna@localhost", "languages": ["en", "de"], "capacity": 2},
    {"jid": "ben@localhost", "languages": ["en"], "capacity": 1},
    {"jid": "chloe@localhost", "languages": ["de", "fr"], "capacity": 1},
]
USERS = {name: f"{name}-secret-1" for name in ["anna", "ben", "chloe"] + [f"kid{i}" for i in range(10)]}


def overrides(**options: Any) -> dict[str, Any]:
    counselling = {
        "topics": ["general", "school", "family"],
        "languages": ["en", "de", "fr"],
        "counsellors": COUNSELLORS,
        "grace_period": 0.3,
        "offer_timeout": 5.0,
        **options,
    }
    return {"plugins": {"enabled": PLUGINS, "counselling": counselling}}


@contextlib.asynccontextmanager
async def server(tmp_path: Path, **options: Any) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, overrides(**options), users=USERS) as srv:
        yield srv


def payload(msg: Any, name: str) -> ET.Element | None:
    return msg.xml.find(f"{{{NS}}}{name}")  # type: ignore[no-any-return]


async def next_payload(client: Client, name: str, timeout: float = 10.0, **attrs: str) -> ET.Element:
    """The next message carrying ``<name xmlns=urn:mbeon:counselling:0>`` with these attributes."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.messages.get()
            el = payload(msg, name)
            if el is not None and all(el.get(k) == v for k, v in attrs.items()):
                return el


async def next_error(client: Client, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.messages.get()
            if msg["type"] == "error":
                return msg


def say(client: Client, body: str, to: str = SERVICE) -> None:
    client.send_message(mto=to, mbody=body, mtype="chat")


async def command(
    client: Client,
    node: str,
    fields: dict[str, str] | None = None,
    sessionid: str | None = None,
    action: str = "execute",
) -> ET.Element:
    """One step of an ad-hoc command at the service; returns the <command/> of the result."""
    iq = client.make_iq_set(ito=SERVICE)
    cmd = ET.Element(f"{{{COMMANDS}}}command", node=node, action=action)
    if sessionid:
        cmd.set("sessionid", sessionid)
    if fields is not None:
        x = ET.SubElement(cmd, f"{{{DATA}}}x", type="submit")
        for var, value in fields.items():
            ET.SubElement(ET.SubElement(x, f"{{{DATA}}}field", var=var), f"{{{DATA}}}value").text = value
    iq.append(cmd)
    result = await iq.send(timeout=10)
    return result.xml.find(f"{{{COMMANDS}}}command")  # type: ignore[no-any-return]


async def error_of(awaitable: Any) -> tuple[str, str]:
    with pytest.raises(IqError) as exc:
        await awaitable
    return str(exc.value.iq["error"]["condition"]), str(exc.value.iq["error"]["text"])


def form_values(cmd: ET.Element) -> dict[str, str]:
    x = cmd.find(f"{{{DATA}}}x")
    assert x is not None
    return {f.get("var", ""): f.findtext(f"{{{DATA}}}value") or "" for f in x.findall(f"{{{DATA}}}field")}


class CounsellorBot:
    """A counsellor who accepts every offer and closes each session after ``hold`` seconds (None: never)."""

    def __init__(self, client: Client, capacity: int, hold: float | None = None, auto: bool = True) -> None:
        self.client = client
        self.jid = str(client.boundjid.bare)
        self.capacity = capacity
        self.hold = hold
        self.auto = auto
        self.active: set[str] = set()
        self.most = 0
        self.sessions: list[ET.Element] = []
        self.offers: list[ET.Element] = []
        self.started = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.client.messages.get()
            offer = payload(msg, "offer")
            if offer is not None:
                self.offers.append(offer)
                if self.auto:
                    say(self.client, f"accept {offer.get('request')}")
            session = payload(msg, "session")
            if session is not None and session.get("counsellor") == self.jid:
                sid = session.get("id", "")
                if session.get("state") == "active" and sid not in self.active:
                    self.active.add(sid)
                    self.most = max(self.most, len(self.active))
                    self.sessions.append(session)
                    self.started.set()
                    if self.hold is not None:
                        asyncio.get_running_loop().call_later(self.hold, say, self.client, f"close {sid}")
                elif session.get("state") == "closed":
                    self.active.discard(sid)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def lifecycle(srv: RunningServer) -> Any:
    return srv.app.ctx.router.components[SERVICE].lc


async def test_ten_people_are_served_in_order_within_capacity(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        anna, ben, chloe = [await connect(srv, n) for n in ("anna", "ben", "chloe")]
        bots = [CounsellorBot(anna, 2, 0.3), CounsellorBot(ben, 1, 0.3), CounsellorBot(chloe, 1, 0.3)]
        kids = [await connect(srv, f"kid{i}") for i in range(10)]
        languages = ["en", "de", "en", "fr", "en", "de", "en", "fr", "en", "en"]
        try:
            # Everyone asks at once: English speakers by writing to the service (default topic and
            # language), the others with the request-help command and its form.
            async def ask(kid: Client, language: str) -> str:
                if language == "en":
                    say(kid, "Hi, I need someone to talk to")
                    queued = await next_payload(kid, "request", state="waiting")
                    return queued.get("id", "")
                if language == "de":  # two steps: get the form, then submit it
                    first = await command(kid, "request-help")
                    assert first.get("status") == "executing"
                    assert "topic" in form_values(first) and "language" in form_values(first)
                    fields = {"topic": "family", "language": "de", "message": "Hallo"}
                    done = await command(kid, "request-help", fields, first.get("sessionid"), "complete")
                else:  # one step: the form submitted with the first execute
                    done = await command(kid, "request-help", {"topic": "school", "language": "fr"})
                assert done.get("status") == "completed"
                values = form_values(done)
                assert int(values["position"]) >= 1
                return values["request"]

            request_ids = await asyncio.gather(
                *(ask(k, lang) for k, lang in zip(kids, languages, strict=True))
            )
            sessions = await asyncio.gather(*(next_payload(k, "session", 20, state="active") for k in kids))
            for kid, request_id, session in zip(kids, request_ids, sessions, strict=True):
                assert session.get("request") == request_id
                assert session.get("client") == str(kid.boundjid.bare)
            await asyncio.gather(*(next_payload(k, "session", 20, state="closed") for k in kids))

            for bot in bots:
                assert bot.most <= bot.capacity, f"{bot.jid} had {bot.most} sessions at once"
            counsellor_of = {s.get("request"): s.get("counsellor") for s in sessions}
            for request_id, language in zip(request_ids, languages, strict=True):
                assert language in next(
                    c["languages"] for c in COUNSELLORS if c["jid"] == counsellor_of[request_id]
                )
            # Served in order: within one language, requests were offered in the order they were made.
            lc = lifecycle(srv)
            first_offer = {}
            for request_id in request_ids:
                history = await lc.store.history(request_id)
                first_offer[request_id] = next(e.id for e in history if e.event == "offered")
            for language in ("en", "de", "fr"):
                mine = sorted(r for r, lang in zip(request_ids, languages, strict=True) if lang == language)
                assert [first_offer[r] for r in mine] == sorted(first_offer[r] for r in mine)
            assert lc.state.requests == {} and lc.state.sessions == {}
        finally:
            for bot in bots:
                await bot.stop()
            await disconnect(anna, ben, chloe, *kids)


async def test_a_counsellor_who_disconnects_has_the_session_requeued_and_reassigned(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        anna = await connect(srv, "anna")
        anna_bot = CounsellorBot(anna, 2)
        kid = await connect(srv, "kid0")
        ben = None
        try:
            say(kid, "Can someone help me?")
            first = await next_payload(kid, "session", state="active")
            assert first.get("counsellor") == "anna@localhost"
            ben = await connect(srv, "ben")
            ben_bot = CounsellorBot(ben, 1)
            await anna_bot.stop()
            await disconnect(anna)

            requeued = await next_payload(kid, "request", requeued="true")
            assert requeued.get("position") == "1"
            second = await next_payload(kid, "session", state="active")
            assert second.get("counsellor") == "ben@localhost"
            assert second.get("request") == first.get("request") and second.get("id") != first.get("id")
            events = [e.event for e in await lifecycle(srv).store.history(first.get("request"))]
            assert events == ["offered", "accepted", "requeued", "offered", "accepted"]
            await ben_bot.stop()
        finally:
            await disconnect(kid, *([ben] if ben else []))


async def test_a_transfer_needs_the_consent_of_the_receiving_counsellor(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        anna = await connect(srv, "anna")
        anna_bot = CounsellorBot(anna, 2)
        kid = await connect(srv, "kid0")
        ben = await connect(srv, "ben")
        ben_bot = CounsellorBot(ben, 1, auto=False)
        try:
            # ben is busy: only anna gets the request
            ben.send_presence(pshow="dnd")
            await asyncio.sleep(0.2)
            say(kid, "hello")
            session = await next_payload(kid, "session", state="active")
            assert session.get("counsellor") == "anna@localhost"
            ben.send_presence()
            await asyncio.sleep(0.2)

            form = await command(anna, "transfer")
            assert form.get("status") == "executing"
            done = await command(
                anna,
                "transfer",
                {"session": session.get("id", ""), "counsellor": "ben@localhost"},
                form.get("sessionid"),
                "complete",
            )
            assert done.get("status") == "completed"
            for _ in range(50):
                if ben_bot.offers:
                    break
                await asyncio.sleep(0.1)
            (offer,) = ben_bot.offers
            assert offer.get("kind") == "transfer" and offer.get("session") == session.get("id")
            assert offer.get("from") == "anna@localhost"
            # until ben says yes, nothing changes
            assert lifecycle(srv).state.sessions[session.get("id")].counsellor == "anna@localhost"
            done = await command(ben, "accept", {"request": offer.get("request", "")})
            assert done.get("status") == "completed"

            moved = await next_payload(kid, "session", state="active")
            assert moved.get("counsellor") == "ben@localhost" and moved.get("id") == session.get("id")
            await asyncio.wait_for(ben_bot.started.wait(), 5)
            say(kid, "close")
            await next_payload(kid, "session", state="closed", by="kid0@localhost")
        finally:
            await anna_bot.stop()
            await ben_bot.stop()
            await disconnect(anna, ben, kid)


async def test_the_queue_survives_a_server_restart_in_order(tmp_path: Path) -> None:
    kids = ["kid3", "kid1", "kid2"]
    async with server(tmp_path) as srv:
        clients = [await connect(srv, k) for k in kids]
        ids: list[str] = []
        for i, client in enumerate(clients):
            say(client, f"help {i}")
            queued = await next_payload(client, "request", state="waiting")
            assert queued.get("position") == str(i + 1)
            ids.append(queued.get("id", ""))
        await disconnect(*clients)

    async with server(tmp_path) as srv:
        lc = lifecycle(srv)
        assert list(lc.positions()) == ids
        kid = await connect(srv, "kid1")
        try:
            say(kid, "me again")  # still in the queue: a second request is refused
            refused = await next_error(kid)
            assert refused["error"]["condition"] == "conflict" and ids[1][-8:] in refused["error"]["text"]
            anna = await connect(srv, "anna")
            anna_bot = CounsellorBot(anna, 2, auto=False)
            for _ in range(50):
                if len(anna_bot.offers) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [o.get("request") for o in anna_bot.offers] == ids[:2]
            await anna_bot.stop()
            await disconnect(anna)
        finally:
            await disconnect(kid)


async def test_bad_input_team_view_disco_and_metrics(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        anna, kid, other = [await connect(srv, n) for n in ("anna", "kid0", "kid1")]
        try:
            # Bad input: each a clear error, nothing changes.
            condition, text = await error_of(
                command(kid, "request-help", {"topic": "cooking", "language": "en"})
            )
            assert condition == "bad-request" and "cooking" in text
            condition, _ = await error_of(command(kid, "request-help", {"topic": "school", "language": "xx"}))
            assert condition == "bad-request"
            condition, _ = await error_of(command(kid, "queue"))
            assert condition == "forbidden"
            say(kid, "accept 12345678")
            assert (await next_error(kid))["error"]["condition"] == "forbidden"
            lc = lifecycle(srv)
            assert lc.state.requests == {}

            anna.send_presence(pshow="away")  # away: no offers, but she may look and pick
            await asyncio.sleep(0.2)
            done = await command(
                kid, "request-help", {"topic": "school", "language": "en", "message": "exam"}
            )
            request_id = form_values(done)["request"]
            condition, text = await error_of(
                command(kid, "request-help", {"topic": "school", "language": "en"})
            )
            assert condition == "conflict" and request_id[-8:] in text
            assert len(lc.state.requests) == 1 and lc.state.offers == {}

            # The team view, for counsellors only.
            table = (await command(anna, "queue")).find(f"{{{DATA}}}x")
            assert table is not None
            items = table.findall(f"{{{DATA}}}item")
            assert len(items) == 1
            assert {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in items[0]}["id"] == request_id
            team = (await command(anna, "team")).find(f"{{{DATA}}}x")
            assert team is not None
            rows = [
                {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in i}
                for i in team.findall(f"{{{DATA}}}item")
            ]
            assert {r["jid"]: r["status"] for r in rows} == {
                "anna@localhost": "busy/away",
                "ben@localhost": "offline",
                "chloe@localhost": "offline",
            }

            # Disco: counsellors see their commands, others only theirs.
            disco = anna.plugin["xep_0030"]
            info = (await disco.get_info(jid=SERVICE, cached=False))["disco_info"]
            assert ("component", "generic") in {(c, t) for c, t, _l, _n in info["identities"]}
            assert {COMMANDS, NS} <= set(info["features"])
            mine = (await disco.get_items(jid=SERVICE, node=COMMANDS))["disco_items"]
            theirs = (await kid.plugin["xep_0030"].get_items(jid=SERVICE, node=COMMANDS))["disco_items"]
            assert {n for _j, n, _name in mine["items"]} >= {"accept", "queue", "team", "request-help"}
            assert {n for _j, n, _name in theirs["items"]} == {"request-help", "cancel-request", "close"}

            # A counsellor picks by hand; someone else cannot take it any more.
            done = await command(anna, "accept", {"request": request_id[-8:]})
            assert done.get("status") == "completed"
            await next_payload(kid, "session", state="active", counsellor="anna@localhost")
            condition, text = await error_of(command(anna, "accept", {"request": request_id}))
            assert condition == "item-not-found" or "taken" in text

            metrics = srv.app.metrics.render().decode()
            assert "mbeon_counselling_queue_length 0.0" in metrics
            assert 'mbeon_counselling_wait_seconds_bucket{le="5.0"} 1.0' in metrics
            condition, _ = await error_of(command(other, "cancel-request"))
            assert condition == "item-not-found"
        finally:
            await disconnect(anna, kid, other)


async def test_a_plugin_reload_keeps_the_queue_and_the_pending_offers(tmp_path: Path) -> None:
    async with server(tmp_path) as srv:
        anna, kid, other = [await connect(srv, n) for n in ("anna", "kid0", "kid1")]
        anna_bot = CounsellorBot(anna, 2, auto=False)
        try:
            say(kid, "hello")
            say(other, "hello too")
            for _ in range(50):
                if len(anna_bot.offers) == 2:
                    break
                await asyncio.sleep(0.1)
            before = lifecycle(srv)
            waiting = list(before.positions())
            assert len(waiting) == 2 and set(before.state.offers) == set(waiting)

            await srv.app.plugins.reload(["counselling"])
            after = lifecycle(srv)
            assert after is not before
            assert list(after.positions()) == waiting and set(after.state.offers) == set(waiting)
            say(anna, f"accept {waiting[0][-8:]}")
            session = await next_payload(kid, "session", state="active")
            assert session.get("counsellor") == "anna@localhost"
            assert list(after.positions()) == waiting[1:]
        finally:
            await anna_bot.stop()
            await disconnect(anna, kid, other)


async def test_admins_keep_counsellors_in_the_database(tmp_path: Path) -> None:
    settings = {**overrides(), "server": {"admins": ["kid9@localhost"]}}
    async with running_server(tmp_path, settings, users=USERS) as srv:
        admin, kid, newcomer = [await connect(srv, n) for n in ("kid9", "kid0", "kid5")]
        try:
            condition, _ = await error_of(command(kid, "counsellor-set", {"jid": "kid5@localhost"}))
            assert condition == "forbidden"
            form = await command(admin, "counsellor-set")
            assert {"jid", "languages", "topics", "capacity"} <= set(form_values(form))
            condition, text = await error_of(
                command(
                    admin, "counsellor-set", {"jid": "kid5@localhost", "languages": "tlh", "capacity": "1"}
                )
            )
            assert condition == "bad-request" and "tlh" in text
            done = await command(admin, "counsellor-set", {"jid": "kid5@localhost", "languages": "en"})
            assert done.get("status") == "completed"
            condition, _ = await error_of(command(admin, "counsellor-remove", {"jid": "anna@localhost"}))
            assert condition == "not-allowed"  # configured in the file, changed there

            newcomer.send_presence()  # becomes available again: now as a counsellor
            say(kid, "hello")
            offer = await next_payload(newcomer, "offer")
            assert offer.get("language") == "en"
        finally:
            await disconnect(admin, kid, newcomer)

    async with running_server(tmp_path, settings, users=USERS) as srv:
        conf = lifecycle(srv).state.counsellors["kid5@localhost"]
        assert (conf.source, sorted(conf.languages), conf.capacity) == ("database", ["en"], 1)
        admin = await connect(srv, "kid9")
        try:
            await command(admin, "counsellor-remove", {"jid": "kid5@localhost"})
            assert "kid5@localhost" not in lifecycle(srv).state.counsellors
        finally:
            await disconnect(admin)
