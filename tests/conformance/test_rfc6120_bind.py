"""RFC 6120 section 7: resource binding, its errors (7.6.2, 7.7.2) and the conflict policy."""

from __future__ import annotations

import pytest
from conformance_kit import BIND, Client, child, condition, error_type, new_user

from harness import RunningServer
from mbeon_chat.xmpp import ns

pytestmark = pytest.mark.asyncio(loop_scope="module")


def bind(resource: str | None, iq_id: str = "b") -> str:
    inner = "" if resource is None else f"<resource>{resource}</resource>"
    return f"<iq type='set' id='{iq_id}'><bind xmlns='{ns.BIND}'>{inner}</bind></iq>"


async def test_the_client_chooses_the_resource(srv: RunningServer) -> None:
    """7.7.1: the result carries the full JID with the requested resource."""
    user = await new_user(srv)
    client = await Client.authenticated(srv, user)
    result = await client.ask(bind("laptop"))
    assert (result.get("type"), result.get("id")) == ("result", "b")
    assert child(result, BIND + "bind").findtext(BIND + "jid") == f"{user}@localhost/laptop"
    client.close()


async def test_the_server_generates_a_resource(srv: RunningServer) -> None:
    """7.6.1: an empty <bind/> gets a server-generated resource."""
    user = await new_user(srv)
    client = await Client.authenticated(srv, user)
    jid = child(await client.ask(bind(None)), BIND + "bind").findtext(BIND + "jid") or ""
    assert jid.startswith(f"{user}@localhost/") and len(jid) > len(f"{user}@localhost/")
    client.close()


async def test_an_invalid_resource_gets_bad_request_and_the_client_may_try_again(srv: RunningServer) -> None:
    """7.7.2.1: a resourcepart that cannot be prepared (RFC 7622: more than 1023 bytes) gets <bad-request/>
    (type modify); the stream stays open for another attempt."""
    client = await Client.authenticated(srv, await new_user(srv))
    error = await client.ask(bind("x" * 1024, "too-long"))
    assert (error.get("type"), error.get("id")) == ("error", "too-long")
    assert (condition(error), error_type(error)) == ("bad-request", "modify")
    assert (await client.ask(bind("fine"))).get("type") == "result"
    client.close()


async def test_a_second_session_with_the_same_resource_replaces_the_first(srv: RunningServer) -> None:
    """7.7.2.2: the server's policy here is to terminate the older session with a <conflict/> stream error
    and bind the new one."""
    user = await new_user(srv)
    old = await Client.bound(srv, user, "same")
    new = await Client.authenticated(srv, user)
    assert (await new.ask(bind("same"))).get("type") == "result"
    assert await old.stream_error() == "conflict"
    new.close()


async def test_too_many_resources_get_resource_constraint(srv: RunningServer) -> None:
    """7.6.2.1: an account at its limit of simultaneous resources (10 here): <resource-constraint/> (wait)."""
    user = await new_user(srv)
    clients = [await Client.bound(srv, user) for _ in range(10)]
    extra = await Client.authenticated(srv, user)
    error = await extra.ask(bind("eleventh"))
    assert (error.get("type"), condition(error), error_type(error)) == (
        "error",
        "resource-constraint",
        "wait",
    )
    for c in [*clients, extra]:
        c.close()


async def test_stanzas_to_others_before_binding_close_the_stream(srv: RunningServer) -> None:
    """7.1: a stanza for another entity before the resource is bound: <not-authorized/> stream error."""
    client = await Client.authenticated(srv, await new_user(srv))
    client.send("<message to='bob@localhost' type='chat'><body>before binding</body></message>")
    assert await client.stream_error() == "not-authorized"


async def test_the_legacy_session_request_is_answered_only_as_a_session_request(srv: RunningServer) -> None:
    """RFC 3921 3 (still offered as <optional/>): an iq set with <session/> to the server gets an empty
    result; an iq *result* carrying <session/> is not a request and gets no answer."""
    client = await Client.bound(srv)
    reply = await client.ask(
        "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )
    assert (reply.get("type"), reply.get("id")) == ("result", "s1")
    reply = await client.ask(
        "<iq type='set' id='s2' to='localhost'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )
    assert (reply.get("type"), reply.get("id")) == ("result", "s2")
    client.send(
        "<iq type='result' id='s3' to='localhost'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )
    await client.silence(0.3)
