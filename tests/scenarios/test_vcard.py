"""vcard-temp (XEP-0054) with real slixmpp clients: alice publishes her card, bob reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from clients import Client, connect, disconnect
from harness import RunningServer, running_server

CONFIG = {
    "plugins": {"enabled": ["ping", "disco", "roster", "presence", "vcard"], "vcard": {"max_bytes": 2048}}
}


async def login(srv: RunningServer, user: str) -> Client:
    return await connect(srv, user, plugins=("xep_0054",))


async def test_a_vcard_round_trip_is_kept_across_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            empty = await bob.plugin["xep_0054"].get_vcard(srv.jid("alice"), timeout=5)
            assert empty["vcard_temp"]["FN"] == ""  # no card yet: an empty <vCard/>

            card = alice.plugin["xep_0054"].make_vcard()
            card["FN"] = "Alice Ärger"
            card["NICKNAME"] = "ali ☀"
            await alice.plugin["xep_0054"].publish_vcard(card, timeout=5)

            got = await bob.plugin["xep_0054"].get_vcard(srv.jid("alice"), timeout=5)
            assert (got["vcard_temp"]["FN"], got["vcard_temp"]["NICKNAME"]) == ("Alice Ärger", ["ali ☀"])
        finally:
            await disconnect(alice, bob)

    async with running_server(tmp_path, CONFIG) as srv:
        alice = await login(srv, "alice")
        try:
            own = await alice.plugin["xep_0054"].get_vcard(srv.jid("alice"), timeout=5)
            assert own["vcard_temp"]["FN"] == "Alice Ärger"
        finally:
            await disconnect(alice)


async def test_only_the_owner_writes_a_vcard_within_the_size_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            card = bob.plugin["xep_0054"].make_vcard()
            card["FN"] = "Not Alice"
            with pytest.raises(IqError) as exc:
                await bob.plugin["xep_0054"].publish_vcard(card, jid=srv.jid("alice"), timeout=5)
            assert exc.value.iq["error"]["condition"] == "forbidden"

            card["DESC"] = "x" * 4096
            with pytest.raises(IqError) as exc:
                await bob.plugin["xep_0054"].publish_vcard(card, timeout=5)
            assert exc.value.iq["error"]["condition"] == "not-acceptable"

            with pytest.raises(IqError) as exc:
                await alice.plugin["xep_0054"].get_vcard(srv.jid("nobody"), timeout=5)
            assert exc.value.iq["error"]["condition"] == "service-unavailable"
        finally:
            await disconnect(alice, bob)
