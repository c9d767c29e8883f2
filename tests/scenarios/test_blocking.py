"""Blocking Command (XEP-0191) with real slixmpp clients: alice blocks bob, then forgives him."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.storage.api import RosterItem

BLOCKING = "urn:xmpp:blocking"
CONFIG = {
    "plugins": {"enabled": ["ping", "disco", "roster", "presence", "offline", "carbons", "blocking", "vcard"]}
}


async def login(srv: RunningServer, user: str, resource: str = "test") -> Client:
    return await connect(srv, user, resource, plugins=("xep_0191", "xep_0054"))


async def befriend(srv: RunningServer, a: str, b: str) -> None:
    """A mutual presence subscription, written straight into both rosters."""
    roster = srv.app.ctx.storage.roster
    await roster.put_item(a, RosterItem(srv.jid(b), subscription="both"))
    await roster.put_item(b, RosterItem(srv.jid(a), subscription="both"))


async def raw_iq(client: Client, payload: str) -> object:
    iq = client.make_iq_set()
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=5)


async def error_of(message: object) -> tuple[str, bool]:
    xml = message.xml  # type: ignore[attr-defined]
    blocked = xml.find("{jabber:client}error/{urn:xmpp:blocking:errors}blocked") is not None
    return message["error"]["condition"], blocked  # type: ignore[index]


async def test_blocked_bob_cannot_reach_alice_until_she_unblocks_him(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        alice, other = await login(srv, "alice", "phone"), await login(srv, "alice", "laptop")
        bob = await login(srv, "bob")
        try:
            await bob.plugin["xep_0199"].ping(alice.boundjid, timeout=5)  # reachable before
            assert await other.plugin["xep_0191"].get_blocked_jids() == set()  # the laptop wants pushes
            pushed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            other.add_event_handler("blocked", lambda iq: None if pushed.done() else pushed.set_result(iq))

            await alice.plugin["xep_0191"].block(srv.jid("bob"))

            push = await asyncio.wait_for(pushed, 5)
            assert [str(i["jid"]) for i in push["block"]["items"]] == [srv.jid("bob")]  # type: ignore[index]
            bob.send_message(mto=srv.jid("alice"), mbody="Why don't you answer?", mtype="chat")
            bounce = await bob.next_message()
            assert bounce["type"] == "error" and await error_of(bounce) == ("service-unavailable", False)
            with pytest.raises(IqError) as exc:
                await bob.plugin["xep_0199"].ping(alice.boundjid, timeout=5)
            assert exc.value.iq["error"]["condition"] == "service-unavailable"
            with pytest.raises(IqError) as exc:
                await bob.plugin["xep_0054"].get_vcard(srv.jid("alice"), timeout=5)
            assert exc.value.iq["error"]["condition"] == "service-unavailable"

            alice.send_message(mto=srv.jid("bob"), mbody="Leave me alone", mtype="chat")
            bounce = await alice.next_message()
            assert bounce["type"] == "error" and await error_of(bounce) == ("not-acceptable", True)

            await alice.plugin["xep_0191"].unblock(srv.jid("bob"))
            assert await alice.plugin["xep_0191"].get_blocked_jids() == set()
            bob.send_message(mto=srv.jid("alice"), mbody="Sorry!", mtype="chat")
            for resource in (alice, other):  # both: same priority; nothing of bob's earlier message
                assert (await resource.next_message())["body"] == "Sorry!"
        finally:
            await disconnect(alice, other, bob)


async def test_a_blocked_contact_sees_alice_offline_and_the_block_survives_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        await befriend(srv, "alice", "bob")
        bob = await login(srv, "bob")
        alice = await login(srv, "alice")
        try:
            await bob.next_presence(from_=str(alice.boundjid), type_="available")
            await alice.next_presence(from_=str(bob.boundjid), type_="available")

            await alice.plugin["xep_0191"].block([srv.jid("bob"), "spam.example"])

            await bob.next_presence(from_=str(alice.boundjid), type_="unavailable")
            alice.send_presence(pstatus="Busy")
            bob.send_presence(pstatus="Hello?")  # not delivered to alice either
            await alice.next_presence(from_=str(alice.boundjid))  # her own echo
            with pytest.raises(asyncio.TimeoutError):
                await bob.next_presence(from_=str(alice.boundjid), timeout=0.5)
            with pytest.raises(asyncio.TimeoutError):
                await alice.next_presence(from_=str(bob.boundjid), timeout=0.1)
        finally:
            await disconnect(alice, bob)

    async with running_server(tmp_path, CONFIG) as srv:
        bob = await login(srv, "bob")
        alice = await login(srv, "alice")
        try:
            assert await alice.plugin["xep_0191"].get_blocked_jids() == {srv.jid("bob"), "spam.example"}
            with pytest.raises(asyncio.TimeoutError):  # alice came online: bob is not told
                await bob.next_presence(from_=str(alice.boundjid), type_="available", timeout=0.5)

            await raw_iq(alice, f"<unblock xmlns='{BLOCKING}'/>")  # no items: everyone

            pres = await bob.next_presence(from_=str(alice.boundjid), type_="available")
            assert pres["type"] == "available"
            await alice.next_presence(from_=str(bob.boundjid), type_="available")  # probed on unblock
            assert await alice.plugin["xep_0191"].get_blocked_jids() == set()
        finally:
            await disconnect(alice, bob)


async def test_the_server_advertises_blocking(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        alice = await login(srv, "alice")
        try:
            info = await alice.plugin["xep_0030"].get_info(jid=srv.domain)
            assert BLOCKING in info["disco_info"]["features"]
            with pytest.raises(IqError) as exc:
                await raw_iq(alice, f"<block xmlns='{BLOCKING}'/>")
            assert exc.value.iq["error"]["condition"] == "bad-request"
        finally:
            await disconnect(alice)
