"""Stream Management (XEP-0198): acks, and a phone that loses its connection and resumes, losing nothing.

Alice is a hand-driven client (RawClient) where the exact counts matter, and slixmpp with its xep_0198
plugin (which enables SM and resumes on reconnect by itself) where a real client's view matters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from test_stream_raw import SASL, STREAMS, RawClient, ServerClosed

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.storage.api import RosterItem
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.jid import JID

PLUGINS = ["ping", "roster", "presence", "offline", "stream_management"]
SM = f"{{{ns.SM}}}"
STANZA_ERRORS = f"{{{ns.STANZA_ERRORS}}}"
MESSAGE = "{jabber:client}message"
BODY = "{jabber:client}body"


@contextlib.asynccontextmanager
async def sm_server(tmp_path: Path, **options: Any) -> AsyncIterator[RunningServer]:
    overrides = {"plugins": {"enabled": PLUGINS, "stream_management": options}}
    async with running_server(tmp_path, overrides=overrides) as srv:
        yield srv


async def befriend(srv: RunningServer, a: str, b: str) -> None:
    """A mutual presence subscription, written straight into both rosters."""
    roster = srv.app.ctx.storage.roster
    await roster.put_item(a, RosterItem(srv.jid(b), subscription="both"))
    await roster.put_item(b, RosterItem(srv.jid(a), subscription="both"))


async def sm_login(
    srv: RunningServer, user: str, resource: str = "phone", *, resume: bool = True
) -> tuple[RawClient, str]:
    """Log in by hand and enable stream management; returns the client and the resumption id."""
    raw = await RawClient.open(srv)
    await raw.login(user, srv.users[user], resource)
    raw.send(f"<enable xmlns='{ns.SM}' resume='{'true' if resume else 'false'}'/>".encode())
    enabled = await raw.next()
    assert enabled.tag == SM + "enabled", enabled
    return raw, enabled.get("id") or ""


async def authenticate(srv: RunningServer, user: str) -> tuple[RawClient, Element]:
    """A new connection, authenticated, at the point where a client binds or resumes; returns its features."""
    raw = await RawClient.open(srv)
    answer = await raw.auth_plain(user, srv.users[user])
    assert answer.tag == SASL + "success", answer
    raw.restart()
    return raw, await raw.open_stream()


async def resume(srv: RunningServer, user: str, previd: str, h: int) -> tuple[RawClient, Element]:
    raw, features = await authenticate(srv, user)
    assert features.find(SM + "sm") is not None
    raw.send(f"<resume xmlns='{ns.SM}' previd='{previd}' h='{h}'/>".encode())
    return raw, await raw.next()


async def bodies(raw: RawClient, count: int, timeout: float = 10.0) -> list[str]:
    """The bodies of the next ``count`` messages (other stanzas and ack requests skipped)."""
    out: list[str] = []
    while len(out) < count:
        el = await raw.next(timeout)
        if el.tag == MESSAGE and el.findtext(BODY):
            out.append(el.findtext(BODY) or "")
    return out


async def quiet(raw: RawClient, seconds: float = 0.5) -> list[Element]:
    """Whatever arrives within ``seconds``."""
    out: list[Element] = []
    with contextlib.suppress(TimeoutError, ServerClosed):
        while True:
            out.append(await raw.next(seconds))
    return out


def cut(raw: RawClient) -> None:
    """The network goes away: no </stream:stream>, no FIN."""
    raw.writer.transport.abort()


async def settle(*clients: Client) -> None:
    for client in clients:
        await client.plugin["xep_0199"].ping(client.boundjid.domain, timeout=10)


async def hibernating(srv: RunningServer, jid: str) -> None:
    """Wait until the server noticed the cut connection (the session is kept without one)."""
    async with asyncio.timeout(5):
        while True:
            session = next((s for s in srv.app.ctx.registry if str(s.jid) == jid), None)
            if session is not None and type(session.conn).__name__ == "Hibernating":
                return
            await asyncio.sleep(0.02)


# --- acks ---------------------------------------------------------------------------------------------
async def test_stream_management_is_offered_after_authentication_and_enabled_with_a_resumable_id(
    tmp_path: Path,
) -> None:
    async with sm_server(tmp_path, resume_timeout=120) as srv:
        raw, features = await authenticate(srv, "alice")
        assert features.find(SM + "sm") is not None
        raw.send(f"<enable xmlns='{ns.SM}'/>".encode())  # before binding: too early
        failed = await raw.next()
        assert failed.tag == SM + "failed" and failed.find(STANZA_ERRORS + "unexpected-request") is not None
        raw.close()

        raw, previd = await sm_login(srv, "alice")
        other, other_id = await sm_login(srv, "alice", "laptop")
        assert len(previd) >= 24 and previd != other_id
        raw.send(f"<enable xmlns='{ns.SM}' resume='true'/>".encode())  # twice
        again = await raw.next()
        assert again.tag == SM + "failed" and again.find(STANZA_ERRORS + "unexpected-request") is not None
        raw.close(), other.close()

        raw = await RawClient.open(srv)
        await raw.login("alice", srv.users["alice"], "desk")
        raw.send(f"<enable xmlns='{ns.SM}' resume='true' max='30'/>".encode())
        enabled = await raw.next()
        assert (enabled.get("resume"), enabled.get("max")) == ("true", "30")  # the client may ask for less
        raw.close()


async def test_acks_count_the_stanzas_each_side_handled(tmp_path: Path) -> None:
    async with sm_server(tmp_path, ack_every=3) as srv:
        alice, _ = await sm_login(srv, "alice")
        bob = await connect(srv, "bob")
        try:
            for i in range(2):
                alice.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
            alice.send(b"<presence/>")
            alice.send(f"<r xmlns='{ns.SM}'/>".encode())
            answers = [await alice.next() for _ in range(5)]
            # two pongs, own presence, the server's ack request after three stanzas, the answer to ours
            assert [a.local for a in answers] == ["iq", "iq", "presence", "r", "a"]
            assert answers[-1].get("h") == "3"
            alice.send(f"<a xmlns='{ns.SM}' h='3'/>".encode())

            for i in range(3):
                bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody=f"m{i}", mtype="chat")
            got = [await alice.next() for _ in range(4)]
            assert [g.local for g in got] == ["message", "message", "message", "r"]
            alice.send(f"<a xmlns='{ns.SM}' h='6'/>".encode())  # 3 answers + 3 messages
            alice.send(f"<r xmlns='{ns.SM}'/>".encode())
            assert (await alice.next()).get("h") == "3"  # still 3 stanzas from alice

            alice.send(f"<a xmlns='{ns.SM}' h='99'/>".encode())  # more than the server ever sent
            assert await alice.stream_error() == "undefined-condition"
        finally:
            alice.close()
            await disconnect(bob)


async def test_without_resume_a_lost_connection_ends_the_session_and_keeps_unacked_messages(
    tmp_path: Path,
) -> None:
    async with sm_server(tmp_path) as srv:
        alice, previd = await sm_login(srv, "alice", resume=False)
        assert previd == ""
        alice.send(b"<presence/>")
        await alice.next()
        bob = await connect(srv, "bob")
        try:
            bob.send_message(mto=srv.jid("alice"), mbody="unacked", mtype="chat")
            assert await bodies(alice, 1) == ["unacked"]
            cut(alice)  # never acknowledged: stored offline when the session ends
            async with asyncio.timeout(5):
                while await srv.app.ctx.storage.offline.count("alice") == 0:
                    await asyncio.sleep(0.05)
            assert await srv.app.ctx.storage.offline.count("alice") == 1
        finally:
            await disconnect(bob)


# --- resumption ---------------------------------------------------------------------------------------
async def test_a_cut_connection_resumes_and_gets_what_was_sent_meanwhile_exactly_once(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        await befriend(srv, "alice", "bob")
        bob = await connect(srv, "bob")
        alice = await connect(srv, "alice", "phone", plugins=("xep_0198",))
        resumed = asyncio.get_running_loop().create_future()
        alice.add_event_handler("session_resumed", lambda _: resumed.done() or resumed.set_result(True))
        try:
            await bob.next_presence(from_=f"{srv.jid('alice')}/phone")
            bob.send_message(mto=srv.jid("alice"), mbody="before", mtype="chat")
            assert (await alice.next_message())["body"] == "before"
            await settle(alice)

            alice.transport.abort()  # the phone changes networks
            await hibernating(srv, f"{srv.jid('alice')}/phone")
            for text in ("one", "two", "three"):
                bob.send_message(mto=srv.jid("alice"), mbody=text, mtype="chat")
            await settle(bob)
            assert (
                await srv.app.ctx.storage.offline.count("alice") == 0
            )  # queued for the session, not offline

            alice.connect(host="127.0.0.1", port=srv.starttls_port)
            await asyncio.wait_for(resumed, 15)
            got = [(await alice.next_message())["body"] for _ in range(3)]
            assert got == ["one", "two", "three"]
            alice.send_message(mto=srv.jid("bob"), mbody="back", mtype="chat")  # the session works on
            assert (await bob.next_message())["body"] == "back"
            await settle(alice, bob)
            assert alice.messages.empty()  # exactly once: nothing sent again
            while not bob.presences.empty():  # bob never saw alice go away
                assert bob.presences.get_nowait()["type"] != "unavailable"
        finally:
            await disconnect(alice, bob)


async def test_resumption_sends_again_exactly_what_the_client_did_not_acknowledge(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        alice, previd = await sm_login(srv, "alice")
        bob = await connect(srv, "bob")
        try:
            for text in ("a", "b", "c"):
                bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody=text, mtype="chat")
            assert await bodies(alice, 3) == ["a", "b", "c"]
            alice.send(f"<a xmlns='{ns.SM}' h='1'/>".encode())
            alice.send(b"<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")  # handled: h=1
            await alice.next()
            cut(alice)
            await hibernating(srv, f"{srv.jid('alice')}/phone")

            # The client had seen a and b (but acknowledged only a): it resumes with h=2.
            alice, answer = await resume(srv, "alice", previd, 2)
            assert answer.tag == SM + "resumed"
            assert (answer.get("previd"), answer.get("h")) == (previd, "1")
            rest = await quiet(alice)
            assert [el.findtext(BODY) for el in rest if el.tag == MESSAGE] == ["c"]
            alice.send(f"<r xmlns='{ns.SM}'/>".encode())
            assert (await alice.next()).get("h") == "1"  # the count goes on
        finally:
            alice.close()
            await disconnect(bob)


async def test_resume_with_a_wrong_id_fails_and_the_client_binds_a_new_session(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        phone, previd = await sm_login(srv, "alice")
        raw, answer = await resume(srv, "alice", "not-" + previd, 0)
        assert answer.tag == SM + "failed" and answer.find(STANZA_ERRORS + "item-not-found") is not None
        raw.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        bound = await raw.next()
        assert bound.get("type") == "result"

        # bob may not take over alice's session even with the right id
        intruder, answer = await resume(srv, "bob", previd, 0)
        assert answer.tag == SM + "failed"
        phone.send(b"<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await phone.next()).get("id") == "still"
        for c in (phone, raw, intruder):
            c.close()


async def test_after_the_timeout_resume_fails_and_nothing_was_lost(tmp_path: Path) -> None:
    async with sm_server(tmp_path, resume_timeout=1) as srv:
        await befriend(srv, "alice", "bob")
        bob = await connect(srv, "bob")
        alice, previd = await sm_login(srv, "alice")
        try:
            alice.send(b"<presence/>")
            await bob.next_presence(from_=f"{srv.jid('alice')}/phone")
            bob.send_message(mto=srv.jid("alice"), mbody="seen but never acknowledged", mtype="chat")
            assert await bodies(alice, 1) == ["seen but never acknowledged"]
            cut(alice)
            await hibernating(srv, f"{srv.jid('alice')}/phone")
            bob.send_message(mto=srv.jid("alice"), mbody="while away", mtype="chat")
            bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody="to the phone", mtype="chat")
            gone = await bob.next_presence(type_="unavailable", from_=f"{srv.jid('alice')}/phone", timeout=5)
            assert gone is not None  # the session ended when the timeout expired

            alice, answer = await resume(srv, "alice", previd, 1)
            assert answer.tag == SM + "failed" and answer.find(STANZA_ERRORS + "item-not-found") is not None
            alice.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
            assert (await alice.next()).get("type") == "result"
            alice.send(b"<presence/>")
            stored = await bodies(alice, 3)  # offline storage gives them back: none lost
            assert sorted(stored) == sorted(["seen but never acknowledged", "while away", "to the phone"])
            assert bob.messages.empty()  # and no error went back to bob
        finally:
            alice.close()
            await disconnect(bob)


async def test_a_new_session_with_the_same_resource_replaces_a_hibernating_one(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        await befriend(srv, "alice", "bob")
        bob = await connect(srv, "bob")
        alice, previd = await sm_login(srv, "alice")
        try:
            alice.send(b"<presence/>")
            await bob.next_presence(from_=f"{srv.jid('alice')}/phone")
            cut(alice)
            await hibernating(srv, f"{srv.jid('alice')}/phone")
            bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody="queued", mtype="chat")
            await settle(bob)

            fresh = await RawClient.open(srv)
            await fresh.login("alice", srv.users["alice"], "phone")
            await bob.next_presence(type_="unavailable", from_=f"{srv.jid('alice')}/phone")
            fresh.send(b"<presence/>")
            assert await bodies(fresh, 1) == ["queued"]  # stored offline when the old session ended
            late, answer = await resume(srv, "alice", previd, 0)
            assert answer.tag == SM + "failed"
            fresh.close(), late.close()
        finally:
            await disconnect(bob)


async def test_a_clean_close_ends_the_session_at_once(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        await befriend(srv, "alice", "bob")
        bob = await connect(srv, "bob")
        alice, previd = await sm_login(srv, "alice")
        try:
            alice.send(b"<presence/>")
            await bob.next_presence(from_=f"{srv.jid('alice')}/phone")
            alice.send(b"</stream:stream>")
            await bob.next_presence(type_="unavailable", from_=f"{srv.jid('alice')}/phone", timeout=3)
            late, answer = await resume(srv, "alice", previd, 0)
            assert answer.tag == SM + "failed"
            late.close()
        finally:
            alice.close()
            await disconnect(bob)


async def test_an_open_old_connection_is_replaced_by_the_resuming_one(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        old, previd = await sm_login(srv, "alice")
        new, answer = await resume(srv, "alice", previd, 0)  # the server never noticed the old one die
        assert answer.tag == SM + "resumed"
        condition = await old.stream_error()
        assert condition == "conflict"
        new.send(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await new.next()
        assert pong.get("id") == "p" and pong.tag != STREAMS + "error"
        new.close()


async def test_an_unanswered_iq_to_a_session_that_times_out_gets_an_error(tmp_path: Path) -> None:
    async with sm_server(tmp_path, resume_timeout=1) as srv:
        alice, _ = await sm_login(srv, "alice")
        bob = await connect(srv, "bob")
        try:
            cut(alice)
            await hibernating(srv, f"{srv.jid('alice')}/phone")
            iq = bob.make_iq_get(ito=f"{srv.jid('alice')}/phone")
            iq.enable("ping")
            try:
                reply = await iq.send(timeout=5)
            except Exception as exc:  # slixmpp raises IqError for an error reply
                reply = getattr(exc, "iq", None)
            assert reply is not None and reply["type"] == "error"
            assert reply["error"]["condition"] == "service-unavailable"
        finally:
            await disconnect(bob)


async def test_a_reload_keeps_sessions_resumable_and_an_unload_ends_hibernating_ones(tmp_path: Path) -> None:
    async with sm_server(tmp_path) as srv:
        live, _ = await sm_login(srv, "alice", "laptop")
        away, away_id = await sm_login(srv, "alice", "phone")
        cut(away)
        await hibernating(srv, f"{srv.jid('alice')}/phone")
        report = await srv.app.reload("stream_management")
        assert report.ok and "stream_management" in report.plugins
        live.send(f"<r xmlns='{ns.SM}'/>".encode())
        assert (await live.next()).local == "a"  # the new version serves the live stream on
        away, answer = await resume(srv, "alice", away_id, 0)
        assert answer.tag == SM + "resumed"

        cut(away)
        await hibernating(srv, f"{srv.jid('alice')}/phone")
        bob = await connect(srv, "bob")
        try:
            bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody="kept", mtype="chat")
            await settle(bob)
            assert (await srv.app.unload_plugin("stream_management")).ok
            alice_sessions = srv.app.ctx.registry.resources(JID("alice", srv.domain, None))
            assert [s.jid.resource for s in alice_sessions] == ["laptop"]  # the live one stays
            assert await srv.app.ctx.storage.offline.count("alice") == 1  # the hibernating session's queue
        finally:
            live.close()
            await disconnect(bob)


async def test_a_client_that_never_acknowledges_is_closed_at_the_queue_limit_and_loses_nothing(
    tmp_path: Path,
) -> None:
    async with sm_server(tmp_path, max_queue=3) as srv:
        alice, _ = await sm_login(srv, "alice")
        bob = await connect(srv, "bob")
        try:
            for i in range(4):
                bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody=f"m{i}", mtype="chat")
            assert await alice.stream_error() == "policy-violation"
            async with asyncio.timeout(5):
                while await srv.app.ctx.storage.offline.count("alice") < 4:
                    await asyncio.sleep(0.05)
            assert bob.messages.empty()
        finally:
            await disconnect(bob)


async def test_an_ack_request_left_unanswered_drops_the_connection_and_the_session_hibernates(
    tmp_path: Path,
) -> None:
    async with sm_server(tmp_path, ack_every=1, ack_timeout=0.3) as srv:
        alice, previd = await sm_login(srv, "alice")
        alice.send(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert [(await alice.next()).local for _ in range(2)] == ["iq", "r"]  # and alice keeps quiet
        await hibernating(srv, f"{srv.jid('alice')}/phone")
        with contextlib.suppress(ServerClosed, ConnectionError):
            await alice.closed(5)
        alice, answer = await resume(srv, "alice", previd, 1)
        assert answer.tag == SM + "resumed"
        alice.close()
