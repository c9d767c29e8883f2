"""XEP-0199 XMPP Ping to the server, to an account's bare JID and to a full JID."""

from __future__ import annotations

import pytest
from conformance_kit import CLIENT, Client, condition, new_user

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

PING = "<ping xmlns='urn:xmpp:ping'/>"


async def test_ping_the_server(srv: RunningServer) -> None:
    """XEP-0199 4.2: c2s ping: an empty result from the domain."""
    client = await Client.bound(srv)
    pong = await client.ask(f"<iq type='get' id='p' to='localhost'>{PING}</iq>")
    assert (pong.get("type"), pong.get("id"), pong.get("from"), list(pong.elements())) == (
        "result",
        "p",
        "localhost",
        [],
    )


async def test_ping_a_bare_jid_is_answered_by_the_server_for_the_account(srv: RunningServer) -> None:
    """RFC 6121 8.5.2.1.3: an iq to a bare JID is handled by the server for the account; an unknown account
    gets <service-unavailable/> (8.5.1). The account's disco#info lists urn:xmpp:ping."""
    user, other = await new_user(srv), await new_user(srv)
    client = await Client.bound(srv, user)
    for to in (f"{other}@localhost", f"{user}@localhost"):
        pong = await client.ask(f"<iq type='get' id='b' to='{to}'>{PING}</iq>")
        assert (pong.get("type"), pong.get("from"), pong.get("to")) == ("result", to, client.jid)
    error = await client.ask(f"<iq type='get' id='n' to='nobody@localhost'>{PING}</iq>")
    assert (error.get("type"), condition(error)) == ("error", "service-unavailable")
    info = await client.ask(
        "<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
    assert "urn:xmpp:ping" in [f.get("var") for f in next(info.elements()).elements()]


async def test_ping_a_full_jid_goes_to_that_client(srv: RunningServer) -> None:
    """XEP-0199 4.3: client-to-client ping: the server delivers it; the pinged client answers."""
    pinger, pinged = await Client.bound(srv), await Client.bound(srv)
    pinger.send(f"<iq type='get' id='c2c' to='{pinged.jid}'>{PING}</iq>")
    request = await pinged.next()
    assert (request.tag, request.get("from"), request.get("id")) == (CLIENT + "iq", pinger.jid, "c2c")
    pinged.send(f"<iq type='result' id='c2c' to='{pinger.jid}'/>")
    pong = await pinger.next()
    assert (pong.get("type"), pong.get("from")) == ("result", pinged.jid)
