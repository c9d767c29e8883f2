"""The roster (RFC 6121 section 2): gets, sets, pushes to interested resources, versioning, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from clients import Client, connect, disconnect, online
from harness import RunningServer, running_server

IM = {"plugins": {"enabled": ["ping", "roster", "presence", "offline"]}}
ROSTER = "jabber:iq:roster"


@contextlib.asynccontextmanager
async def im_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, overrides=IM) as srv:
        yield srv


def pushes(client: Client) -> asyncio.Queue[Any]:
    """Roster pushes the client receives from now on."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    client.register_handler(
        Callback("test roster pushes", StanzaPath("iq@type=set/roster"), queue.put_nowait)
    )
    return queue


async def roster_iq(client: Client, type_: str, query: str, to: str | None = None) -> Any:
    """Send ``<iq type=type_><query xmlns='jabber:iq:roster' .../></iq>`` and return the result."""
    iq = client.Iq()
    iq["type"] = type_
    if to is not None:
        iq["to"] = to
    iq.append(ET.fromstring(query))
    return await iq.send(timeout=10)


async def error_of(client: Client, type_: str, query: str, to: str | None = None) -> str:
    with pytest.raises(IqError) as caught:
        await roster_iq(client, type_, query, to)
    return str(caught.value.iq["error"]["condition"])


def items_of(result: Any) -> dict[str, Any]:
    query = result.xml.find(f"{{{ROSTER}}}query")
    return {item.get("jid"): item for item in query.findall(f"{{{ROSTER}}}item")}


