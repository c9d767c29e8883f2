"""The counselling policy: pure decisions, checked with examples and with Hypothesis."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mbeon_chat.features.counselling.policy import (
    Counsellor,
    Mode,
    Offer,
    Request,
    can_serve,
    can_take,
    estimate_wait,
    expire_offers,
    is_available,
    loads,
    pick_counsellor,
    plan_offers,
    positions,
    queue_order,
)

LANGS = ("en", "de", "fr")
TOPICS = ("school", "family", "health")


def counsellor(jid: str, langs: str = "en", topics: str = "", capacity: int = 2, **kw: object) -> Counsellor:
    return Counsellor(
        jid,
        frozenset(langs.split()),
        frozenset(topics.split()),
        capacity,
        available=kw.pop("available", True),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def request(rid: str, created: float, lang: str = "en", topic: str = "school", **kw: object) -> Request:
    return Request(rid, topic, lang, created, **kw)  # type: ignore[arg-type]


# --- examples ---------------------------------------------------------------------------------------
def test_presence_away_xa_and_dnd_are_not_available() -> None:
    assert is_available(True, None)
    assert is_available(True, "chat")
    assert not is_available(True, "away")
    assert not is_available(True, "xa")
    assert not is_available(True, "dnd")
    assert not is_available(False, None)


def test_least_loaded_counsellor_wins_then_longest_idle() -> None:
    a = counsellor("a@x", load=1, last_assigned=1.0)
    b = counsellor("b@x", load=0, last_assigned=50.0)
    c = counsellor("c@x", load=0, last_assigned=10.0)
    assert pick_counsellor([a, b, c], request("r1", 0)) == c


def test_language_and_topic_are_respected() -> None:
    de = counsellor("de@x", "de")
    family = counsellor("fam@x", "en", "family")
    anyone = counsellor("any@x", "en", capacity=1, load=1)
    assert pick_counsellor([de, family, anyone], request("r1", 0, "en", "school")) is None
    assert pick_counsellor([de, family, anyone], request("r2", 0, "en", "family")) == family
    assert pick_counsellor([de, family, anyone], request("r3", 0, "de", "family")) == de


def test_a_counsellor_who_declined_is_skipped() -> None:
    a = counsellor("a@x")
    b = counsellor("b@x", load=1)
    r = request("r1", 0, declined_by=frozenset({"a@x"}))
    assert pick_counsellor([a, b], r) == b


def test_requeued_sessions_go_to_the_head_of_the_queue() -> None:
    old = request("old", 1.0)
    new = request("new", 2.0)
    back = request("back", 5.0, requeued=9.0)
    assert [r.id for r in queue_order([new, old, back])] == ["back", "old", "new"]
    assert positions([new, old, back]) == {"back": 1, "old": 2, "new": 3}


def test_plan_serves_the_queue_in_order_within_capacity() -> None:
    cs = [counsellor("a@x", capacity=1), counsellor("b@x", capacity=2)]
    queue = [request(f"r{i}", float(i)) for i in range(5)]
    plan = plan_offers(cs, queue, now=100.0, timeout=60.0)
    assert [o.request_id for o in plan] == ["r0", "r1", "r2"]
    assert sorted(o.counsellor for o in plan) == ["a@x", "b@x", "b@x"]
    assert all(o.expires == 160.0 for o in plan)


def test_a_request_nobody_can_take_does_not_block_the_queue() -> None:
    cs = [counsellor("a@x", "en")]
    queue = [request("fr", 1.0, "fr"), request("en", 2.0, "en")]
    assert [o.request_id for o in plan_offers(cs, queue, 0.0, 60.0)] == ["en"]


def test_manual_mode_offers_nothing() -> None:
    assert plan_offers([counsellor("a@x")], [request("r", 0)], 0.0, 60.0, Mode.MANUAL) == []


def test_pending_offers_are_not_offered_again() -> None:
    cs = [counsellor("a@x", load=1, capacity=3)]
    pending = [Offer("r0", "a@x", 60.0)]
    plan = plan_offers(cs, [request("r0", 0), request("r1", 1)], 0.0, 60.0, pending=pending)
    assert [o.request_id for o in plan] == ["r1"]


def test_offer_timeout_moves_the_request_to_the_next_counsellor() -> None:
    a, b = counsellor("a@x"), counsellor("b@x", last_assigned=5.0)
    r = request("r", 0)
    (first,) = plan_offers([a, b], [r], now=10.0, timeout=60.0)
    assert first.counsellor == "a@x"
    expired, live = expire_offers([first], now=69.0)
    assert expired == [] and live == [first]
    expired, live = expire_offers([first], now=70.0)
    assert expired == [first] and live == []
    r = replace(r, declined_by=r.declined_by | {first.counsellor})
    (second,) = plan_offers([a, b], [r], now=70.0, timeout=60.0)
    assert second.counsellor == "b@x"
    # Everyone declined: the request waits (a counsellor can still pick it by hand).
    r = replace(r, declined_by=r.declined_by | {"b@x"})
    assert plan_offers([a, b], [r], now=130.0, timeout=60.0) == []
    assert can_take(a, r) is None


def test_can_take_explains_why_not() -> None:
    full = counsellor("a@x", capacity=1, load=1)
    assert "capacity" in (can_take(full, request("r", 0)) or "")
    assert "language" in (can_take(counsellor("b@x", "de"), request("r", 0)) or "")
    assert "topic" in (can_take(counsellor("c@x", "en", "family"), request("r", 0)) or "")


def test_wait_estimate() -> None:
    cs = [counsellor("a@x", capacity=2, load=2), counsellor("b@x", capacity=1, load=0)]
    r = request("r", 0)
    assert estimate_wait(r, 1, cs, 600.0) == 0.0  # b has a free slot
    assert estimate_wait(r, 2, cs, 600.0) == 600.0
    assert estimate_wait(r, 5, cs, 600.0) == 1200.0
    assert estimate_wait(request("r", 0, "fr"), 1, cs, 600.0) is None


def test_loads_count_sessions_and_offers() -> None:
    offers = [Offer("r1", "a@x", 1.0), Offer("r2", "a@x", 1.0), Offer("r3", "ghost@x", 1.0)]
    assert loads(["a@x", "b@x"], {"b@x": 2}, offers) == {"a@x": 2, "b@x": 2}


# --- properties -------------------------------------------------------------------------------------
@st.composite
def counsellors_st(draw: st.DrawFn) -> list[Counsellor]:
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        capacity = draw(st.integers(1, 4))
        out.append(
            Counsellor(
                f"c{i}@x",
                frozenset(draw(st.sets(st.sampled_from(LANGS), min_size=1))),
                frozenset(draw(st.sets(st.sampled_from(TOPICS)))),
                capacity,
                load=draw(st.integers(0, capacity)),
                last_assigned=draw(st.floats(0, 100)),
                available=draw(st.booleans()),
            )
        )
    return out


@st.composite
def queue_st(draw: st.DrawFn) -> list[Request]:
    n = draw(st.integers(0, 15))
    return [
        Request(
            f"r{i}",
            draw(st.sampled_from(TOPICS)),
            draw(st.sampled_from(LANGS)),
            draw(st.floats(0, 100)),
            frozenset(draw(st.sets(st.sampled_from([f"c{j}@x" for j in range(6)]), max_size=2))),
            draw(st.none() | st.floats(0, 100)),
        )
        for i in range(n)
    ]


@settings(max_examples=120, deadline=None)
@given(counsellors_st(), queue_st())
def test_property_plan_is_safe(cs: list[Counsellor], queue: list[Request]) -> None:
    plan = plan_offers(cs, queue, now=200.0, timeout=60.0)
    by_jid = {c.jid: c for c in cs}
    by_id = {r.id: r for r in queue}
    # never a request twice
    assert len({o.request_id for o in plan}) == len(plan)
    # never over capacity, never to someone unavailable
    for jid, c in by_jid.items():
        given_ = sum(1 for o in plan if o.counsellor == jid)
        assert c.load + given_ <= c.capacity
        if given_:
            assert c.available
    for o in plan:
        c, r = by_jid[o.counsellor], by_id[o.request_id]
        # language and topic respected, declines respected
        assert r.language in c.languages
        assert not c.topics or r.topic in c.topics
        assert c.jid not in r.declined_by


@settings(max_examples=120, deadline=None)
@given(counsellors_st(), queue_st())
def test_property_plan_is_fair_and_in_order(cs: list[Counsellor], queue: list[Request]) -> None:
    plan = plan_offers(cs, queue, now=200.0, timeout=60.0)
    planned = {o.request_id: o.counsellor for o in plan}
    current = {c.jid: c for c in cs}
    # Replay the queue: every request either got the fairest eligible counsellor at its turn, or had none.
    for r in queue_order(queue):
        eligible = [c for c in current.values() if can_serve(c, r)]
        if r.id not in planned:
            assert eligible == [], f"{r.id} was skipped although {eligible} could serve it"
            continue
        chosen = current[planned[r.id]]
        assert chosen in eligible
        assert all((chosen.load, chosen.last_assigned) <= (c.load, c.last_assigned) for c in eligible)
        current[chosen.jid] = replace(chosen, load=chosen.load + 1, last_assigned=200.0)


@settings(max_examples=80, deadline=None)
@given(counsellors_st(), queue_st(), st.integers(1, 5))
def test_property_rounds_of_timeouts_never_offer_a_request_twice_to_one_counsellor(
    cs: list[Counsellor], queue: list[Request], rounds: int
) -> None:
    """Offers that all time out: each round moves every request to a counsellor it has not had yet."""
    now = 0.0
    seen: dict[str, set[str]] = {}
    for _ in range(rounds):
        plan = plan_offers(cs, queue, now=now, timeout=10.0)
        now += 10.0
        expired, live = expire_offers(plan, now)
        assert live == []
        declined = {r.id: set(r.declined_by) for r in queue}
        for o in expired:
            assert o.counsellor not in seen.setdefault(o.request_id, set())
            seen[o.request_id].add(o.counsellor)
            declined[o.request_id].add(o.counsellor)
        queue = [replace(r, declined_by=frozenset(declined[r.id])) for r in queue]
