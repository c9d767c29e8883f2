"""Messages between users over real TLS connections (RFC 6121 section 8.5), with slixmpp and aioxmpp."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioxmpp
import aioxmpp.connector
import pytest
from slixmpp.exceptions import IqError

from clients import Client, connect, disconnect, online
from harness import RunningServer, running_server

IM = {"plugins": {"enabled": ["ping", "roster", "presence", "offline"]}}


@contextlib.asynccontextmanager
async def im_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, overrides=IM) as srv:
        yield srv


async def with_priority(client: Client, priority: int) -> None:
    """Send available presence with a priority and wait for the server's echo (RFC 6121 4.4.2)."""
    client.send_presence(ppriority=priority)
    while True:
        pres = await client.next_presence(from_=str(client.boundjid))
        if pres["priority"] == priority:
            return


async def bodies_until(client: Client, marker: str) -> list[str]:
    """Message bodies the client receives up to (not including) ``marker``."""
    seen = []
    while (body := (await client.next_message())["body"]) != marker:
        seen.append(body)
    return seen


async def test_two_users_chat_both_ways_by_bare_jid(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice", "bob") as (alice, bob):
        alice.send_message(mto=srv.jid("bob"), mbody="Hi Bob, got a minute?", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "Hi Bob, got a minute?"
        assert msg["from"] == alice.boundjid
        assert str(msg["to"]) == srv.jid("bob")  # RFC 6121 8.5.2.1.1: 'to' not rewritten

        bob.send_message(mto=srv.jid("alice"), mbody="Sure, Alice.", mtype="chat")
        msg = await alice.next_message()
        assert msg["body"] == "Sure, Alice."
        assert msg["from"] == bob.boundjid


async def test_message_to_bare_jid_goes_to_the_highest_priority_resources(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        desk = await connect(srv, "alice", "desk", send_presence=False)
        phone = await connect(srv, "alice", "phone", send_presence=False)
        bob = await connect(srv, "bob")
        try:
            await with_priority(desk, 5)
            await with_priority(phone, 1)
            bob.send_message(mto=srv.jid("alice"), mbody="to the desk", mtype="chat")
            bob.send_message(mto=phone.boundjid, mbody="end 1", mtype="chat")
            assert (await desk.next_message())["body"] == "to the desk"
            assert await bodies_until(phone, "end 1") == []

            await with_priority(phone, 5)  # equal priorities: both get it
            bob.send_message(mto=srv.jid("alice"), mbody="to both", mtype="normal")
            assert (await desk.next_message())["body"] == "to both"
            assert (await phone.next_message())["body"] == "to both"

            await with_priority(desk, -1)  # a negative priority gets no message for the bare JID
            bob.send_message(mto=srv.jid("alice"), mbody="to the phone", mtype="chat")
            bob.send_message(mto=desk.boundjid, mbody="end 2", mtype="chat")
            assert (await phone.next_message())["body"] == "to the phone"
            assert await bodies_until(desk, "end 2") == []
        finally:
            await disconnect(desk, phone, bob)


async def test_message_to_a_user_that_does_not_exist_is_service_unavailable(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "bob") as (bob,):
        bob.send_message(mto=f"nobody@{srv.domain}", mbody="anyone there?", mtype="chat")
        reply = await bob.next_message()
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "service-unavailable"
        assert str(reply["from"]) == f"nobody@{srv.domain}"


async def test_iq_to_a_resource_that_is_not_connected_is_service_unavailable(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice", "bob") as (_, bob):
        iq = bob.make_iq_get(queryxmlns="urn:xmpp:ping", ito=f"{srv.jid('alice')}/elsewhere")
        with pytest.raises(IqError) as caught:
            await iq.send(timeout=10)
        assert caught.value.iq["error"]["condition"] == "service-unavailable"

        iq = bob.make_iq_get(queryxmlns="urn:xmpp:ping", ito=f"nobody@{srv.domain}")
        with pytest.raises(IqError) as caught:
            await iq.send(timeout=10)
        assert caught.value.iq["error"]["condition"] == "service-unavailable"  # RFC 6121 8.5.1


async def aioxmpp_client(srv: RunningServer, user: str) -> aioxmpp.PresenceManagedClient:
    return aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(srv.jid(user)),
        aioxmpp.make_security_layer(srv.users[user], no_verify=True),
        override_peer=[("127.0.0.1", srv.starttls_port, aioxmpp.connector.STARTTLSConnector())],
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_aioxmpp_and_slixmpp_users_subscribe_and_chat(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice") as (alice,):
        carol = await aioxmpp_client(srv, "carol")
        roster = carol.summon(aioxmpp.RosterClient)
        presence = carol.summon(aioxmpp.PresenceClient)
        messages: asyncio.Queue[Any] = asyncio.Queue()
        carol.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
            aioxmpp.MessageType.CHAT, None, messages.put_nowait
        )
        alice_online = asyncio.Event()
        alice_jid = aioxmpp.JID.fromstr(srv.jid("alice"))
        presence.on_bare_available.connect(lambda st: st.from_.bare() == alice_jid and alice_online.set())
        carol.presence = aioxmpp.PresenceState(True)
        async with carol.connected():
            await roster.set_entry(alice_jid, name="Alice")
            roster.subscribe(alice_jid)  # alice's slixmpp approves and subscribes back
            await asyncio.wait_for(alice_online.wait(), 10)
            assert roster.items[alice_jid].name == "Alice"
            assert roster.items[alice_jid].subscription in ("to", "both")

            alice.send_message(mto=srv.jid("carol"), mbody="Hello from slixmpp", mtype="chat")
            msg = await asyncio.wait_for(messages.get(), 10)
            assert msg.body.any() == "Hello from slixmpp"
            assert msg.from_ == aioxmpp.JID.fromstr(str(alice.boundjid))
