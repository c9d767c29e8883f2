"""RFC 6120 section 8: stanza semantics, addressing and stanza errors (8.1-8.3), and 10.3 (no 'to')."""

from __future__ import annotations

import pytest
from conformance_kit import CLIENT, Client, child, condition, error_type, new_user

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
UNKNOWN = "<query xmlns='urn:example:unknown'/>"


async def test_an_error_reply_keeps_the_id_swaps_the_addresses_and_carries_the_request(
    srv: RunningServer,
) -> None:
    """8.3.1: same kind and 'id', 'to' is the sender, 'from' the addressee, the original payload included,
    an <error/> with a 'type' and a defined condition in the stanzas namespace; xml:lang kept (8.1.5)."""
    client = await Client.bound(srv)
    reply = await client.ask(f"<iq type='get' id='q1' to='localhost' xml:lang='de'>{UNKNOWN}</iq>")
    assert (reply.get("type"), reply.get("id")) == ("error", "q1")
    assert (reply.get("to"), reply.get("from")) == (client.jid, "localhost")
    assert reply.get(XML_LANG) == "de"
    assert reply.find("{urn:example:unknown}query") is not None
    assert (error_type(reply), condition(reply)) == ("cancel", "service-unavailable")


async def test_results_from_the_server_come_from_its_domain(srv: RunningServer) -> None:
    """8.1.2.1: a reply the server sends on its own behalf: 'from' is the domain, 'to' the full JID."""
    client = await Client.bound(srv)
    reply = await client.ask("<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    assert (reply.get("type"), reply.get("from"), reply.get("to")) == ("result", "localhost", client.jid)


@pytest.mark.parametrize(
    ("iq", "why"),
    [
        (f"<iq type='get' to='localhost'>{UNKNOWN}</iq>", "no id"),
        ("<iq id='t1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "no type"),
        ("<iq id='t2' type='bogus' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "unknown type"),
        ("<iq id='t3' type='get' to='localhost'/>", "no child"),
        (
            "<iq id='t4' type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
            "<query xmlns='jabber:iq:version'/></iq>",
            "two children",
        ),
    ],
)
async def test_malformed_iq_requests_get_bad_request(srv: RunningServer, iq: str, why: str) -> None:
    """8.2.3: 'id' is required, 'type' is one of get/set/result/error, a get/set has exactly one child;
    8.3.3.1: the answer is <bad-request/> (type modify)."""
    client = await Client.bound(srv)
    reply = await client.ask(iq)
    assert reply.tag == CLIENT + "iq" and reply.get("type") == "error", why
    assert (condition(reply), error_type(reply)) == ("bad-request", "modify"), why


async def test_results_and_errors_are_never_answered(srv: RunningServer) -> None:
    """8.2.3 / 8.3.1: an iq result or error (with or without payload) gets no reply; no more does an error."""
    client = await Client.bound(srv)
    client.send("<iq type='result' id='r1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    client.send("<iq type='error' id='r2' to='localhost'/>")
    client.send(f"<iq type='error' id='r3'>{UNKNOWN}</iq>")
    client.send("<message type='error' to='localhost' id='r4'/>")
    await client.silence(0.4)


@pytest.mark.parametrize(
    "to", ["a@b@c", "@localhost", "bob@localhost/", "", "localhost:5222", "x@-bad-.example"]
)
async def test_a_malformed_to_gets_jid_malformed_from_the_server(srv: RunningServer, to: str) -> None:
    """RFC 7622 / 8.3.3.8: <jid-malformed/> (type modify), answered by the server's domain."""
    client = await Client.bound(srv)
    reply = await client.ask(f"<message to='{to}' id='jm' type='chat'><body>x</body></message>")
    assert (reply.get("type"), reply.get("id"), reply.get("from")) == ("error", "jm", "localhost"), to
    assert (condition(reply), error_type(reply)) == ("jid-malformed", "modify")


async def test_addresses_are_normalised_before_routing(srv: RunningServer) -> None:
    """RFC 7622 3.2-3.3: case in the localpart and domainpart and a trailing dot do not matter."""
    user = await new_user(srv)
    recipient = await Client.bound(srv, user)
    sender = await Client.bound(srv)
    resource = recipient.jid.split("/")[1]
    sender.send(f"<message to='{user.upper()}@LocalHost./{resource}' id='n'><body>x</body></message>")
    assert (await recipient.next()).get("id") == "n"


async def test_the_server_stamps_from_and_refuses_a_forged_one(srv: RunningServer) -> None:
    """8.1.2.1: the server sets 'from' to the full JID (a bare own JID is accepted); another 'from' ends the
    stream with <invalid-from/> (4.9.3.9)."""
    user = await new_user(srv)
    recipient = await Client.bound(srv, user)
    sender = await Client.bound(srv)
    bare = sender.jid.split("/")[0]
    sender.send(f"<message to='{recipient.jid}' from='{bare}' id='f'><body>x</body></message>")
    assert (await recipient.next()).get("from") == sender.jid
    sender.send(f"<message to='{recipient.jid}' from='{recipient.jid}' id='forged'><body>x</body></message>")
    assert await sender.stream_error() == "invalid-from"
    await recipient.silence(0.2)


async def test_an_iq_to_an_unavailable_full_jid_gets_service_unavailable(srv: RunningServer) -> None:
    """RFC 6121 8.5.3.2.3 / 8.5.1: an iq request to a full JID with no such resource (or no such account)."""
    user = await new_user(srv)
    client = await Client.bound(srv)
    for to in (f"{user}@localhost/none", "nobody@localhost/none"):
        reply = await client.ask(f"<iq type='get' id='x' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (reply.get("from"), condition(reply)) == (to, "service-unavailable")


async def test_disco_info_of_the_server(srv: RunningServer) -> None:
    """XEP-0030 (XEP-0479 "Feature discovery"): identity server/im, each feature once, disco itself listed."""
    client = await Client.bound(srv)
    reply = await client.ask(
        "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
    query = child(reply, "{http://jabber.org/protocol/disco#info}query")
    identities = [
        (i.get("category"), i.get("type"))
        for i in query.findall("{http://jabber.org/protocol/disco#info}identity")
    ]
    assert ("server", "im") in identities
    features = [f.get("var") for f in query.findall("{http://jabber.org/protocol/disco#info}feature")]
    assert len(features) == len(set(features))
    assert {
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:xmpp:ping",
    } <= set(features)