async def test_stream_features_advertise_roster_versioning_and_pre_approval(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice") as (alice,):
        assert {"rosterver", "preapproval"} <= alice.features


async def test_a_roster_push_reaches_every_interested_resource(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv:
        desk = await connect(srv, "alice", "desk")
        phone = await connect(srv, "alice", "phone")
        bot = await connect(srv, "alice", "bot", get_roster=False)  # never asked: not interested
        try:
            desk_pushes, phone_pushes, bot_pushes = pushes(desk), pushes(phone), pushes(bot)
            query = (
                f"<query xmlns='{ROSTER}'><item jid='{srv.jid('bob')}' name='Bob'>"
                "<group>Friends</group><group>Work</group></item></query>"
            )
            await roster_iq(desk, "set", query)
            for queue in (desk_pushes, phone_pushes):
                push = await asyncio.wait_for(queue.get(), 10)
                assert push["from"].bare in ("", srv.jid("alice"))
                assert push["roster"]["ver"]
                item = push["roster"]["items"][srv.jid("bob")]
                assert item["name"] == "Bob"
                assert sorted(item["groups"]) == ["Friends", "Work"]
                assert item["subscription"] == "none"
            await bot.plugin["xep_0199"].ping(srv.domain, timeout=10)  # anything for bot came before this
            assert bot_pushes.empty()

            # An update keeps the item's subscription state; "subscription" other than "remove" is ignored.
            bob_item = f"<item jid='{srv.jid('bob')}' subscription='both' name='B.'/>"
            query = f"<query xmlns='{ROSTER}'>{bob_item}</query>"
            await roster_iq(phone, "set", query)
            item = (await asyncio.wait_for(desk_pushes.get(), 10))["roster"]["items"][srv.jid("bob")]
            assert (item["name"], item["subscription"], item["groups"]) == ("B.", "none", [])
            await asyncio.wait_for(phone_pushes.get(), 10)  # the push of phone's own change

            await roster_iq(
                desk,
                "set",
                f"<query xmlns='{ROSTER}'><item jid='{srv.jid('bob')}' subscription='remove'/></query>",
            )
            item = items_of(await asyncio.wait_for(phone_pushes.get(), 10))[srv.jid("bob")]
            assert item.get("subscription") == "remove"
            assert srv.jid("bob") not in items_of(await roster_iq(bot, "get", f"<query xmlns='{ROSTER}'/>"))
        finally:
            await disconnect(desk, phone, bot)


async def test_roster_versioning_returns_an_empty_result_when_up_to_date(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice", get_roster=False) as (alice,):
        await roster_iq(alice, "set", f"<query xmlns='{ROSTER}'><item jid='{srv.jid('carol')}'/></query>")
        full = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver=''/>")
        version = full["roster"]["ver"]
        assert version and list(items_of(full)) == [srv.jid("carol")]

        current = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver='{version}'/>")
        assert current.xml.find(f"{{{ROSTER}}}query") is None  # RFC 6121 2.6.3: empty result

        queue = pushes(alice)
        await roster_iq(alice, "set", f"<query xmlns='{ROSTER}'><item jid='{srv.jid('bob')}'/></query>")
        newer = (await asyncio.wait_for(queue.get(), 10))["roster"]["ver"]
        assert newer != version
        stale = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver='{version}'/>")
        assert stale["roster"]["ver"] == newer
        assert sorted(items_of(stale)) == [srv.jid("bob"), srv.jid("carol")]


async def test_invalid_roster_sets_get_the_rfc_6121_errors(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice", "bob") as (alice, bob):
        bob_item = f"jid='{srv.jid('bob')}'"
        cases = {
            f"<item {bob_item}/><item jid='{srv.jid('carol')}'/>": "bad-request",
            f"<item {bob_item}><group>A</group><group>A</group></item>": "bad-request",
            f"<item {bob_item}><group></group></item>": "not-acceptable",
            f"<item {bob_item} name='{'n' * 1024}'/>": "not-acceptable",
            f"<item jid='{srv.jid('alice')}'/>": "not-allowed",
            "<item jid='a@b@c'/>": "bad-request",
            f"<item jid='{srv.jid('bob')}/phone'/>": "bad-request",
            "<item/>": "bad-request",
            f"<item {bob_item} subscription='remove'/>": "item-not-found",
        }
        for item, condition in cases.items():
            assert await error_of(alice, "set", f"<query xmlns='{ROSTER}'>{item}</query>") == condition, item

        # Only the account's own resources may read or change its roster (RFC 6121 2.1.5, 2.3.3, 8.5.1).
        query = f"<query xmlns='{ROSTER}'><item jid='{srv.jid('carol')}'/></query>"
        assert await error_of(alice, "set", query, to=srv.jid("bob")) == "forbidden"
        assert await error_of(alice, "get", f"<query xmlns='{ROSTER}'/>", to=srv.jid("bob")) == "forbidden"
        assert await error_of(alice, "get", f"<query xmlns='{ROSTER}'/>", to=f"nobody@{srv.domain}") == (
            "service-unavailable"
        )
        assert items_of(await roster_iq(bob, "get", f"<query xmlns='{ROSTER}'/>")) == {}
        assert (
            items_of(await roster_iq(alice, "get", f"<query xmlns='{ROSTER}'/>", to=srv.jid("alice"))) == {}
        )


async def test_removing_a_contact_cancels_the_subscriptions_both_ways(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice", "bob") as (alice, bob):
        # slixmpp approves and subscribes back by default: this ends with "both" on both sides.
        alice.send_presence(pto=srv.jid("bob"), ptype="subscribe")
        await bob.next_presence(from_=str(alice.boundjid))  # bob sees alice: the handshake is done
        await alice.next_presence(from_=str(bob.boundjid))
        roster = srv.app.ctx.storage.roster
        assert (await roster.get_item("alice", srv.jid("bob"))).subscription == "both"

        bob_pushes = pushes(bob)
        await roster_iq(
            alice,
            "set",
            f"<query xmlns='{ROSTER}'><item jid='{srv.jid('bob')}' subscription='remove'/></query>",
        )
        seen: list[str] = []
        while "unsubscribe" not in seen:
            seen.append((await bob.next_presence(from_=srv.jid("alice")))["type"])
        assert [t for t in seen if t != "available"] == ["unavailable", "unsubscribed", "unsubscribe"]
        item = (await asyncio.wait_for(bob_pushes.get(), 10))["roster"]["items"][srv.jid("alice")]
        assert item["subscription"] in ("from", "none")
        assert await roster.get_item("alice", srv.jid("bob")) is None
        assert (await roster.get_item("bob", srv.jid("alice"))).subscription == "none"
