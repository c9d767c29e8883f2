"""Client State Indication (XEP-0352): a phone in the background gets what matters now, the rest later."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from slixmpp.xmlstream import ET
from test_stream_management import cut, hibernating, quiet, resume, sm_login
from test_stream_raw import RawClient

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

PLUGINS = ["ping", "roster", "presence", "offline", "stream_management", "csi"]
CSI = f"{{{ns.CSI}}}"
SM = f"{{{ns.SM}}}"


@contextlib.asynccontextmanager
async def csi_server(tmp_path: Path, **options: Any) -> AsyncIterator[RunningServer]:
    overrides = {"plugins": {"enabled": PLUGINS, "csi": options}}
    async with running_server(tmp_path, overrides=overrides) as srv:
        yield srv


async def phone(srv: RunningServer) -> RawClient:
    """Alice's phone, logged in by hand (resource "phone")."""
    raw = await RawClient.open(srv)
    await raw.login("alice", srv.users["alice"], "phone")
    return raw


async def set_state(raw: RawClient, state: str) -> None:
    """Send <active/> or <inactive/>; a ping round trip makes sure the server has taken it."""
    raw.send(
        f"<{state} xmlns='{ns.CSI}'/><iq type='get' id='{state}'><ping xmlns='urn:xmpp:ping'/></iq>".encode()
    )
    while (await raw.next()).get("id") != state:
        pass


def status(bob: Client, to: str, text: str) -> None:
    bob.send_presence(pto=to, pstatus=text)  # directed presence: no subscription needed


def composing(bob: Client, to: str) -> None:
    msg = bob.Message()
    msg["to"], msg["type"] = to, "chat"
    msg.append(ET.fromstring("<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
    msg.send()


async def settle(client: Client) -> None:
    await client.plugin["xep_0199"].ping(client.boundjid.domain, timeout=10)


def describe(el: Element) -> str:
    """presence:<status> | message:<body> | chatstate"""
    if el.local == "presence":
        return "presence:" + (el.findtext("{jabber:client}status") or "")
    if el.local == "message":
        body = el.findtext("{jabber:client}body")
        return "message:" + body if body else "chatstate"
    return el.local


async def test_an_inactive_phone_gets_messages_at_once_and_presence_later_in_order(tmp_path: Path) -> None:
    async with csi_server(tmp_path) as srv:
        bob = await connect(srv, "bob")
        alice = await phone(srv)
        to = f"{srv.jid('alice')}/phone"
        try:
            assert alice.features is not None
            await set_state(alice, "inactive")
            status(bob, to, "lunch")
            composing(bob, to)
            status(bob, to, "back soon")
            await settle(bob)
            assert await quiet(alice) == []  # held back: nothing worth waking the phone for

            bob.send_message(mto=to, mbody="are you there?", mtype="chat")
            got = [describe(await alice.next()) for _ in range(4)]
            assert got == ["presence:lunch", "chatstate", "presence:back soon", "message:are you there?"]

            status(bob, to, "gone home")
            await settle(bob)
            assert await quiet(alice) == []
            alice.send(f"<active xmlns='{ns.CSI}'/>".encode())
            assert describe(await alice.next()) == "presence:gone home"

            status(bob, to, "active again")  # an active phone gets everything at once
            assert describe(await alice.next()) == "presence:active again"
        finally:
            alice.close()
            await disconnect(bob)


async def test_the_feature_is_offered_and_a_full_buffer_is_sent(tmp_path: Path) -> None:
    async with csi_server(tmp_path, max_held=2) as srv:
        bob = await connect(srv, "bob")
        raw = await RawClient.open(srv)
        answer = await raw.auth_plain("alice", srv.users["alice"])
        assert answer.local == "success"
        raw.restart()
        features = await raw.open_stream()
        assert features.find(CSI + "csi") is not None
        raw.close()

        alice = await phone(srv)
        to = f"{srv.jid('alice')}/phone"
        try:
            await set_state(alice, "inactive")
            status(bob, to, "1")
            status(bob, to, "2")
            await settle(bob)
            assert await quiet(alice) == []
            status(bob, to, "3")  # one more than the buffer holds: all of it goes out
            assert [describe(await alice.next()) for _ in range(3)] == [
                "presence:1",
                "presence:2",
                "presence:3",
            ]
        finally:
            alice.close()
            await disconnect(bob)


async def test_what_an_inactive_phone_held_back_survives_a_lost_connection(tmp_path: Path) -> None:
    async with csi_server(tmp_path) as srv:
        bob = await connect(srv, "bob")
        alice, previd = await sm_login(srv, "alice")
        to = f"{srv.jid('alice')}/phone"
        try:
            await set_state(alice, "inactive")  # the pong was stanza 1
            status(bob, to, "held")
            await settle(bob)
            cut(alice)
            await hibernating(srv, to)
            bob.send_message(mto=to, mbody="while away", mtype="chat")
            await settle(bob)

            alice, answer = await resume(srv, "alice", previd, 1)
            assert answer.tag == SM + "resumed"
            got = [describe(el) for el in await quiet(alice) if el.local in ("presence", "message")]
            assert got == ["presence:held", "message:while away"]
        finally:
            alice.close()
            await disconnect(bob)
