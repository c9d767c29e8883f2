"""Personal Eventing Protocol (XEP-0163) with real slixmpp clients, the way OMEMO (XEP-0384) and
bookmarks (XEP-0402) clients use it: publish-options, +notify interests through entity caps (XEP-0115),
access models, the last item on login and on subscription, retraction and node configuration.

alice, bob and carol share presence; dave is nobody's contact.
"""

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
from harness import DEFAULT_USERS, RunningServer, running_server
from mbeon_chat.storage.api import RosterItem

DEVICES = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
BUNDLE = f"{AXOLOTL}.bundles:1234"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
CONFIG = {"plugins": {"enabled": ["ping", "disco", "roster", "presence", "offline", "caps", "pep"]}}


@contextlib.asynccontextmanager
async def pep_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    users = {**DEFAULT_USERS, "dave": "dave-secret-4444"}
    async with running_server(tmp_path, CONFIG, users=users) as srv:
        for a, b in (("alice", "bob"), ("alice", "carol")):
            await srv.app.ctx.storage.roster.put_item(a, RosterItem(srv.jid(b), subscription="both"))
            await srv.app.ctx.storage.roster.put_item(b, RosterItem(srv.jid(a), subscription="both"))
        yield srv


async def login(
    srv: RunningServer, user: str, resource: str = "test", *, notify: tuple[str, ...] = ()
) -> Client:
    """Log in and send initial presence whose caps list ``<node>+notify`` for each of ``notify``."""
    client = await connect(srv, user, resource, plugins=("xep_0060", "xep_0163"), send_presence=False)
    client.events: asyncio.Queue[Any] = asyncio.Queue()  # type: ignore[misc]
    client.add_event_handler("pubsub_publish", lambda m: client.events.put_nowait(("publish", m)))
    client.add_event_handler("pubsub_retract", lambda m: client.events.put_nowait(("retract", m)))
    for node in notify:
        client.plugin["xep_0163"].add_interest(node)
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    return client


async def next_event(client: Client, timeout: float = 10) -> tuple[str, str, str, Any]:
    """(publish | retract, node, item id, message) of the next notification."""
    kind, msg = await asyncio.wait_for(client.events.get(), timeout)
    items = msg["pubsub_event"]["items"]
    (item,) = list(items)
    return kind, items["node"], item["id"], msg


async def no_event(*clients: Client, timeout: float = 0.5) -> None:
    await asyncio.sleep(timeout)
    for client in clients:
        assert client.events.empty(), client.boundjid


def devicelist(*ids: int) -> ET.Element:
    devices = "".join(f"<device id='{i}'/>" for i in ids)
    return ET.fromstring(f"<list xmlns='{AXOLOTL}'>{devices}</list>")


def bookmark(name: str) -> ET.Element:
    return ET.fromstring(f"<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'/>")


def form(client: Client, form_type: str, **fields: str) -> Any:
    submit = client.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#{form_type}")
    for var, value in fields.items():
        submit.add_field(var=f"pubsub#{var}", value=value)
    return submit


async def publish(
    client: Client, node: str, item_id: str, payload: ET.Element, to: str | None = None, **fields: str
) -> Any:
    options = form(client, "publish-options", **fields) if fields else None
    pubsub = client.plugin["xep_0060"]
    return await pubsub.publish(to, node, id=item_id, payload=payload, options=options, timeout=5)


async def item_ids(client: Client, owner: str, node: str, **kw: Any) -> list[str]:
    result = await client.plugin["xep_0060"].get_items(owner, node, timeout=5, **kw)
    return [item["id"] for item in result["pubsub"]["items"]]


async def error_of(awaitable: Any) -> tuple[str, str | None]:
    """The stanza error condition and the pubsub-specific one."""
    with pytest.raises(IqError) as exc:
        await awaitable
    error = exc.value.iq.xml.find("{jabber:client}error")
    specific = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{PUBSUB}#errors}}")]
    return exc.value.iq["error"]["condition"], specific[0] if specific else None


async def test_an_omemo_device_list_reaches_interested_contacts_and_anyone_may_fetch_it(
    tmp_path: Path,
) -> None:
    async with pep_server(tmp_path) as srv:
        alice = await login(srv, "alice", "phone", notify=(DEVICES,))
        bob = await login(srv, "bob", notify=(DEVICES,))
        carol = await login(srv, "carol")  # a contact whose client asks for no notifications
        dave = await login(srv, "dave", notify=(DEVICES,))  # interested, but no contact
        try:
            await publish(alice, DEVICES, "current", devicelist(1234), access_model="open")

            for client in (alice, bob):
                kind, node, item_id, msg = await next_event(client)
                assert (kind, node, item_id) == ("publish", DEVICES, "current")
                assert (str(msg["from"]), msg["type"]) == (srv.jid("alice"), "headline")
                payload = msg.xml.find(f".//{{{AXOLOTL}}}list")
                assert [d.get("id") for d in payload] == ["1234"]
            await publish(
                alice, BUNDLE, "current", ET.fromstring(f"<bundle xmlns='{AXOLOTL}'/>"), access_model="open"
            )
            await no_event(alice, bob, carol, dave)  # nobody listed the bundle node; dave is no contact
            assert len(srv.app.ctx.exports["caps"].verified) == 2  # slixmpp's caps hashes check out

            assert await item_ids(dave, srv.jid("alice"), BUNDLE) == ["current"]  # open: anyone fetches
            assert await item_ids(bob, srv.jid("alice"), DEVICES) == ["current"]
            info = await bob.plugin["xep_0030"].get_info(jid=srv.jid("alice"), timeout=5)
            assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
            assert f"{PUBSUB}#publish-options" in info["disco_info"]["features"]
        finally:
            await disconnect(alice, bob, carol, dave)


