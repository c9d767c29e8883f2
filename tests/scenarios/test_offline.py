"""Offline messages (XEP-0160, stamped per XEP-0203) over real connections; delivery that loses nothing."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from slixmpp.xmlstream import ET

from clients import Client, connect, disconnect, online
from harness import RunningServer, running_server
from mbeon_chat.features import offline
from mbeon_chat.xmpp.stanza import make_message

PLUGINS = ["ping", "roster", "presence", "offline"]
DELAY = "{urn:xmpp:delay}delay"


@contextlib.asynccontextmanager
async def im_server(tmp_path: Path, **options: Any) -> AsyncIterator[RunningServer]:
    overrides = {"plugins": {"enabled": PLUGINS, "offline": options}}
    async with running_server(tmp_path, overrides=overrides) as srv:
        yield srv


async def settle(client: Client) -> None:
    await client.plugin["xep_0199"].ping(client.boundjid.domain, timeout=10)


def bodies(client: Client) -> list[str]:
    out = []
    while not client.messages.empty():
        msg = client.messages.get_nowait()
        if msg["body"]:
            out.append(msg["body"])
    return out


async def test_an_offline_message_is_delivered_on_next_login_with_a_delay_stamp_and_only_once(
    tmp_path: Path,
) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice") as (alice,):
        alice.send_message(mto=srv.jid("bob"), mbody="Are you there?", mtype="chat")
        # a chat message to a resource that is gone counts as sent to the bare JID (RFC 6121 8.5.3.2.1)
        alice.send_message(mto=f"{srv.jid('bob')}/gone", mbody="Call me back.", mtype="chat")
        typing = alice.Message()
        typing["to"], typing["type"] = srv.jid("bob"), "chat"
        typing.append(ET.fromstring("<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
        typing.send()  # a chat state alone is not worth storing
        alice.send_message(mto=srv.jid("bob"), mbody="news", mtype="headline")  # headlines are not stored
        await settle(alice)
        assert alice.messages.empty()  # stored: no error came back
        assert await srv.app.ctx.storage.offline.count("bob") == 2

        bob = await connect(srv, "bob")
        first, second = await bob.next_message(), await bob.next_message()
        assert [first["body"], second["body"]] == ["Are you there?", "Call me back."]
        assert first["from"] == alice.boundjid and first["type"] == "chat"
        delay = first.xml.find(DELAY)
        assert delay is not None and delay.get("from") == srv.domain
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", delay.get("stamp"))
        await settle(bob)
        assert bodies(bob) == []
        assert await srv.app.ctx.storage.offline.count("bob") == 0
        await disconnect(bob)

        bob = await connect(srv, "bob")  # delivered once: nothing the second time
        await settle(bob)
        assert bodies(bob) == []
        await disconnect(bob)


async def test_a_full_offline_store_answers_service_unavailable(tmp_path: Path) -> None:
    async with im_server(tmp_path, max_per_user=1) as srv, online(srv, "alice") as (alice,):
        alice.send_message(mto=srv.jid("bob"), mbody="one", mtype="chat")
        alice.send_message(mto=srv.jid("bob"), mbody="two", mtype="chat")
        bounced = await alice.next_message()
        assert (bounced["type"], bounced["body"]) == ("error", "two")
        assert bounced["error"]["condition"] == "service-unavailable"


async def test_offline_messages_wait_for_a_resource_with_a_non_negative_priority(tmp_path: Path) -> None:
    async with im_server(tmp_path) as srv, online(srv, "alice") as (alice,):
        alice.send_message(mto=srv.jid("bob"), mbody="while you were out", mtype="chat")
        await settle(alice)
        bob = await connect(srv, "bob", send_presence=False)
        try:
            bob.send_presence(ppriority=-1)
            await bob.next_presence(from_=str(bob.boundjid))
            alice.send_message(
                mto=srv.jid("bob"), mbody="still away?", mtype="chat"
            )  # stored too (8.5.2.1.1)
            await settle(alice)
            await settle(bob)
            assert bodies(bob) == []

            bob.send_presence(ppriority=0)
            assert (await bob.next_message())["body"] == "while you were out"
            assert (await bob.next_message())["body"] == "still away?"
        finally:
            await disconnect(bob)


class FakeConn:
    def __init__(self, fail_after: int) -> None:
        self.closed = False
        self.sent: list[Any] = []
        self.fail_after = fail_after

    def write_element(self, el: Any) -> None:
        if self.closed:
            return
        self.sent.append(el)
        if len(self.sent) >= self.fail_after:
            self.closed = True  # the write that fills the buffer closes the connection


class FakeStore:
    def __init__(self, payloads: list[bytes]) -> None:
        self.rows = {f"id{i}": p for i, p in enumerate(payloads)}

    async def fetch(self, username: str) -> list[tuple[str, bytes]]:
        return sorted(self.rows.items())

    async def delete(self, username: str, ids: list[str]) -> None:
        for i in ids:
            del self.rows[i]


async def test_delivery_that_fails_midway_keeps_what_was_not_written() -> None:
    from mbeon_chat.core.session import Session
    from mbeon_chat.xmpp.jid import jid_from_str

    payloads = [offline.serialize(make_message("bob@example.org", f"m{i}")) for i in range(5)]
    store = FakeStore(payloads)
    conn = FakeConn(fail_after=2)
    session = Session(conn, jid_from_str("bob@example.org/phone"))  # type: ignore[arg-type]
    session.available = True
    api = SimpleNamespace(
        storage=SimpleNamespace(offline=store),
        sessions=SimpleNamespace(get=lambda jid: session),
        log=SimpleNamespace(error=lambda *a, **k: None),
    )
    service = offline.OfflineService(api, offline.Options())  # type: ignore[arg-type]
    assert await service.deliver(session) == 1  # the second write closed the connection: kept
    assert sorted(store.rows) == ["id1", "id2", "id3", "id4"]
    assert [el.findtext("{jabber:client}body") for el in conn.sent] == ["m0", "m1"]

    conn.closed, conn.fail_after, conn.sent = False, 100, []
    assert await service.deliver(session) == 4
    assert store.rows == {}
    assert offline.parse(payloads[0]).tag == "{jabber:client}message"
