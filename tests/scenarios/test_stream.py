"""Streams with a real client (slixmpp): STARTTLS and direct TLS, resource conflicts, spoofed senders."""

from __future__ import annotations

import asyncio
from typing import Any

from test_stream_raw import RawClient, client_options, conversation_still_works, overrides

from clients import connect, disconnect
from harness import running_server


async def test_slixmpp_logs_in_over_starttls_and_pings_the_server(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            assert str(alice.boundjid) == f"{srv.jid('alice')}/test"
            assert alice.is_connected()
            rtt = await alice.plugin["xep_0199"].ping(srv.domain, timeout=5)
            assert rtt is not None and rtt < 5
        finally:
            await disconnect(alice)


async def test_slixmpp_logs_in_over_direct_tls(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", direct_tls=True, **client_options())
        bob = await connect(srv, "bob", **client_options())
        try:
            assert str(alice.boundjid) == f"{srv.jid('alice')}/test"
            await conversation_still_works(srv, alice, bob, "over direct TLS")
        finally:
            await disconnect(alice, bob)


async def test_direct_tls_offers_mechanisms_straight_away(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv, direct_tls=True)
        features = await client.open_stream()
        mechanisms = [
            m.text for m in features.find("{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms").elements()
        ]
        assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
        assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
        client.close()


async def test_a_second_session_with_the_same_full_jid_closes_the_older_with_conflict(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        first = await connect(srv, "alice", resource="phone", **client_options())
        second = await connect(srv, "alice", resource="phone", **client_options())
        try:
            error = await asyncio.wait_for(first.stream_errors.get(), 10)
            assert error["condition"] == "conflict"
            await asyncio.wait_for(first.closed.wait(), 10)
            assert second.is_connected()
            sessions = srv.app.registry.resources(_bare(srv, "alice"))
            assert [str(s.jid) for s in sessions] == [f"{srv.jid('alice')}/phone"]
            rtt = await second.plugin["xep_0199"].ping(srv.domain, timeout=5)
            assert rtt is not None
        finally:
            await disconnect(first, second)


async def test_two_resources_of_one_account_live_side_by_side(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        phone = await connect(srv, "alice", resource="phone", **client_options())
        laptop = await connect(srv, "alice", resource="laptop", **client_options())
        try:
            assert phone.stream_errors.empty() and laptop.stream_errors.empty()
            assert len(srv.app.registry.resources(_bare(srv, "alice"))) == 2
        finally:
            await disconnect(phone, laptop)


async def test_a_spoofed_from_ends_the_stream_with_invalid_from(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        bob = await connect(srv, "bob", **client_options())
        try:
            alice.send_message(mto=f"{srv.jid('bob')}/test", mbody="I am carol", mfrom=srv.jid("carol"))
            error = await asyncio.wait_for(alice.stream_errors.get(), 10)
            assert error["condition"] == "invalid-from"
            await asyncio.wait_for(alice.closed.wait(), 10)
            try:
                msg = await bob.next_message(timeout=0.5)
            except TimeoutError:
                pass
            else:
                raise AssertionError(f"a spoofed message was delivered: {msg}")
        finally:
            await disconnect(alice, bob)


async def test_the_server_stamps_the_senders_full_jid(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        bob = await connect(srv, "bob", **client_options())
        try:
            # no 'from', and 'from' set to the sender's own bare JID: both become the full JID
            alice.send_message(mto=f"{srv.jid('bob')}/test", mbody="one")
            alice.send_message(mto=f"{srv.jid('bob')}/test", mbody="two", mfrom=srv.jid("alice"))
            for body in ("one", "two"):
                msg = await bob.next_message()
                assert (msg["body"], str(msg["from"])) == (body, f"{srv.jid('alice')}/test")
        finally:
            await disconnect(alice, bob)


async def test_a_raw_client_cannot_spoof_either(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        raw = await RawClient.open(srv)
        await raw.login("carol", srv.users["carol"])
        raw.send(b"<message from='alice@localhost/test' to='bob@localhost/test'><body>x</body></message>")
        assert await raw.stream_error() == "invalid-from"
        # the session is over on the server too (no ghost session left behind)
        async with asyncio.timeout(5):
            while srv.app.registry.resources(_bare(srv, "carol")) or srv.app.ctx.connections:
                await asyncio.sleep(0.02)


def _bare(srv: Any, user: str) -> Any:
    from mbeon_chat.xmpp.jid import JID

    return JID(user, srv.domain, None)