async def test_publish_options_that_do_not_match_fail_until_the_owner_reconfigures(tmp_path: Path) -> None:
    async with pep_server(tmp_path) as srv:
        alice, bob, dave = await login(srv, "alice"), await login(srv, "bob"), await login(srv, "dave")
        try:
            await publish(alice, DEVICES, "current", devicelist(1), access_model="open")
            mismatch = publish(alice, DEVICES, "current", devicelist(1, 2), access_model="presence")
            assert await error_of(mismatch) == ("conflict", "precondition-not-met")

            config = await alice.plugin["xep_0060"].get_node_config(None, DEVICES, timeout=5)
            assert config["pubsub_owner"]["configure"]["form"].get_values()["pubsub#access_model"] == "open"
            change = form(alice, "node_config", access_model="presence")
            await alice.plugin["xep_0060"].set_node_config(None, DEVICES, change, timeout=5)
            await publish(alice, DEVICES, "current", devicelist(1, 2), access_model="presence")

            assert await item_ids(bob, srv.jid("alice"), DEVICES) == ["current"]  # a contact
            assert await error_of(item_ids(dave, srv.jid("alice"), DEVICES)) == (
                "not-authorized",
                "presence-subscription-required",
            )
            assert await error_of(item_ids(bob, srv.jid("alice"), "no-such-node")) == ("item-not-found", None)
            assert await error_of(publish(bob, DEVICES, "evil", devicelist(666), to=srv.jid("alice"))) == (
                "forbidden",
                None,
            )
        finally:
            await disconnect(alice, bob, dave)


async def test_private_bookmarks_stay_with_the_owner_and_last_items_arrive_on_login(tmp_path: Path) -> None:
    async with pep_server(tmp_path) as srv:
        phone = await login(srv, "alice", "phone", notify=(BOOKMARKS,))
        laptop = await login(srv, "alice", "laptop", notify=(BOOKMARKS,))
        bob = await login(srv, "bob", notify=(BOOKMARKS,))
        try:
            xep0402 = {
                "persist_items": "true",
                "max_items": "max",
                "send_last_published_item": "never",
                "access_model": "whitelist",
            }
            for room in ("tuesday@groups.localhost", "team@groups.localhost"):
                await publish(phone, BOOKMARKS, room, bookmark(room.split("@")[0]), **xep0402)
                for client in (phone, laptop):
                    assert (await next_event(client))[:3] == ("publish", BOOKMARKS, room)
            await no_event(bob)  # whitelist: the owner only
            assert await error_of(item_ids(bob, srv.jid("alice"), BOOKMARKS)) == (
                "not-allowed",
                "closed-node",
            )
            assert await item_ids(laptop, srv.jid("alice"), BOOKMARKS) == [
                "tuesday@groups.localhost",
                "team@groups.localhost",
            ]
            assert await item_ids(laptop, srv.jid("alice"), BOOKMARKS, max_items=1) == [
                "team@groups.localhost"
            ]

            await phone.plugin["xep_0060"].retract(None, BOOKMARKS, "tuesday@groups.localhost", notify=True)
            assert (await next_event(laptop))[:3] == ("retract", BOOKMARKS, "tuesday@groups.localhost")

            await publish(
                phone, DEVICES, "current", devicelist(7)
            )  # defaults: presence access, last item sent
            tablet = await login(srv, "alice", "tablet", notify=(DEVICES, BOOKMARKS))
            bob_phone = await login(srv, "bob", "phone", notify=(DEVICES,))
            for client in (tablet, bob_phone):
                kind, node, item_id, msg = await next_event(client)
                assert (kind, node, item_id) == ("publish", DEVICES, "current")
                assert msg.xml.find("{urn:xmpp:delay}delay") is not None
            await no_event(tablet)  # the bookmarks: send_last_published_item = never

            dave = await login(srv, "dave", notify=(DEVICES,))
            dave.send_presence(pto=srv.jid("alice"), ptype="subscribe")
            await phone.next_presence(type_="subscribe", from_=srv.jid("dave"))
            phone.send_presence(pto=srv.jid("dave"), ptype="subscribed")
            assert (await next_event(dave))[:3] == ("publish", DEVICES, "current")
            await disconnect(tablet, bob_phone, dave)
        finally:
            await disconnect(phone, laptop, bob)
