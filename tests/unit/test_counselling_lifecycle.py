"""The counselling lifecycle without a network: a SQLite store, recorded messages, scripted presence."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mbeon_chat.features.counselling import Options, counsellor_from_options
from mbeon_chat.features.counselling.lifecycle import Lifecycle
from mbeon_chat.features.counselling.state import State
from mbeon_chat.features.counselling.store import CounsellingStore
from mbeon_chat.storage import migrate
from mbeon_chat.storage.database import Database
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import BODY

NS = "urn:mbeon:counselling:0"
SERVICE = JID(None, "counselling.example.org", None)
COUNSELLORS = (
    {"jid": "anna@example.org", "languages": ["en", "de"], "capacity": 2},
    {"jid": "ben@example.org", "languages": ["en"], "topics": ["school"], "capacity": 1},
    {"jid": "chloe@example.org", "languages": ["fr"], "capacity": 1},
)


class World:
    """Recorded outgoing messages and a presence table the test sets."""

    def __init__(self, lc: Lifecycle, db: Database) -> None:
        self.lc = lc
        self.db = db
        self.sent: list[Element] = []
        self.online: dict[str, tuple[bool, bool]] = {}

    async def send(self, el: Element) -> None:
        self.sent.append(el)

    def availability(self, jid: str) -> tuple[bool, bool]:
        return self.online.get(jid, (False, False))

    def to(self, jid: str) -> list[Element]:
        return [m for m in self.sent if m.get("to") == jid]

    def payloads(self, jid: str, name: str) -> list[Element]:
        return [c for m in self.to(jid) for c in m.elements() if c.tag == f"{{{NS}}}{name}"]

    def bodies(self, jid: str) -> list[str]:
        return [m.findtext(BODY) or "" for m in self.to(jid)]


def options(**kw: Any) -> Options:
    base = Options(
        topics=("general", "school", "family"), languages=("en", "de", "fr"), counsellors=COUNSELLORS
    )
    return dataclasses.replace(base, **kw)


async def make_world(url: str, opts: Options) -> World:
    db = Database(url)
    world: World
    lc = Lifecycle(
        SERVICE, opts, CounsellingStore(db), lambda el: world.send(el), lambda j: world.availability(j)
    )
    world = World(lc, db)
    for i, entry in enumerate(opts.counsellors):
        conf = counsellor_from_options(entry, opts, f"counsellors[{i}]")
        lc.state.counsellors[conf.jid] = conf
    await lc.load()
    return world


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await migrate.upgrade(url, lambda _: None)
    return url


@pytest.fixture
async def world(url: str) -> AsyncIterator[World]:
    w = await make_world(url, options())
    yield w
    w.lc.shutdown()
    await w.db.close()


def everyone_online(w: World) -> None:
    for c in COUNSELLORS:
        w.online[str(c["jid"])] = (True, True)


async def test_a_request_is_queued_then_offered_and_accepted(world: World) -> None:
    r = await world.lc.request_help("zoe@example.org", "school", "en", "I am scared of the exam")
    (queued,) = world.payloads("zoe@example.org", "request")
    assert queued.get("id") == r.id and queued.get("position") == "1"
    assert world.to("anna@example.org") == []  # nobody online: no offer

    everyone_online(world)
    await world.lc.rebalance()
    (offer,) = world.payloads("anna@example.org", "offer")  # anna and ben are both idle; anna sorts first
    assert (
        offer.get("request") == r.id and offer.findtext(f"{{{NS}}}first-message") == "I am scared of the exam"
    )
    assert world.to("ben@example.org") == []

    s = await world.lc.accept("anna@example.org", r.short)
    (to_client,) = world.payloads("zoe@example.org", "session")
    (to_counsellor,) = world.payloads("anna@example.org", "session")
    assert to_client.get("id") == to_counsellor.get("id") == s.id
    assert (
        to_client.get("counsellor") == "anna@example.org" and to_counsellor.get("client") == "zoe@example.org"
    )
    assert (await world.lc.store.active_sessions())[0].id == s.id


async def test_bad_input_is_refused_and_changes_nothing(world: World) -> None:
    everyone_online(world)
    lc = world.lc
    with pytest.raises(StanzaError) as bad_topic:
        await lc.request_help("zoe@example.org", "cooking", "en", None)
    assert bad_topic.value.condition is StanzaCondition.BAD_REQUEST and "cooking" in (
        bad_topic.value.text or ""
    )
    with pytest.raises(StanzaError) as bad_language:
        await lc.request_help("zoe@example.org", "school", "xx", None)
    assert bad_language.value.condition is StanzaCondition.BAD_REQUEST
    assert lc.state.requests == {} and world.sent == []

    r = await lc.request_help("zoe@example.org", None, None, "hi")
    assert (r.topic, r.language) == ("general", "en")
    before = len(world.sent)
    with pytest.raises(StanzaError) as double:
        await lc.request_help("zoe@example.org", "school", "en", "again")
    assert double.value.condition is StanzaCondition.CONFLICT and r.short in (double.value.text or "")
    assert len(lc.state.requests) == 1 and len(world.sent) == before

    with pytest.raises(StanzaError) as not_offered:
        await lc.decline("chloe@example.org", r.id)
    assert not_offered.value.condition is StanzaCondition.ITEM_NOT_FOUND
    offered_to = lc.state.offers[r.id].counsellor
    other = "ben@example.org" if offered_to == "anna@example.org" else "anna@example.org"
    with pytest.raises(StanzaError) as someone_elses:
        await lc.accept(other, r.id)
    assert someone_elses.value.condition is StanzaCondition.CONFLICT
    await lc.accept(offered_to, r.id)
    with pytest.raises(StanzaError) as taken:
        await lc.accept(other, r.id)
    assert taken.value.condition is StanzaCondition.CONFLICT and "already been taken" in (
        taken.value.text or ""
    )
    with pytest.raises(StanzaError) as not_found:
        await lc.accept(other, "nonsense")
    assert not_found.value.condition is StanzaCondition.ITEM_NOT_FOUND


async def test_decline_and_timeout_move_the_request_on(url: str) -> None:
    w = await make_world(url, options(offer_timeout=0.1))
    try:
        w.online = {"anna@example.org": (True, True), "ben@example.org": (True, True)}
        r = await w.lc.request_help("zoe@example.org", "school", "en", None)
        assert w.lc.state.offers[r.id].counsellor == "anna@example.org"
        await w.lc.decline("anna@example.org", r.short)
        assert w.lc.state.offers[r.id].counsellor == "ben@example.org"
        await asyncio.sleep(0.3)  # ben lets it expire; nobody else speaks English: it waits
        assert r.id not in w.lc.state.offers
        assert w.lc.state.requests[r.id].declined_by == {"anna@example.org", "ben@example.org"}
        assert any("expired" in b for b in w.bodies("ben@example.org"))
        events = [(e.counsellor, e.event) for e in await w.lc.store.history(r.id)]
        assert events == [
            ("anna@example.org", "offered"),
            ("anna@example.org", "declined"),
            ("ben@example.org", "offered"),
            ("ben@example.org", "expired"),
        ]
        s = await w.lc.accept("anna@example.org", r.id)  # changed her mind: picks it from the queue
        assert s.counsellor == "anna@example.org"
    finally:
        w.lc.shutdown()
        await w.db.close()


async def test_capacity_language_and_order_with_many_requests(world: World) -> None:
    everyone_online(world)
    lc = world.lc
    clients = [f"c{i}@example.org" for i in range(6)]
    for c in clients:
        await lc.request_help(c, "general", "en", None)
    # anna (2) and ben (school only) => only anna takes "general": two offers, in queue order
    offered = sorted(lc.state.offers.values(), key=lambda o: lc.state.requests[o.request_id].created_at)
    assert [lc.state.requests[o.request_id].client for o in offered] == clients[:2]
    assert {o.counsellor for o in offered} == {"anna@example.org"}
    # positions tell everyone where they are
    assert [p.get("position") for p in world.payloads(clients[5], "request")] == ["6"]
    for o in offered:
        await lc.accept("anna@example.org", o.request_id)
    first = next(iter(lc.state.sessions.values()))
    await lc.close("anna@example.org", first.id)
    third = lc.state.open_request_of(clients[2])
    assert third is not None and list(lc.state.offers) == [third.id]
    # c3 was at position 4, and is at 2 now that two were served (c2 waits for anna's answer)
    assert world.payloads(clients[3], "request")[-1].get("position") == "2"
    closed = world.payloads(clients[0], "session")[-1]
    assert closed.get("state") == "closed" and closed.get("by") == "anna@example.org"


async def test_transfer_needs_the_consent_of_the_receiving_counsellor(world: World) -> None:
    everyone_online(world)
    lc = world.lc
    r = await lc.request_help("zoe@example.org", "school", "en", None)
    s = await lc.accept("anna@example.org", r.id)
    with pytest.raises(StanzaError) as not_yours:
        await lc.transfer("ben@example.org", s.id, "anna@example.org")
    assert not_yours.value.condition is StanzaCondition.FORBIDDEN
    with pytest.raises(StanzaError) as wrong_language:
        await lc.transfer("anna@example.org", s.id, "chloe@example.org")
    assert wrong_language.value.condition is StanzaCondition.NOT_ACCEPTABLE
    with pytest.raises(StanzaError) as stranger:
        await lc.transfer("anna@example.org", s.id, "zoe@example.org")
    assert stranger.value.condition is StanzaCondition.ITEM_NOT_FOUND

    await lc.transfer("anna@example.org", s.short, "ben@example.org")
    (offer,) = world.payloads("ben@example.org", "offer")
    assert offer.get("kind") == "transfer" and offer.get("session") == s.id
    await lc.decline("ben@example.org", r.id)
    assert lc.state.sessions[s.id].counsellor == "anna@example.org"
    assert "declined the transfer" in world.bodies("anna@example.org")[-1]

    await lc.transfer("anna@example.org", s.short, "ben@example.org")
    await lc.accept("ben@example.org", r.short)
    assert lc.state.sessions[s.id].counsellor == "ben@example.org"
    assert world.payloads("zoe@example.org", "session")[-1].get("counsellor") == "ben@example.org"
    (stored,) = await lc.store.active_sessions()
    assert stored.counsellor == "ben@example.org"


async def test_counsellor_offline_requeues_at_the_head_after_the_grace_period(url: str) -> None:
    w = await make_world(url, options(grace_period=0.1))
    try:
        w.online = {"anna@example.org": (True, True)}
        lc = w.lc
        first = await lc.request_help("zoe@example.org", "general", "en", None)
        await lc.accept("anna@example.org", first.id)
        w.online["anna@example.org"] = (True, False)  # busy: takes nothing new
        later = await lc.request_help("yan@example.org", "general", "en", None)
        assert lc.state.offers == {}

        w.online["anna@example.org"] = (False, False)  # gone, then back within the grace period
        await lc.presence_changed("anna@example.org")
        w.online["anna@example.org"] = (True, False)
        await lc.presence_changed("anna@example.org")
        await asyncio.sleep(0.2)
        assert lc.state.sessions and lc.state.grace == {}

        w.online["anna@example.org"] = (False, False)  # gone for good
        await lc.presence_changed("anna@example.org")
        await asyncio.sleep(0.25)
        assert lc.state.sessions == {}
        assert lc.positions() == {first.id: 1, later.id: 2}
        assert w.payloads("zoe@example.org", "request")[-1].get("requeued") == "true"

        w.online["ben@example.org"] = (True, True)  # ben covers school only; chloe speaks French
        w.online["anna@example.org"] = (True, True)
        await lc.presence_changed("anna@example.org")
        assert lc.state.offers[first.id].counsellor == "anna@example.org"
    finally:
        w.lc.shutdown()
        await w.db.close()


async def test_manual_mode_lets_counsellors_pick_within_their_limits(url: str) -> None:
    w = await make_world(url, options(mode="manual"))
    try:
        w.online = {"anna@example.org": (True, True), "chloe@example.org": (True, True)}
        r = await w.lc.request_help("zoe@example.org", "general", "de", None)
        assert w.lc.state.offers == {}
        with pytest.raises(StanzaError) as language:
            await w.lc.accept("chloe@example.org", r.id)
        assert language.value.condition is StanzaCondition.NOT_ACCEPTABLE
        s = await w.lc.accept("anna@example.org", r.id)
        assert s.counsellor == "anna@example.org"
    finally:
        w.lc.shutdown()
        await w.db.close()


async def test_the_queue_survives_a_restart_in_order_and_a_reload_snapshot(url: str) -> None:
    w = await make_world(url, options())
    requests = [await w.lc.request_help(f"c{i}@example.org", "general", "en", None) for i in range(4)]
    w.online = {"anna@example.org": (True, True)}
    await w.lc.rebalance()
    await w.lc.accept("anna@example.org", requests[0].id)
    snapshot = w.lc.state.snapshot()
    w.lc.shutdown()
    await w.db.close()

    again = await make_world(url, options())
    try:
        assert list(again.lc.positions()) == [r.id for r in requests[1:]]
        assert [s.request_id for s in again.lc.state.sessions.values()] == [requests[0].id]
        assert again.lc.state.grace  # anna is not online in the new world: her session is in its grace period
        restored = State.restore(snapshot)
        assert restored is not None
        assert set(restored.requests) == {r.id for r in requests}
        assert restored.offers.keys() == w.lc.state.offers.keys()
        assert State.restore({"version": 999}) is None
    finally:
        again.lc.shutdown()
        await again.db.close()


async def test_cancel_withdraws_the_request_and_its_offer(world: World) -> None:
    everyone_online(world)
    r = await world.lc.request_help("zoe@example.org", "general", "en", None)
    counsellor = world.lc.state.offers[r.id].counsellor
    await world.lc.cancel("zoe@example.org")
    assert world.lc.state.requests == {} and world.lc.state.offers == {}
    assert world.payloads(counsellor, "offer-withdrawn")[0].get("request") == r.id
    stored = await world.lc.store.get_request(r.id)
    assert stored is not None and stored.state == "canceled"
    with pytest.raises(StanzaError):
        await world.lc.cancel("zoe@example.org")
