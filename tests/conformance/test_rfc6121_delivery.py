"""RFC 6121 section 8.5: how the server delivers stanzas addressed to its own accounts, by type and address.

Each test has accounts of its own (the server is shared by the module): nothing else is online for them.
"""

from __future__ import annotations

import pytest
from conformance_kit import CLIENT, Client, condition, error_type, new_user

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def online(srv: RunningServer, user: str, priority: int = 0) -> Client:
    client = await Client.bound(srv, user)
    await client.available(priority)
    return client


async def test_bare_jid_normal_and_chat_go_to_the_highest_priority_headline_to_all(
    srv: RunningServer,
) -> None:
    """8.5.2.1.1: normal/chat to the most available (highest non-negative priority) resource; headline to
    every resource with a non-negative priority; a negative priority receives neither."""
    sender = await Client.bound(srv, await new_user(srv))
    bob = await new_user(srv)
    high, low, negative = await online(srv, bob, 5), await online(srv, bob, 1), await online(srv, bob, -1)
    for c in (high, low):  # each resource also learns of the others' presence
        while (el := await c.next(1)).tag != CLIENT + "presence" or el.get("from") != negative.jid:
            pass
    for type_ in ("normal", "chat"):
        sender.send(f"<message to='{bob}@localhost' type='{type_}' id='m-{type_}'><body>hi</body></message>")
        assert (await high.next()).get("id") == f"m-{type_}"
    sender.send(f"<message to='{bob}@localhost' type='headline' id='h'><body>news</body></message>")
    assert (await high.next()).get("id") == "h"
    assert (await low.next()).get("id") == "h"
    await low.silence(0.2)
    await negative.silence(0.2)
    await sender.silence(0.2)


async def test_bare_jid_groupchat_is_refused_and_error_ignored(srv: RunningServer) -> None:
    """8.5.2.1.1: groupchat to a bare JID is never delivered; the sender gets <service-unavailable/>.
    A message of type error to a bare JID is silently ignored."""
    sender = await Client.bound(srv, await new_user(srv))
    bob = await new_user(srv)
    resource = await online(srv, bob)
    reply = await sender.ask(
        f"<message to='{bob}@localhost' type='groupchat' id='g'><body>x</body></message>"
    )
    assert (reply.get("type"), reply.get("id"), condition(reply)) == ("error", "g", "service-unavailable")
    sender.send(f"<message to='{bob}@localhost' type='error' id='e'><body>x</body></message>")
    await resource.silence(0.3)
    await sender.silence(0.1)


async def test_unknown_message_type_is_treated_as_normal(srv: RunningServer) -> None:
    """RFC 6121 5.2.2: an unknown 'type' is handled as "normal" (highest priority only; an error to an
    unavailable full JID)."""
    sender = await Client.bound(srv, await new_user(srv))
    bob = await new_user(srv)
    high, low = await online(srv, bob, 2), await online(srv, bob, 1)
    await high.next()  # low's presence
    sender.send(f"<message to='{bob}@localhost' type='bogus' id='b'><body>x</body></message>")
    assert (await high.next()).get("id") == "b"
    await low.silence(0.2)
    reply = await sender.ask(
        f"<message to='{bob}@localhost/gone' type='bogus' id='b2'><body>x</body></message>"
    )
    assert condition(reply) == "service-unavailable"


async def test_full_jid_without_that_resource(srv: RunningServer) -> None:
    """8.5.3.2.1: no available resource matches the full JID. chat: as if to the bare JID (here: the other
    resource); normal and groupchat: an error, <service-unavailable/>; headline, error: silently ignored."""
    sender = await Client.bound(srv, await new_user(srv))
    bob = await new_user(srv)
    other = await online(srv, bob)
    gone = f"{bob}@localhost/gone"
    sender.send(f"<message to='{gone}' type='chat' id='c'><body>x</body></message>")
    assert (await other.next()).get("id") == "c"
    for type_ in ("normal", "groupchat"):
        reply = await sender.ask(f"<message to='{gone}' type='{type_}' id='{type_}'><body>x</body></message>")
        assert (reply.get("id"), reply.get("from"), condition(reply)) == (type_, gone, "service-unavailable")
        assert error_type(reply) == "cancel"
    for type_ in ("headline", "error"):
        sender.send(f"<message to='{gone}' type='{type_}' id='{type_}'><body>x</body></message>")
    await other.silence(0.3)
    await sender.silence(0.1)


async def test_bare_jid_without_available_resources(srv: RunningServer) -> None:
    """8.5.2.2.1: chat/normal are stored offline (XEP-0160) and delivered with the initial presence; headline,
    groupchat (an error) and error are not stored."""
    sender = await Client.bound(srv, await new_user(srv))
    bob = await new_user(srv)
    sender.send(f"<message to='{bob}@localhost' type='chat' id='stored'><body>later</body></message>")
    sender.send(f"<message to='{bob}@localhost' type='headline' id='dropped'><body>news</body></message>")
    reply = await sender.ask(
        f"<message to='{bob}@localhost' type='groupchat' id='g'><body>x</body></message>"
    )
    assert condition(reply) == "service-unavailable"
    await sender.silence(0.2)
    client = await Client.bound(srv, bob)
    client.send("<presence/>")
    while (el := await client.next()).tag != CLIENT + "message" or el.get("id") != "stored":
        pass
    await client.silence(0.3)


async def test_no_such_account(srv: RunningServer) -> None:
    """8.5.1: message: <service-unavailable/>; presence: silently ignored; iq: <service-unavailable/>."""
    sender = await Client.bound(srv, await new_user(srv))
    reply = await sender.ask("<message to='nobody@localhost' type='chat' id='m'><body>x</body></message>")
    assert (reply.get("from"), condition(reply)) == ("nobody@localhost", "service-unavailable")
    sender.send("<presence to='nobody@localhost'/>")
    sender.send("<presence type='subscribe' to='nobody@localhost'/>")
    await sender.silence(0.3)
    reply = await sender.ask(
        "<iq to='nobody@localhost' type='get' id='i'><query xmlns='jabber:iq:version'/></iq>"
    )
    assert (reply.get("type"), condition(reply)) == ("error", "service-unavailable")
