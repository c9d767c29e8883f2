"""RFC 6120 10.3 and 8.1.2.1: stanzas without 'to' are handled for the sender's account; addresses the server
itself does not serve."""

from __future__ import annotations

import pytest
from conformance_kit import CLIENT, Client, condition, new_user

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

UNKNOWN = "<query xmlns='urn:example:unknown'/>"


async def online(srv: RunningServer, user: str) -> Client:
    client = await Client.bound(srv, user)
    await client.available()
    return client


async def test_a_stanza_without_to_is_answered_for_the_account(srv: RunningServer) -> None:
    """10.3 and 8.1.2.1: an iq without 'to' is handled for the sender's account: its result has no 'from'
    (or the bare JID) and so has its error, never the server's domain."""
    user = await new_user(srv)
    client = await Client.bound(srv, user)
    result = await client.ask("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    assert result.get("type") == "result" and result.get("from") in (None, f"{user}@localhost")
    error = await client.ask(f"<iq type='get' id='u'>{UNKNOWN}</iq>")
    assert error.get("type") == "error" and error.get("from") in (None, f"{user}@localhost")
    assert condition(error) == "service-unavailable"
    error = await client.ask("<presence type='bogus'/>")
    assert error.get("type") == "error" and error.get("from") in (None, f"{user}@localhost")


async def test_a_message_without_to_is_for_the_senders_bare_jid(srv: RunningServer) -> None:
    """RFC 6120 10.3.1: no 'to': handled as if addressed to the sender's bare JID (its resources)."""
    alice = await new_user(srv)
    sender = await online(srv, alice)
    sender.send("<message type='chat' id='self'><body>note to self</body></message>")
    el = await sender.next()
    assert (el.tag, el.get("id"), el.get("type")) == (CLIENT + "message", "self", "chat")


async def test_presence_to_a_server_resource_is_ignored(srv: RunningServer) -> None:
    """Presence to <domain/resource> (no such service) is ignored like presence to the domain (8.5, 10.4)."""
    client = await Client.bound(srv, await new_user(srv))
    client.send("<presence to='localhost/nothing-here'/>")
    client.send("<presence to='localhost'/>")
    await client.silence(0.3)
    reply = await client.ask("<message to='localhost/nothing-here' id='m'><body>x</body></message>")
    assert condition(reply) == "service-unavailable"
