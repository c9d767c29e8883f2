"""Content rules: configured patterns in messages to counsellors are blocked or flagged.

- ``block``: the message is not delivered; the sender gets a notice (a ``policy-violation`` error reply
  carrying the notice text, or with ``block_with = "message"`` a chat message from the server).
- ``flag``: the message is delivered; an event is logged (``content_rule.flagged`` with the rule name,
  sender, recipient and stanza id, never the content) and counted (``mbeon_content_rule_events``).

Patterns are Python regular expressions, compiled once per load/reload (an invalid one is a config error
naming its key path)::

    [plugins.content_rule]
    counsellors = ["anna@beratung.example"]    # "*": every local account
    block_with = "error"                        # or "message"
    default_language = "de"

    [[plugins.content_rule.rules]]
    name = "phone-number"
    pattern = '(\\+|\\b0)\\d[\\d /-]{6,}\\d'
    action = "flag"

    [[plugins.content_rule.rules]]
    name = "insult"
    pattern = '\\b(idiot|trottel)\\b'
    action = "block"

    [plugins.content_rule.notices]
    de = "Deine Nachricht wurde nicht zugestellt: bitte bleib respektvoll."
    en = "Your message was not delivered: please stay respectful."

The check runs on ``stanza/in`` (messages from clients, before routing), for chat and normal messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID, InvalidJID
from mbeon_chat.xmpp.stanza import BODY, Stanza, make_message

DEPENDS = ()
LANG = "{" + ns.XML + "}lang"


@dataclass(frozen=True)
class Rule:
    name: str = ""
    pattern: str = ""
    action: str = "block"  # block | flag
    ignore_case: bool = True

    def validate(self) -> None:
        if not self.name:
            raise ValueError("name: every rule needs a name (it is what the logs and metrics show)")
        if self.action not in ("block", "flag"):
            raise ValueError(f"action: must be block or flag, not {self.action!r}")
        if not self.pattern:
            raise ValueError("pattern: must not be empty")
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern: invalid regular expression: {exc}") from None


@dataclass(frozen=True)
class Options:
    counsellors: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    block_with: str = "error"  # error | message
    default_language: str = "en"
    notices: dict[str, str] = field(
        default_factory=lambda: {
            "en": "Your message was not delivered because it breaks the rules of this service."
        }
    )

    def validate(self) -> None:
        for i, c in enumerate(self.counsellors):
            if c == "*":
                continue
            try:
                jid = JID.parse(c)
            except InvalidJID as exc:
                raise ValueError(f"counsellors[{i}]: {exc}") from None
            if jid.local is None or jid.resource is not None:
                raise ValueError(f'counsellors[{i}]: must be a bare JID or "*"')
        names = [r.name for r in self.rules]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"rules[{i}].name: {name!r} is used twice")
        if self.block_with not in ("error", "message"):
            raise ValueError(f"block_with: must be error or message, not {self.block_with!r}")
        for lang, text in self.notices.items():
            if not isinstance(text, str):
                raise ValueError(f"notices.{lang}: must be a string")
        if self.default_language not in self.notices:
            raise ValueError(f"notices: needs a text for default_language {self.default_language!r}")


def setup(api: PluginAPI) -> None:
    opts: Options = api.options
    everyone = "*" in opts.counsellors
    counsellors = frozenset(str(JID.parse(c)) for c in opts.counsellors if c != "*")
    compiled = [(r, re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0)) for r in opts.rules]
    blocks = [(r, p) for r, p in compiled if r.action == "block"]
    flags = [(r, p) for r, p in compiled if r.action == "flag"]
    events = api.metric(
        Counter(
            "mbeon_content_rule_events",
            "Messages blocked or flagged by content rules",
            ["rule", "action"],
            registry=None,
        )
    )
    state = api.restore(1)
    counts: dict[str, int] = dict(state["counts"]) if state else {}

    def applies(to: JID | None) -> bool:
        if to is None or to.local is None or to.domain != api.domain:
            return False
        return everyone or str(to.bare) in counsellors

    def record(rule: Rule, stanza: Stanza) -> None:
        key = f"{rule.action}:{rule.name}"
        counts[key] = counts.get(key, 0) + 1
        events.labels(rule.name, rule.action).inc()
        api.log.info(
            f"content_rule.{'blocked' if rule.action == 'block' else 'flagged'}",
            rule=rule.name,
            sender=str(stanza.from_),
            recipient=str(stanza.to),
            stanza_id=stanza.id,
        )

    async def on_stanza(stanza: Stanza, session: Any) -> bool | None:
        if stanza.kind != "message" or stanza.type not in ("chat", "normal") or not applies(stanza.to):
            return None
        bodies = [b.text for b in stanza.el.findall(BODY)]
        if not bodies or (stanza.from_ is not None and str(stanza.from_.bare) in counsellors):
            return None
        for rule, pattern in blocks:
            if any(pattern.search(text) for text in bodies):
                record(rule, stanza)
                await notify(stanza)
                return True  # dropped
        for rule, pattern in flags:
            if any(pattern.search(text) for text in bodies):
                record(rule, stanza)
                break
        return None

    async def notify(stanza: Stanza) -> None:
        lang = stanza.el.get(LANG) or ""
        text = (
            opts.notices.get(lang)
            or opts.notices.get(lang.split("-")[0])
            or opts.notices[opts.default_language]
        )
        if opts.block_with == "error":
            await api.router.reply_error(stanza, StanzaError(StanzaCondition.POLICY_VIOLATION, text))
        elif stanza.from_ is not None:
            await api.send(make_message(stanza.from_, text, "chat", api.host_jid))

    api.on("stanza/in", on_stanza, priority=100)
    api.on_save(lambda: {"version": 1, "counts": dict(counts)})
    api.export({"counts": counts})
