"""Message archive (XEP-0313) over real TLS connections with slixmpp and aioxmpp: both parties' archives,
XEP-0359 stanza-ids, RSM paging through 1,000 messages both ways, filters, the query form, preferences,
errors, and history a client missed while offline."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from clients import Client, connect, disconnect
from harness import RunningServer, running_server

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
RSM = "http://jabber.org/protocol/rsm"
PLUGINS = ("xep_0313", "xep_0441", "xep_0359")
CONFIG = {"plugins": {"enabled": ["ping", "disco", "roster", "offline", "mam"]}}


@contextlib.asynccontextmanager
async def mam_server(tmp_path: Path, **plugin_options: Any) -> AsyncIterator[RunningServer]:
    overrides: dict[str, Any] = {"plugins": dict(CONFIG["plugins"])}
    if plugin_options:
        overrides["plugins"]["mam"] = plugin_options
    async with running_server(tmp_path, overrides) as srv:
        yield srv


async def login(srv: RunningServer, user: str, resource: str = "test") -> Client:
    return await connect(srv, user, resource, plugins=PLUGINS, send_presence=False, get_roster=False)


async def archive_of(client: Client, **kw: Any) -> list[Any]:
    return [msg async for msg in client.plugin["xep_0313"].iterate(rsm={"max": 50}, **kw)]


def forwarded_body(result_msg: Any) -> str:
    return str(result_msg["mam_result"]["forwarded"]["stanza"]["body"])


async def send_and_await(
    sender: Client, receiver: Client, bodies: list[str], *, to: str | None = None
) -> list[Any]:
    target = to or str(receiver.boundjid)
    for body in bodies:
        sender.send_message(mto=target, mbody=body, mtype="chat")
    return [await receiver.next_message() for _ in bodies]


async def raw_iq(client: Client, type_: str, payload: str, to: str | None = None) -> Any:
    iq = client.make_iq_set() if type_ == "set" else client.make_iq_get()
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=10)


async def condition_of(awaitable: Any) -> str:
    with pytest.raises(IqError) as exc:
        await awaitable
    return str(exc.value.iq["error"]["condition"])


async def test_a_chat_is_archived_for_both_parties_with_the_recipients_stanza_id(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            (received,) = await send_and_await(alice, bob, ["Hello Bob, how are you?"])
            stamp = received.xml.find(f"{{{SID}}}stanza-id")
            assert stamp is not None and stamp.get("by") == srv.jid("bob")

            (bobs,) = await archive_of(bob)
            (alices,) = await archive_of(alice)
            assert bobs["mam_result"]["id"] == stamp.get("id")  # the stanza-id is the MAM id
            assert forwarded_body(bobs) == forwarded_body(alices) == "Hello Bob, how are you?"
            original = bobs["mam_result"]["forwarded"]["stanza"]
            assert str(original["from"]) == str(alice.boundjid) and str(original["to"]) == str(bob.boundjid)
            assert bobs["mam_result"]["forwarded"]["delay"]["stamp"] is not None
        finally:
            await disconnect(alice, bob)


async def test_paging_through_a_thousand_messages_forwards_and_backwards(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            bodies = [f"message {i:04d}" for i in range(1000)]
            received = await send_and_await(alice, bob, bodies)
            assert [m["body"] for m in received] == bodies
            mam = bob.plugin["xep_0313"]

            forward = [forwarded_body(m) async for m in mam.iterate(rsm={"max": 100})]
            backward = [forwarded_body(m) async for m in mam.iterate(rsm={"max": 70}, reverse=True)]

            assert forward == bodies  # each exactly once, in order
            assert backward == bodies[::-1]
            ids = [m.xml.find(f"{{{SID}}}stanza-id").get("id") for m in received]
            assert ids == sorted(ids) and len(set(ids)) == 1000
        finally:
            await disconnect(alice, bob)


async def test_filters_by_with_and_by_time(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob, carol = await login(srv, "alice"), await login(srv, "bob"), await login(srv, "carol")
        try:
            await send_and_await(alice, bob, ["to bob 1"])
            await send_and_await(carol, alice, ["from carol"])
            await asyncio.sleep(0.05)
            middle = datetime.datetime.now(datetime.UTC)
            await asyncio.sleep(0.05)
            await send_and_await(alice, bob, ["to bob 2"])
            await send_and_await(alice, carol, ["to carol"])

            with_bob = [forwarded_body(m) for m in await archive_of(alice, with_jid=srv.jid("bob"))]
            with_carol = [forwarded_body(m) for m in await archive_of(alice, with_jid=srv.jid("carol"))]
            later = [forwarded_body(m) for m in await archive_of(alice, start=middle)]
            earlier = [forwarded_body(m) for m in await archive_of(alice, end=middle)]

            assert with_bob == ["to bob 1", "to bob 2"]
            assert with_carol == ["from carol", "to carol"]
            assert later == ["to bob 2", "to carol"]
            assert earlier == ["to bob 1", "from carol"]
        finally:
            await disconnect(alice, bob, carol)


async def test_a_client_that_was_offline_finds_what_it_missed_in_the_archive(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice = await login(srv, "alice")
        try:
            for i in range(5):
                alice.send_message(mto=srv.jid("bob"), mbody=f"while you were away {i}", mtype="chat")
            await alice.plugin["xep_0199"].ping(srv.domain)  # the server has handled them all
            bob = await login(srv, "bob", "laptop")
            try:
                missed = [forwarded_body(m) for m in await archive_of(bob)]
                assert missed == [f"while you were away {i}" for i in range(5)]
            finally:
                await disconnect(bob)
        finally:
            await disconnect(alice)


async def test_form_discovery_metadata_and_disco_features(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            form = await alice.plugin["xep_0313"].get_fields()
            assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id"} <= set(form.get_fields())

            empty = await alice.plugin["xep_0313"].get_archive_metadata()
            assert empty.xml.find(f"{{{MAM}}}metadata/{{{MAM}}}start") is None
            received = await send_and_await(alice, bob, ["one", "two"])
            meta = (await bob.plugin["xep_0313"].get_archive_metadata()).xml.find(f"{{{MAM}}}metadata")
            ids = [m.xml.find(f"{{{SID}}}stanza-id").get("id") for m in received]
            assert meta.find(f"{{{MAM}}}start").get("id") == ids[0]
            assert meta.find(f"{{{MAM}}}end").get("id") == ids[1]

            info = await alice.plugin["xep_0030"].get_info(jid=srv.jid("alice"), cached=False)
            assert {MAM, SID} <= set(info["disco_info"]["features"])
        finally:
            await disconnect(alice, bob)


async def test_preferences_are_kept_and_honoured(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob, carol = await login(srv, "alice"), await login(srv, "bob"), await login(srv, "carol")
        try:
            prefs = alice.plugin["xep_0441"]
            assert (await prefs.get_preferences())[0] == "always"
            await prefs.set_preferences(default="never", always=[srv.jid("carol")], never=[])
            default, always, never = await prefs.get_preferences()
            assert (default, {str(j) for j in always}, never) == ("never", {srv.jid("carol")}, set())

            received = await send_and_await(alice, bob, ["not in alice's archive"])
            await send_and_await(alice, carol, ["in alice's archive"])

            assert [forwarded_body(m) for m in await archive_of(alice)] == ["in alice's archive"]
            assert [forwarded_body(m) for m in await archive_of(bob)] == ["not in alice's archive"]
            assert received[0].xml.find(f"{{{SID}}}stanza-id") is not None  # bob archived it
        finally:
            await disconnect(alice, bob, carol)


async def test_errors_unknown_ids_malformed_forms_and_other_peoples_archives(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            await send_and_await(alice, bob, ["hi"])
            unknown = "01900000-0000-7000-8000-000000000000"
            after = f"<query xmlns='{MAM}'><set xmlns='{RSM}'><after>{unknown}</after></set></query>"
            assert await condition_of(raw_iq(alice, "set", after)) == "item-not-found"
            before_id = (
                f"<query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'>"
                f"<field var='FORM_TYPE'><value>{MAM}</value></field>"
                f"<field var='before-id'><value>{unknown}</value></field></x></query>"
            )
            assert await condition_of(raw_iq(alice, "set", before_id)) == "item-not-found"
            bad_field = (
                f"<query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'>"
                f"<field var='FORM_TYPE'><value>{MAM}</value></field>"
                f"<field var='colour'><value>blue</value></field></x></query>"
            )
            assert await condition_of(raw_iq(alice, "set", bad_field)) == "bad-request"
            bad_time = (
                f"<query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'>"
                f"<field var='start'><value>yesterday</value></field></x></query>"
            )
            assert await condition_of(raw_iq(alice, "set", bad_time)) == "bad-request"
            theirs = f"<query xmlns='{MAM}'/>"
            assert await condition_of(raw_iq(alice, "set", theirs, to=srv.jid("bob"))) == "not-allowed"
        finally:
            await disconnect(alice, bob)


async def test_stanza_ids_claiming_to_be_ours_are_replaced(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            msg = alice.make_message(mto=bob.boundjid, mbody="trust me", mtype="chat")
            msg.append(ET.fromstring(f"<stanza-id xmlns='{SID}' by='{srv.jid('bob')}' id='forged'/>"))
            msg.append(ET.fromstring(f"<stanza-id xmlns='{SID}' by='elsewhere.example' id='theirs'/>"))
            msg.send()
            received = await bob.next_message()
            stamps = {(s.get("by"), s.get("id")) for s in received.xml.findall(f"{{{SID}}}stanza-id")}
            assert ("elsewhere.example", "theirs") in stamps
            ours = [i for by, i in stamps if by == srv.jid("bob")]
            assert len(ours) == 1 and ours[0] != "forged"
        finally:
            await disconnect(alice, bob)


async def test_a_message_to_an_absent_resource_is_archived_once(tmp_path: Path) -> None:
    async with mam_server(tmp_path) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob", "phone")
        try:
            alice.send_message(mto=f"{srv.jid('bob')}/gone", mbody="to a resource that left", mtype="chat")
            await alice.plugin["xep_0199"].ping(srv.domain)
            assert [forwarded_body(m) for m in await archive_of(bob)] == ["to a resource that left"]
            assert len(await archive_of(alice)) == 1
        finally:
            await disconnect(alice, bob)


async def test_retention_purges_old_messages_and_their_conversation_keys(tmp_path: Path) -> None:
    options = {"retention_days": 1.5 / 86400, "purge_interval": 0.25, "key_grace": 0.0}
    async with mam_server(tmp_path, **options) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            await send_and_await(alice, bob, ["soon forgotten"])
            assert len(await archive_of(bob)) == 1
            deadline = asyncio.get_running_loop().time() + 10
            while await archive_of(bob) or await srv.app.storage.crypto.master_key_usage():
                assert asyncio.get_running_loop().time() < deadline, "retention did not run"
                await asyncio.sleep(0.25)
            assert await archive_of(alice) == []
        finally:
            await disconnect(alice, bob)
