"""Service discovery (XEP-0030), software version (XEP-0092) and entity time (XEP-0202) with slixmpp."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from test_stream_raw import available_plugins, client_options, overrides

from clients import connect, disconnect
from harness import running_server
from mbeon_chat.features.version import package_version

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

COMPONENT_PLUGIN = '''
"""A test component so that disco#items has something to list."""


class Echo:
    async def handle(self, stanza, origin):
        return None


def setup(api):
    api.add_component("echo.localhost", Echo(), "Echo service")
'''


async def condition_of(awaitable: Any) -> str:
    with pytest.raises(IqError) as exc:
        await awaitable
    return str(exc.value.iq["error"]["condition"])


async def test_server_info_names_the_server_and_lists_the_plugin_features(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            info = (await alice.plugin["xep_0030"].get_info(jid=srv.domain, cached=False))["disco_info"]
            assert ("server", "im") in {(c, t) for c, t, _lang, _name in info["identities"]}
            features = set(info["features"])
            assert {
                DISCO_INFO,
                DISCO_ITEMS,
                "urn:xmpp:ping",
                "jabber:iq:version",
                "urn:xmpp:time",
            } <= features
            assert set(srv.app.ctx.features("host")) <= features
        finally:
            await disconnect(alice)


async def test_server_items_list_the_components(tmp_path: Any) -> None:
    site = tmp_path / "site-plugins"
    site.mkdir()
    (site / "echo_component.py").write_text(COMPONENT_PLUGIN)
    config = overrides(
        plugins={"enabled": [*available_plugins(), "echo_component"], "site_dirs": [str(site)]}
    )
    async with running_server(tmp_path, config) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            items = (await alice.plugin["xep_0030"].get_items(jid=srv.domain))["disco_items"]["items"]
            assert ("echo.localhost", None, "Echo service") in set(items)
        finally:
            await disconnect(alice)


async def test_unknown_nodes_are_item_not_found(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        disco = alice.plugin["xep_0030"]
        try:
            assert await condition_of(disco.get_info(jid=srv.domain, node="no-such-node", cached=False)) == (
                "item-not-found"
            )
            assert (
                await condition_of(disco.get_items(jid=srv.domain, node="no-such-node")) == "item-not-found"
            )
            own = srv.jid("alice")
            assert (
                await condition_of(disco.get_info(jid=own, node="no-such-node", cached=False))
                == "item-not-found"
            )
        finally:
            await disconnect(alice)


async def test_an_account_answers_its_owner(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            info = (await alice.plugin["xep_0030"].get_info(jid=srv.jid("alice"), cached=False))["disco_info"]
            assert {(c, t) for c, t, _lang, _name in info["identities"]} >= {("account", "registered")}
            assert DISCO_INFO in set(info["features"])
            items = await alice.plugin["xep_0030"].get_items(jid=srv.jid("alice"))
            assert items["type"] == "result"
        finally:
            await disconnect(alice)


async def test_an_account_does_not_answer_strangers(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice, bob = (
            await connect(srv, "alice", **client_options()),
            await connect(srv, "bob", **client_options()),
        )
        disco = bob.plugin["xep_0030"]
        try:
            # no subscription: the same answer as for an account that does not exist (XEP-0030 section 8)
            assert (
                await condition_of(disco.get_info(jid=srv.jid("alice"), cached=False))
                == "service-unavailable"
            )
            assert (
                await condition_of(disco.get_info(jid=srv.jid("nobody"), cached=False))
                == "service-unavailable"
            )
            for target in (srv.jid("alice"), srv.jid("nobody")):
                items = (await disco.get_items(jid=target))["disco_items"]["items"]
                assert list(items) == []
        finally:
            await disconnect(alice, bob)


@pytest.mark.skipif("roster" not in available_plugins(), reason="the roster feature is not in this tree yet")
async def test_an_account_answers_contacts_it_shares_presence_with(tmp_path: Any) -> None:
    from mbeon_chat.storage.api import RosterItem

    async with running_server(tmp_path, overrides()) as srv:
        await srv.app.storage.roster.put_item("alice", RosterItem(srv.jid("bob"), subscription="from"))
        bob, carol = (
            await connect(srv, "bob", **client_options()),
            await connect(srv, "carol", **client_options()),
        )
        try:
            info = (await bob.plugin["xep_0030"].get_info(jid=srv.jid("alice"), cached=False))["disco_info"]
            assert ("account", "registered") in {(c, t) for c, t, _lang, _name in info["identities"]}
            disco = carol.plugin["xep_0030"]
            assert (
                await condition_of(disco.get_info(jid=srv.jid("alice"), cached=False))
                == "service-unavailable"
            )
        finally:
            await disconnect(bob, carol)


async def test_software_version_names_mbeon_chat_and_hides_the_os(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            version = (await alice.plugin["xep_0092"].get_version(srv.domain))["software_version"]
            assert version["name"] == "mbeon-chat"
            assert version["version"] == package_version() != "unknown"
            assert not version["os"]
        finally:
            await disconnect(alice)


async def test_software_version_shows_the_os_when_configured(tmp_path: Any) -> None:
    plugins = {"enabled": available_plugins(), "version": {"show_os": True}}
    async with running_server(tmp_path, overrides(plugins=plugins)) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            version = (await alice.plugin["xep_0092"].get_version(srv.domain))["software_version"]
            assert version["os"]
        finally:
            await disconnect(alice)


async def test_entity_time_is_the_current_utc_time(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", plugins=("xep_0202",), **client_options())
        try:
            answer = (await alice.plugin["xep_0202"].get_entity_time(srv.domain))["entity_time"]
            # read the XML: slixmpp's own parser appends a second "Z" to XEP-0202's <utc>...Z</utc>
            text = answer.xml.findtext("{urn:xmpp:time}utc")
            assert text.endswith("Z")
            utc = datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.UTC)
            assert abs((datetime.datetime.now(datetime.UTC) - utc).total_seconds()) < 30
            tzo = answer.xml.findtext("{urn:xmpp:time}tzo")
            assert len(tzo) == 6 and tzo[0] in "+-"
        finally:
            await disconnect(alice)


async def test_an_unknown_query_to_the_server_is_service_unavailable(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice = await connect(srv, "alice", **client_options())
        try:
            iq = alice.make_iq_get(queryxmlns="urn:example:nothing", ito=srv.domain)
            assert await condition_of(iq.send(timeout=5)) == "service-unavailable"
        finally:
            await disconnect(alice)


def test_time_element_formats_offset_and_utc() -> None:
    from mbeon_chat.features.time import time_element

    el = time_element(datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC))
    assert el.findtext("{urn:xmpp:time}utc") == "2024-05-01T12:00:00.123Z"
    tzo = el.findtext("{urn:xmpp:time}tzo")
    assert tzo is not None and tzo[0] in "+-" and tzo[3] == ":"
