"""Message Carbons (XEP-0280) with real slixmpp clients: alice on her phone and her laptop chats with bob."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from clients import Client, connect, disconnect
from harness import RunningServer, running_server

CARBONS = "urn:xmpp:carbons:2"
PLUGINS = ("xep_0280",)
CONFIG = {"plugins": {"enabled": ["ping", "disco", "roster", "presence", "offline", "carbons", "blocking"]}}


async def login(srv: RunningServer, user: str, resource: str, *, carbons: bool = True) -> Client:
    client = await connect(srv, user, resource, plugins=PLUGINS)
    client.carbons: asyncio.Queue[Any] = asyncio.Queue()  # type: ignore[misc]
    client.add_event_handler("carbon_received", lambda m: client.carbons.put_nowait(("received", m)))
    client.add_event_handler("carbon_sent", lambda m: client.carbons.put_nowait(("sent", m)))
    if carbons:
        await client.plugin["xep_0280"].enable()
    return client


async def next_carbon(client: Client) -> tuple[str, Any]:
    direction, wrapper = await asyncio.wait_for(client.carbons.get(), 10)
    assert wrapper["from"] == client.boundjid.bare and wrapper["to"] == client.boundjid
    return direction, wrapper["carbon_" + direction]


def chat(sender: Client, to: str, body: str, *extra: str) -> None:
    msg = sender.make_message(mto=to, mbody=body, mtype="chat")
    for xml in extra:
        msg.append(ET.fromstring(xml))
    msg.send()


async def test_alices_other_resource_sees_both_sides_of_her_chat_with_bob(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        phone, laptop = await login(srv, "alice", "phone"), await login(srv, "alice", "laptop")
        bob = await login(srv, "bob", "desk", carbons=False)
        try:
            chat(bob, f"{srv.jid('alice')}/phone", "Are you coming tonight?")
            assert (await phone.next_message())["body"] == "Are you coming tonight?"
            direction, copy = await next_carbon(laptop)
            assert direction == "received"
            assert (str(copy["from"]), str(copy["to"])) == (
                f"{srv.jid('bob')}/desk",
                f"{srv.jid('alice')}/phone",
            )
            assert copy["body"] == "Are you coming tonight?"

            chat(phone, srv.jid("bob"), "Yes, at eight.")
            assert (await bob.next_message())["body"] == "Yes, at eight."
            direction, copy = await next_carbon(laptop)
            assert direction == "sent"
            assert (str(copy["from"]), str(copy["to"])) == (f"{srv.jid('alice')}/phone", srv.jid("bob"))
            assert copy["body"] == "Yes, at eight."
            assert phone.carbons.empty()  # the sender gets no copy of its own message
        finally:
            await disconnect(phone, laptop, bob)


async def test_private_messages_and_resources_without_carbons_get_no_copies(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        phone, laptop = await login(srv, "alice", "phone"), await login(srv, "alice", "laptop")
        bob = await login(srv, "bob", "desk", carbons=False)
        try:
            private = (f"<private xmlns='{CARBONS}'/>", "<no-copy xmlns='urn:xmpp:hints'/>")
            chat(bob, f"{srv.jid('alice')}/phone", "Just for your phone", *private)
            bob.send_message(mto=f"{srv.jid('alice')}/phone", mbody="A headline", mtype="headline")
            chat(bob, f"{srv.jid('alice')}/phone", "Copied")
            for body in ("Just for your phone", "A headline", "Copied"):
                assert (await phone.next_message())["body"] == body
            _, copy = await next_carbon(laptop)
            assert copy["body"] == "Copied"  # the first one that was eligible

            await laptop.plugin["xep_0280"].disable()
            chat(bob, f"{srv.jid('alice')}/phone", "Not copied any more")
            chat(phone, srv.jid("bob"), "Neither is this")
            assert (await bob.next_message())["body"] == "Neither is this"
            chat(bob, f"{srv.jid('alice')}/laptop", "Straight to the laptop")
            assert (await laptop.next_message())["body"] == "Straight to the laptop"
            assert laptop.carbons.empty()
        finally:
            await disconnect(phone, laptop, bob)


async def test_the_server_advertises_carbons(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        alice = await login(srv, "alice", "phone", carbons=False)
        try:
            info = await alice.plugin["xep_0030"].get_info(jid=srv.domain)
            assert CARBONS in info["disco_info"]["features"]
        finally:
            await disconnect(alice)
