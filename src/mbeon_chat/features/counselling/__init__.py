"""Counselling service: a request queue, fair assignment to available counsellors, session lifecycle.

A component at ``counselling.<domain>`` (option ``subdomain``). People ask for help with the XEP-0050
command "request-help" or by writing any message to the service; counsellors get offers and accept or
decline them (commands or "accept <id>"), then both sides chat one-to-one. See ``docs/counselling.md``.

Modules: ``policy`` (pure decisions), ``state`` (memory + reload snapshot), ``store`` (database),
``lifecycle`` (the operations), ``service`` (the component: stanzas), ``commands`` (XEP-0050),
``views`` (team view), ``texts`` (what the service says).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge, Histogram

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str

from . import commands
from .lifecycle import Lifecycle
from .service import CounsellingService
from .state import CounsellorConf, State
from .store import CounsellingStore

DEPENDS = ("adhoc",)

_COUNSELLOR_KEYS = frozenset({"jid", "languages", "topics", "capacity"})
WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)


@dataclass(frozen=True)
class Options:
    subdomain: str = "counselling"
    name: str = "Counselling"
    mode: str = "auto"  # auto: the service offers requests; manual: counsellors pick from the queue
    topics: tuple[str, ...] = ("general",)
    languages: tuple[str, ...] = ("en",)
    default_topic: str = ""  # empty: the first of `topics`
    default_language: str = ""  # empty: the first of `languages`
    #: [{jid = "anna@example.org", languages = ["en", "de"], topics = [], capacity = 2}, ...]
    counsellors: tuple[dict[str, Any], ...] = ()
    database_counsellors: bool = True  # also read counsellors from the counselling_counsellors table
    offer_timeout: float = 60.0
    grace_period: float = 30.0  # a counsellor offline this long: their sessions go back to the queue
    average_session: float = 1200.0  # seconds, for wait estimates
    max_first_message: int = 4000

    def validate(self) -> None:
        if not self.subdomain or self.subdomain.startswith(".") or self.subdomain.endswith("."):
            raise ValueError("subdomain: must be a non-empty label such as 'counselling'")
        if self.mode not in ("auto", "manual"):
            raise ValueError("mode: must be auto or manual")
        if not self.topics:
            raise ValueError("topics: at least one topic is needed")
        if not self.languages:
            raise ValueError("languages: at least one language is needed")
        if self.default_topic and self.default_topic not in self.topics:
            raise ValueError("default_topic: must be one of topics")
        if self.default_language and self.default_language not in self.languages:
            raise ValueError("default_language: must be one of languages")
        if self.offer_timeout <= 0:
            raise ValueError("offer_timeout: must be positive")
        if self.grace_period < 0:
            raise ValueError("grace_period: must not be negative")
        if self.average_session <= 0:
            raise ValueError("average_session: must be positive")
        for i, entry in enumerate(self.counsellors):
            counsellor_from_options(entry, self, f"counsellors[{i}]")


def counsellor_from_options(entry: dict[str, Any], options: Options, path: str) -> CounsellorConf:
    unknown = set(entry) - _COUNSELLOR_KEYS
    if unknown:
        raise ValueError(f"{path}.{sorted(unknown)[0]}: unknown key")
    raw = entry.get("jid")
    if not isinstance(raw, str):
        raise ValueError(f"{path}.jid: a bare JID is needed")
    try:
        jid = jid_from_str(raw)
    except InvalidJID as exc:
        raise ValueError(f"{path}.jid: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise ValueError(f"{path}.jid: must be a bare JID of an account (user@domain)")
    languages = entry.get("languages", list(options.languages[:1]))
    topics = entry.get("topics", [])
    for key, values, allowed in (
        ("languages", languages, options.languages),
        ("topics", topics, options.topics),
    ):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path}.{key}: must be a list of strings")
        for v in values:
            if v not in allowed:
                raise ValueError(f"{path}.{key}: {v!r} is not one of {key} ({', '.join(allowed)})")
    if not languages:
        raise ValueError(f"{path}.languages: at least one language is needed")
    capacity = entry.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 100:
        raise ValueError(f"{path}.capacity: must be an integer from 1 to 100")
    return CounsellorConf(str(jid), frozenset(languages), frozenset(topics), capacity, "config")


class Metrics:
    def __init__(self, registry: Any) -> None:
        queue = Gauge("mbeon_counselling_queue_length", "Requests waiting for a counsellor", registry=None)
        wait = Histogram(
            "mbeon_counselling_wait_seconds",
            "Time from a request (or its requeue) to a counsellor accepting it",
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self.queue = registry.extra(queue) if registry is not None else queue
        self.wait = registry.extra(wait) if registry is not None else wait


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    jid = JID(None, f"{options.subdomain}.{api.domain}", None)
    store = CounsellingStore(lambda: api.storage.database)
    metrics = Metrics(getattr(api.ctx, "metrics", None))
    service: CounsellingService
    lc = Lifecycle(
        jid, options, store, api.send, lambda bare: service.availability(bare), metrics, api.log, api.spawn
    )
    service = CounsellingService(api, jid, lc, options.name)
    configured = [
        counsellor_from_options(e, options, f"counsellors[{i}]") for i, e in enumerate(options.counsellors)
    ]

    previous = api.restore(1) if api.previous_state is not None else None
    restored = State.restore(previous) if previous is not None else None
    if restored is not None:
        lc.state = restored
        assert previous is not None
        for full, available, show in previous.get("presence", []):
            service.presence[jid_from_str(full)] = (available, show)
    for conf in configured:
        lc.state.counsellors[conf.jid] = conf

    async def load() -> None:
        try:
            if options.database_counsellors:
                for record in await store.counsellors():
                    if record.jid not in lc.state.counsellors:
                        lc.state.counsellors[record.jid] = CounsellorConf.from_record(record, "database")
            await lc.load()
        except Exception:
            api.log.exception("counselling.load_failed")
            raise
        service.ready.set()
        api.log.info("counselling.ready", queue=len(lc.state.waiting()), sessions=len(lc.state.sessions))

    def activate() -> None:
        if restored is not None:
            lc.restart_timers()
            service.ready.set()
            api.spawn(lc.rebalance())

    def save() -> dict[str, Any]:
        snapshot = lc.state.snapshot()
        snapshot["presence"] = [[str(j), a, s] for j, (a, s) in service.presence.items()]
        return snapshot

    if restored is None:
        api.add_task(load)
    api.on_activate(activate)
    api.on_save(save)
    api.on_unload(lc.shutdown)
    api.on("presence/self", service.observe_presence, priority=1000)
    api.on("session/ended", service.session_ended, priority=1000)
    for event in ("presence/initial", "presence/changed", "presence/unavailable"):
        api.on(event, service.presence_applied, priority=1000)
    adhoc = api.plugin("adhoc")
    if adhoc is not None:
        service.adhoc = adhoc
        commands.register(api, adhoc, service, counsellor_from_options)
    api.add_component(jid.domain, service, name=options.name)
