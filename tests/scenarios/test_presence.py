"""Presence subscriptions and presence broadcast (RFC 6121 sections 3 and 4), with real slixmpp clients.

Clients here answer nothing on their own (``manual``): each subscription stanza in a test is one the
test sends, so the states can be checked step by step against RFC 6121 Appendix A.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from clients import Client, connect, disconnect
from harness import RunningServer, running_server

IM = {"plugins": {"enabled": ["ping", "roster", "presence", "offline"]}}
NICK = "http://jabber.org/protocol/nick"


@contextlib.asynccontextmanager
async def im_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, overrides=IM) as srv:
        yield srv


async def manual(srv: RunningServer, user: str, resource: str = "test", **kw: Any) -> Client:
    client = await connect(srv, user, resource, **kw)
    client.auto_authorize = None
    client.auto_subscribe = False
    return client


def pushes(client: Client) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    client.register_handler(
        Callback("test roster pushes", StanzaPath("iq@type=set/roster"), queue.put_nowait)
    )
    return queue


async def next_item(queue: asyncio.Queue[Any], jid: str) -> Any:
    """The next pushed roster item for ``jid``."""
    while True:
        push = await asyncio.wait_for(queue.get(), 10)
        for item in push.xml.iter("{jabber:iq:roster}item"):
            if item.get("jid") == jid:
                return item


async def settle(*clients: Client) -> None:
    """A round trip to the server for each client: whatever was sent to them before has arrived."""
    for client in clients:
        await client.plugin["xep_0199"].ping(client.boundjid.domain, timeout=10)


def drain(client: Client) -> list[Any]:
    out = []
    while not client.presences.empty():
        out.append(client.presences.get_nowait())
    return out


async def state(srv: RunningServer, user: str, contact: str) -> str | None:
    item = await srv.app.ctx.storage.roster.get_item(user, srv.jid(contact))
    if item is None:
        return None
    s = item.subscription + ("+out" if item.ask_out else "") + ("+in" if item.pending_in else "")
    return s if item.in_roster else f"({s})"


async def befriend(srv: RunningServer, a: Client, b: Client) -> None:
    """The full handshake both ways (RFC 6121 3.1), ending with "both"."""
    for x, y in ((a, b), (b, a)):
        x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
        await y.next_presence(type_="subscribe", from_=str(x.boundjid.bare))
        y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        await x.next_presence(type_="subscribed", from_=str(y.boundjid.bare))
        await x.next_presence(from_=str(y.boundjid))  # y's current presence follows the approval
    await settle(a, b)


async def test_subscription_handshake_ends_with_both_and_presence_flows_both_ways(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice"), await manual(srv, "bob")
        try:
            alice_pushes, bob_pushes = pushes(alice), pushes(bob)
            alice.send_presence(pto=f"{srv.jid('bob')}/test", ptype="subscribe")  # to a full JID: made bare
            item = await next_item(alice_pushes, srv.jid("bob"))
            assert (item.get("subscription"), item.get("ask")) == ("none", "subscribe")
            request = await bob.next_presence(type_="subscribe")
            assert (str(request["from"]), str(request["to"])) == (srv.jid("alice"), srv.jid("bob"))
            assert await state(srv, "bob", "alice") == "(none+in)"  # not in bob's roster yet

            bob.send_presence(pto=srv.jid("alice"), ptype="subscribed")
            assert (await next_item(bob_pushes, srv.jid("alice"))).get("subscription") == "from"
            approval = await alice.next_presence(type_="subscribed")
            assert str(approval["from"]) == srv.jid("bob")  # stamped with the bare JID (3.1.5)
            item = await next_item(alice_pushes, srv.jid("bob"))
            assert (item.get("subscription"), item.get("ask")) == ("to", None)
            assert (await alice.next_presence(from_=str(bob.boundjid)))["type"] == "available"

            bob.send_presence(pto=srv.jid("alice"), ptype="subscribe")
            item = await next_item(bob_pushes, srv.jid("alice"))
            assert (item.get("subscription"), item.get("ask")) == ("from", "subscribe")
            await alice.next_presence(type_="subscribe", from_=srv.jid("bob"))
            alice.send_presence(pto=srv.jid("bob"), ptype="subscribed")
            assert (await next_item(bob_pushes, srv.jid("alice"))).get("subscription") == "both"
            assert (await next_item(alice_pushes, srv.jid("bob"))).get("subscription") == "both"
            assert (await bob.next_presence(from_=str(alice.boundjid)))["type"] == "available"
            assert await state(srv, "alice", "bob") == await state(srv, "bob", "alice") == "both"

            alice.send_presence(pshow="away", pstatus="In a meeting")
            update = await bob.next_presence(from_=str(alice.boundjid))
            assert (update["show"], update["status"]) == ("away", "In a meeting")
            bob.send_presence(pshow="dnd")
            assert (await alice.next_presence(from_=str(bob.boundjid)))["show"] == "dnd"
        finally:
            await disconnect(alice, bob)


async def test_a_request_to_an_offline_contact_waits_until_they_log_in(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice = await manual(srv, "alice")
        try:
            alice_pushes = pushes(alice)
            request = alice.Presence()
            request["to"], request["type"] = srv.jid("bob"), "subscribe"
            request.append(ET.fromstring(f"<nick xmlns='{NICK}'>Alice A.</nick>"))
            request.send()
            await next_item(alice_pushes, srv.jid("bob"))
            await settle(alice)
            assert await state(srv, "bob", "alice") == "(none+in)"
            report = await srv.app.reload("roster")  # and presence, which depends on it: the request survives
            assert report.ok and set(report.plugins) >= {"roster", "presence"}

            for _ in range(2):  # delivered on each login until answered (RFC 6121 3.1.3)
                bob = await manual(srv, "bob")
                got = await bob.next_presence(type_="subscribe")
                assert str(got["from"]) == srv.jid("alice")
                assert got.xml.find(f"{{{NICK}}}nick").text == "Alice A."  # complete stanza kept
                roster = await bob.get_roster()
                assert srv.jid("alice") not in roster["roster"]["items"]  # pending only: not shown
                await disconnect(bob)

            bob = await manual(srv, "bob")
            await bob.next_presence(type_="subscribe")
            bob.send_presence(pto=srv.jid("alice"), ptype="unsubscribed")  # denied
            assert (await alice.next_presence(type_="unsubscribed"))["from"] == srv.jid("bob")
            item = await next_item(alice_pushes, srv.jid("bob"))
            assert (item.get("subscription"), item.get("ask")) == ("none", None)
            assert await state(srv, "bob", "alice") is None
            await disconnect(bob)

            bob = await manual(srv, "bob")
            await settle(bob)
            assert [p["type"] for p in drain(bob) if p["type"] == "subscribe"] == []
            await disconnect(bob)
        finally:
            await disconnect(alice)


async def test_unsubscribe_and_unsubscribed_take_both_directions_back_to_none(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice"), await manual(srv, "bob")
        try:
            await befriend(srv, alice, bob)
            alice_pushes, bob_pushes = pushes(alice), pushes(bob)

            alice.send_presence(pto=srv.jid("bob"), ptype="unsubscribe")  # alice stops receiving bob's
            assert (await next_item(alice_pushes, srv.jid("bob"))).get("subscription") == "from"
            assert (await next_item(bob_pushes, srv.jid("alice"))).get("subscription") == "to"
            await bob.next_presence(type_="unsubscribe", from_=srv.jid("alice"))
            await alice.next_presence(type_="unavailable", from_=str(bob.boundjid))  # 3.3.3

            alice.send_presence(pto=srv.jid("bob"), ptype="unsubscribed")  # and bob alice's
            assert (await next_item(alice_pushes, srv.jid("bob"))).get("subscription") == "none"
            await bob.next_presence(
                type_="unavailable", from_=str(alice.boundjid)
            )  # before the cancel (3.2.2)
            await bob.next_presence(type_="unsubscribed", from_=srv.jid("alice"))
            assert (await next_item(bob_pushes, srv.jid("alice"))).get("subscription") == "none"
            await settle(alice)
            assert await state(srv, "alice", "bob") == await state(srv, "bob", "alice") == "none"

            alice.send_presence(pstatus="nobody sees this")
            await settle(alice, bob)
            assert [p for p in drain(bob) if str(p["from"]) == str(alice.boundjid)] == []
        finally:
            await disconnect(alice, bob)


async def test_a_pre_approved_request_is_answered_at_once(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice"), await manual(srv, "bob")
        try:
            alice_pushes = pushes(alice)
            alice.send_presence(pto=srv.jid("bob"), ptype="subscribed")  # RFC 6121 3.4
            item = await next_item(alice_pushes, srv.jid("bob"))
            assert (item.get("subscription"), item.get("approved")) == ("none", "true")
            await settle(alice, bob)
            assert [p for p in drain(bob) if p["type"] == "subscribed"] == []  # not routed

            bob.send_presence(pto=srv.jid("alice"), ptype="subscribe")
            await bob.next_presence(type_="subscribed", from_=srv.jid("alice"))
            await bob.next_presence(from_=str(alice.boundjid))
            item = await next_item(alice_pushes, srv.jid("bob"))
            assert (item.get("subscription"), item.get("approved")) == ("from", None)
            await settle(alice)
            assert [p for p in drain(alice) if p["type"] == "subscribe"] == []  # not delivered
            assert await state(srv, "bob", "alice") == "to"
        finally:
            await disconnect(alice, bob)


async def test_initial_presence_reaches_contacts_and_own_resources_and_probes(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice", "desk"), await manual(srv, "bob")
        carol = await manual(srv, "carol")  # no subscription with anyone
        try:
            await befriend(srv, alice, bob)
            bob.send_presence(pstatus="Working from home")
            await alice.next_presence(from_=str(bob.boundjid))

            phone = await manual(srv, "alice", "phone", send_presence=False)
            phone.send_presence(ppriority=3)
            assert (await phone.next_presence(from_=str(phone.boundjid)))["priority"] == 3  # echoed
            probed = await phone.next_presence(from_=str(bob.boundjid))  # the probe's answer (4.3.2)
            assert probed["status"] == "Working from home"
            assert (await alice.next_presence(from_=str(phone.boundjid)))["priority"] == 3
            assert (await bob.next_presence(from_=str(phone.boundjid)))["priority"] == 3
            await settle(carol)
            assert [p for p in drain(carol) if p["from"].bare == srv.jid("alice")] == []
            await disconnect(phone)
            await alice.next_presence(type_="unavailable", from_=str(phone.boundjid))
        finally:
            await disconnect(alice, bob, carol)


async def test_unavailable_is_sent_when_a_connection_drops_without_closing_the_stream(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice"), await manual(srv, "bob")
        carol = await manual(srv, "carol")
        try:
            await befriend(srv, alice, bob)
            carol.send_presence(pto=alice.boundjid, pstatus="directed hello")  # no subscription (4.6)
            assert (await alice.next_presence(from_=str(carol.boundjid)))["status"] == "directed hello"

            for dropped in (bob, carol):
                dropped.transport.abort()  # TCP gone, no </stream:stream>, no unavailable presence
                gone = await alice.next_presence(type_="unavailable", from_=str(dropped.boundjid))
                assert gone["from"] == dropped.boundjid
        finally:
            await disconnect(alice, bob, carol)


async def test_presence_for_an_account_that_does_not_exist_is_ignored(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        alice = await manual(srv, "alice")
        try:
            for type_ in ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", None):
                alice.send_presence(pto=f"nobody@{srv.domain}", ptype=type_)
            await settle(alice)
            assert [
                p for p in drain(alice) if p["from"].bare == f"nobody@{srv.domain}"
            ] == []  # RFC 6121 8.5.1
        finally:
            await disconnect(alice)


async def test_a_session_replaced_by_the_same_resource_goes_unavailable_before_the_new_one_appears(
    tmp_path: Path,
) -> None:
    async with im_server(tmp_path) as srv:
        alice, bob = await manual(srv, "alice"), await manual(srv, "bob", "laptop")
        replacement = None
        try:
            await befriend(srv, alice, bob)
            drain(alice)
            replacement = await manual(srv, "bob", "laptop")  # same full JID: the old session gets <conflict/>
            gone = await alice.next_presence(from_=str(bob.boundjid))
            assert gone["type"] == "unavailable"
            back = await alice.next_presence(from_=str(replacement.boundjid))
            assert back["type"] == "available"
        finally:
            await disconnect(alice, bob, *([replacement] if replacement else []))
