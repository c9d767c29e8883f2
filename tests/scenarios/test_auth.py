"""Logging in over real sockets: success, wrong passwords, TLS first, and slowing down guessers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_stream_raw import SASL, TLS, RawClient, client_options, overrides

from clients import Client, connect, disconnect
from harness import running_server


async def test_a_correct_password_logs_in(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            assert alice.boundjid.bare == srv.jid("alice")
            assert len(srv.app.registry) == 1
        finally:
            await disconnect(alice)


async def test_a_wrong_password_is_refused_and_the_client_sees_failed_auth(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(auth={"failure_delay": 0.01})) as srv:
        with pytest.raises(PermissionError):
            await connect(srv, "alice", password="not-the-password", **client_options())
        assert len(srv.app.registry) == 0


async def test_an_unknown_user_looks_like_a_wrong_password(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(auth={"failure_delay": 0.01})) as srv:
        client = Client(f"nobody@{srv.domain}/x", "whatever-password")
        client.ssl_context = srv.client_ssl()
        client.enable_plaintext = False
        failures: list[str] = []
        client.add_event_handler("failed_auth", lambda stanza: failures.append(stanza["condition"]))
        client.connect(host="127.0.0.1", port=srv.starttls_port)
        try:
            assert await asyncio.wait_for(client.session_started, 10) is False
            assert failures[0] == "not-authorized"
        finally:
            client.disconnect()


async def test_tls_comes_before_authentication(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv, starttls=False)
        features = await client.open_stream()
        assert [el.tag for el in features.elements()] == [TLS + "starttls"]
        answer = await client.auth_plain("alice", srv.users["alice"])
        assert answer.tag == SASL + "failure"
        assert next(answer.elements()).local == "encryption-required"
        client.close()


async def test_plain_over_tls_logs_in_and_binds(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv)
        jid = await client.login("alice", srv.users["alice"], resource="raw")
        assert jid == f"{srv.jid('alice')}/raw"
        client.close()


async def test_three_failures_on_one_stream_end_it_with_policy_violation(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(auth={"failure_delay": 0.01, "max_attempts": 3})) as srv:
        client = await RawClient.open(srv)
        for _ in range(2):
            answer = await client.auth_plain("alice", "wrong-password")
            assert next(answer.elements()).local == "not-authorized"
        answer = await client.auth_plain("alice", "wrong-password")
        assert next(answer.elements()).local == "not-authorized"
        assert await client.stream_error() == "policy-violation"


async def test_repeated_failed_logins_from_one_address_are_answered_ever_later(tmp_path: Any) -> None:
    step = 0.25  # the 3rd answer waits 2 steps, the 1st none: a 0.25 s margin for a busy machine
    async with running_server(
        tmp_path, overrides(auth={"failure_delay": step, "failure_delay_max": 5.0})
    ) as srv:
        loop = asyncio.get_running_loop()
        answer_times: list[float] = []
        for _ in range(3):
            client = await RawClient.open(srv)  # a fresh connection each time: the delay follows the address
            started = loop.time()
            answer = await client.auth_plain("alice", "wrong-password")
            answer_times.append(loop.time() - started)
            assert next(answer.elements()).local == "not-authorized"
            client.close()
        first, _, third = answer_times
        tolerance = 0.05
        assert third > first
        assert third - first >= step - tolerance, answer_times
        assert srv.app.throttle.failures("127.0.0.1") == 3


async def test_a_successful_login_clears_the_failure_count(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(auth={"failure_delay": 0.01})) as srv:
        client = await RawClient.open(srv)
        await client.auth_plain("alice", "wrong-password")
        assert srv.app.throttle.failures("127.0.0.1") == 1
        answer = await client.auth_plain("alice", srv.users["alice"])
        assert answer.tag == SASL + "success"
        assert srv.app.throttle.failures("127.0.0.1") == 0
        client.close()
