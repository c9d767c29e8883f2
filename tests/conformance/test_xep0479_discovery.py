"""XEP-0479 (Compliance Suites 2023), as a compliance tester sees the server: what it advertises.

The behaviour behind each feature has its own scenario tests; here we check the advertisement a tester
starts from (stream features, disco#info of the server, of an account and of the MUC service).
"""

from __future__ import annotations

import pytest
from conformance_kit import Client, child

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

INFO = "{http://jabber.org/protocol/disco#info}"


async def disco(
    client: Client, to: str | None
) -> tuple[set[tuple[str | None, str | None]], list[str | None]]:
    attr = f" to='{to}'" if to else ""
    reply = await client.ask(
        f"<iq type='get' id='d'{attr}><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
    query = child(reply, INFO + "query")
    identities = {(i.get("category"), i.get("type")) for i in query.findall(INFO + "identity")}
    return identities, [f.get("var") for f in query.findall(INFO + "feature")]


async def test_stream_features_after_authentication(srv: RunningServer) -> None:
    """RFC 6120 7 (bind), RFC 6121 2.6 (roster versioning) and 3.4 (pre-approval), XEP-0198, XEP-0352."""
    client = await Client.authenticated(srv)
    tags = {el.tag for el in client.features.elements()}
    assert {
        "{urn:ietf:params:xml:ns:xmpp-bind}bind",
        "{urn:xmpp:features:rosterver}ver",
        "{urn:xmpp:features:pre-approval}sub",
        "{urn:xmpp:sm:3}sm",
        "{urn:xmpp:csi:0}csi",
    } <= tags
    client.close()


async def test_the_server_advertises_the_core_and_im_server_features(srv: RunningServer) -> None:
    """Core: XEP-0030 (identity server/im, each feature once). IM: XEP-0280 carbons, XEP-0054 vcard-temp,
    XEP-0191 blocking; also XEP-0199 ping, XEP-0160 offline messages, XEP-0050 commands."""
    client = await Client.bound(srv)
    identities, features = await disco(client, "localhost")
    assert ("server", "im") in identities
    assert len(features) == len(set(features))
    assert {
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:xmpp:carbons:2",
        "vcard-temp",
        "urn:xmpp:blocking",
        "urn:xmpp:ping",
        "msgoffline",
        "http://jabber.org/protocol/commands",
    } <= set(features)


async def test_an_account_advertises_pep_and_mam(srv: RunningServer) -> None:
    """Advanced: XEP-0163 PEP (identity pubsub/pep, XEP-0223 publish-options), XEP-0313 MAM on the account,
    XEP-0402 bookmarks compatibility."""
    client = await Client.bound(srv)
    identities, features = await disco(client, None)
    assert {("account", "registered"), ("pubsub", "pep")} <= identities
    assert len(features) == len(set(features))
    assert {
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#publish-options",
        "urn:xmpp:mam:2",
        "urn:xmpp:bookmarks:1#compat",
    } <= set(features)


async def test_the_muc_service_is_discoverable(srv: RunningServer) -> None:
    """IM: XEP-0045 group chat, through a service listed in the server's disco#items."""
    client = await Client.bound(srv)
    items = await client.ask(
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
    )
    jids = [i.get("jid") for i in child(items, "{http://jabber.org/protocol/disco#items}query").elements()]
    muc = [j for j in jids if j is not None and ("conference", "text") in (await disco(client, j))[0]]
    assert muc, jids
    _, features = await disco(client, muc[0])
    assert "http://jabber.org/protocol/muc" in features
