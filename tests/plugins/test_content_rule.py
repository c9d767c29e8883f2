"""plugins/content_rule.py: configured patterns in messages to counsellors are blocked (notice to the sender,
as an error or a message) or flagged (delivered, logged and counted without the content)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from reload_kit import ConfigFile

from clients import connect, disconnect
from harness import running_server

ENABLED = ["ping", "content_rule"]
RULES = [
    {"name": "insult", "pattern": r"\b(idiot|trottel)\b", "action": "block"},
    {"name": "phone", "pattern": r"\+?\d[\d /-]{6,}\d", "action": "flag"},
]
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NOTICES = {"en": "Not delivered: please stay respectful.", "de": "Nicht zugestellt: bitte bleib respektvoll."}


def options(**extra: Any) -> dict[str, Any]:
    return {"counsellors": ["bob@localhost"], "rules": RULES, "notices": NOTICES, **extra}


async def test_blocked_messages_never_arrive_and_the_sender_gets_a_policy_violation(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path, tmp_path, {"plugins": {"enabled": ENABLED, "content_rule": options()}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        carol = await connect(srv, "carol", get_roster=False, send_presence=False)
        try:
            msg = alice.make_message(mto="bob@localhost/test", mbody="You IDIOT", mtype="chat")
            msg["lang"] = "de"
            msg.send()
            error = await alice.next_message(with_body=False)
            assert error["type"] == "error"
            # (slixmpp predates RFC 6120's policy-violation, so read the element itself)
            assert error.xml.find(f"{{jabber:client}}error/{{{STANZAS}}}policy-violation") is not None
            assert error["error"]["text"] == NOTICES["de"]
            alice.send_message(mto="bob@localhost/test", mbody="sorry", mtype="chat")
            assert (await bob.next_message())["body"] == "sorry"  # the blocked one never arrived

            # not a counsellor: no rule applies
            alice.send_message(mto="carol@localhost/test", mbody="idiot", mtype="chat")
            assert (await carol.next_message())["body"] == "idiot"
            assert srv.app.ctx.exports["content_rule"]["counts"] == {"block:insult": 1}
        finally:
            await disconnect(alice, bob, carol)


async def test_flagged_messages_are_delivered_logged_and_counted_without_content(tmp_path: Path) -> None:
    cfg = ConfigFile(
        tmp_path,
        tmp_path,
        {"plugins": {"enabled": ENABLED, "content_rule": options()}, "log": {"level": "info"}},
    )
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            body = "call me on +49 170 1234567"
            with structlog.testing.capture_logs() as logs:
                alice.send_message(mto="bob@localhost/test", mbody=body, mtype="chat")
                assert (await bob.next_message())["body"] == body
            flagged = [e for e in logs if e["event"] == "content_rule.flagged"]
            assert len(flagged) == 1 and flagged[0]["rule"] == "phone"
            assert flagged[0]["recipient"] == "bob@localhost/test" and flagged[0]["sender"].startswith(
                "alice@"
            )
            assert not any("1234567" in str(v) for e in logs for v in e.values())

            # the count and the metric survive a reload (state handover; the metric is registered once)
            assert (await srv.app.reload("content_rule")).ok
            alice.send_message(mto="bob@localhost/test", mbody="or 030 1234 5678", mtype="chat")
            await bob.next_message()
            assert srv.app.ctx.exports["content_rule"]["counts"] == {"flag:phone": 2}
            metrics = srv.app.metrics.render().decode()
            assert 'mbeon_content_rule_events_total{action="flag",rule="phone"} 2.0' in metrics
        finally:
            await disconnect(alice, bob)


async def test_block_with_a_message_from_the_server_and_patterns_change_on_reload(tmp_path: Path) -> None:
    cfg = ConfigFile(
        tmp_path, tmp_path, {"plugins": {"enabled": ENABLED, "content_rule": options(block_with="message")}}
    )
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        alice = await connect(srv, "alice", get_roster=False, send_presence=False)
        bob = await connect(srv, "bob", get_roster=False, send_presence=False)
        try:
            alice.send_message(mto="bob@localhost/test", mbody="trottel", mtype="chat")
            notice = await alice.next_message()
            assert str(notice["from"]) == "localhost" and notice["body"] == NOTICES["en"]

            rules = [{"name": "spam", "pattern": "buy now", "action": "block"}]
            cfg.write(
                {"plugins": {"enabled": ENABLED, "content_rule": options(block_with="message", rules=rules)}}
            )
            assert (await srv.app.reload()).ok
            alice.send_message(mto="bob@localhost/test", mbody="trottel", mtype="chat")
            assert (await bob.next_message())["body"] == "trottel"
            alice.send_message(mto="bob@localhost/test", mbody="BUY NOW", mtype="chat")
            assert (await alice.next_message())["body"] == NOTICES["en"]
            await asyncio.sleep(0.3)
            assert bob.messages.empty()
        finally:
            await disconnect(alice, bob)


async def test_an_invalid_pattern_is_a_config_error_naming_the_rule(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path, tmp_path, {"plugins": {"enabled": ENABLED, "content_rule": options()}})
    async with running_server(tmp_path, config_path=cfg.path) as srv:
        bad = [RULES[0], {"name": "broken", "pattern": "(unclosed", "action": "flag"}]
        cfg.write({"plugins": {"enabled": ENABLED, "content_rule": options(rules=bad)}})
        report = await srv.app.reload()
        assert not report.ok
        assert report.error.startswith("plugins.content_rule.rules[1].pattern: invalid regular expression")
        bad = [{"name": "x", "pattern": "x", "action": "delete"}]
        cfg.write({"plugins": {"enabled": ENABLED, "content_rule": options(rules=bad)}})
        report = await srv.app.reload()
        assert report.error == "plugins.content_rule.rules[0].action: must be block or flag, not 'delete'"
