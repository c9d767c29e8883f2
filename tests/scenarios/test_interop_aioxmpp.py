"""A second client library: aioxmpp logs in over STARTTLS and chats with a slixmpp user."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiosasl
import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher
import pytest
from test_stream_raw import client_options, overrides

from clients import connect, disconnect
from harness import RunningServer, running_server


@contextlib.asynccontextmanager
async def aioxmpp_client(
    srv: RunningServer, user: str, password: str | None = None
) -> AsyncIterator[tuple[aioxmpp.PresenceManagedClient, asyncio.Queue[Any]]]:
    """An aioxmpp client connected to 127.0.0.1 over STARTTLS, trusting our self-signed certificate."""
    security = aioxmpp.make_security_layer(password or srv.users[user], no_verify=True)
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(f"{srv.jid(user)}/aioxmpp"),
        security,
        override_peer=[("127.0.0.1", srv.starttls_port, aioxmpp.connector.STARTTLSConnector())],
    )
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    dispatcher = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
    dispatcher.register_callback(aioxmpp.MessageType.CHAT, None, inbox.put_nowait)
    async with asyncio.timeout(20):
        cm = client.connected()
        await cm.__aenter__()
    try:
        yield client, inbox
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await cm.__aexit__(None, None, None)


async def test_aioxmpp_logs_in_over_starttls(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv, aioxmpp_client(srv, "alice") as (client, _):
        assert str(client.local_jid) == f"{srv.jid('alice')}/aioxmpp"
        assert client.established
        sessions = srv.app.registry.resources(_bare(srv, "alice"))
        assert [str(s.jid) for s in sessions] == [f"{srv.jid('alice')}/aioxmpp"]


async def test_aioxmpp_and_slixmpp_exchange_messages(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv, aioxmpp_client(srv, "alice") as (alice, inbox):
        bob = await connect(srv, "bob", **client_options())
        try:
            # aioxmpp -> slixmpp
            msg = aioxmpp.Message(
                to=aioxmpp.JID.fromstr(f"{srv.jid('bob')}/test"), type_=aioxmpp.MessageType.CHAT
            )
            msg.body[None] = "hello from aioxmpp \u2603"
            await alice.send(msg)
            received = await bob.next_message()
            assert received["body"] == "hello from aioxmpp \u2603"
            assert str(received["from"]) == str(alice.local_jid)

            # slixmpp -> aioxmpp
            bob.send_message(mto=str(alice.local_jid), mbody="hi back & <welcome>", mtype="chat")
            reply = await asyncio.wait_for(inbox.get(), 10)
            assert reply.body.any() == "hi back & <welcome>"
            assert str(reply.from_) == f"{srv.jid('bob')}/test"
        finally:
            await disconnect(bob)


async def test_aioxmpp_with_a_wrong_password_is_refused(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(auth={"failure_delay": 0.01})) as srv:
        with pytest.raises(aiosasl.AuthenticationFailure):
            async with aioxmpp_client(srv, "alice", password="not-the-password"):
                pass
        assert len(srv.app.registry) == 0


def _bare(srv: RunningServer, user: str) -> Any:
    from mbeon_chat.xmpp.jid import JID

    return JID(user, srv.domain, None)
