"""Prometheus metrics (prefix ``mbeon_``). Labels never carry JIDs or message content."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mbeon_chat.xmpp.element import Element

_KIND = {
    "{jabber:client}message": "message",
    "{jabber:client}presence": "presence",
    "{jabber:client}iq": "iq",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("mbeon_connections", "Open client connections", ["transport"], registry=r)
        self.sessions = Gauge("mbeon_sessions", "Authenticated, bound sessions", registry=r)
        self.stanzas_in = Counter("mbeon_stanzas_in", "Stanzas received from clients", ["kind"], registry=r)
        self.stanzas_out = Counter("mbeon_stanzas_out", "Stanzas written to clients", ["kind"], registry=r)
        self.auth_total = Counter("mbeon_auth", "Authentication attempts", ["result"], registry=r)
        self.stream_errors = Counter("mbeon_stream_errors", "Stream errors sent", ["condition"], registry=r)
        self.routing = Histogram(
            "mbeon_routing_seconds",
            "Time to route one stanza",
            ["kind"],
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.db = Histogram(
            "mbeon_db_seconds", "Database transactions by name", ["txn", "result"], registry=r
        )
        self.plugin_reloads = Counter("mbeon_plugin_reloads", "Plugin reloads", ["result"], registry=r)
        self.websocket_refusals = Counter(
            "mbeon_websocket_refused", "WebSocket upgrades refused", ["reason"], registry=r
        )
        # Series that exist from the start, so a dashboard shows 0 instead of "no data".
        for transport in ("tcp", "websocket"):
            self.connections.labels(transport)
        for result in ("success", "failure"):
            self.auth_total.labels(result)
        for result in ("ok", "error"):
            self.plugin_reloads.labels(result)
        self._in = {k: self.stanzas_in.labels(v) for k, v in _KIND.items()}
        self._out = {k: self.stanzas_out.labels(v) for k, v in _KIND.items()}
        self._other_in = self.stanzas_in.labels("other")
        self._other_out = self.stanzas_out.labels("other")
        self._routing = {k: self.routing.labels(k) for k in ("message", "presence", "iq")}

    def connection_opened(self, transport: str) -> None:
        self.connections.labels(transport).inc()

    def connection_closed(self, transport: str) -> None:
        self.connections.labels(transport).dec()

    def session_bound(self, count: int) -> None:
        self.sessions.set(count)

    def stanza_in(self, el: Element) -> None:
        self._in.get(el.tag, self._other_in).inc()

    def stanza_out(self, el: Element) -> None:
        self._out.get(el.tag, self._other_out).inc()

    def auth(self, ok: bool) -> None:
        self.auth_total.labels("success" if ok else "failure").inc()

    def stream_error(self, condition: str) -> None:
        self.stream_errors.labels(condition).inc()

    def routed(self, kind: str, seconds: float) -> None:
        self._routing[kind].observe(seconds)

    def db_timing(self, name: str, seconds: float, ok: bool) -> None:
        self.db.labels(name, "ok" if ok else "error").observe(seconds)

    def plugin_reload(self, ok: bool) -> None:
        self.plugin_reloads.labels("ok" if ok else "error").inc()

    def websocket_refused(self, reason: str) -> None:
        """``reason``: origin | subprotocol | not-websocket (a fixed set: never client-chosen text)."""
        self.websocket_refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def extra(self, metric: Any) -> Any:
        """Register a plugin's own metric once (plugins get the same object back across reloads)."""
        name = getattr(metric, "_name", None)
        existing = self.registry._names_to_collectors.get(name) if name else None
        if existing is not None:
            return existing
        self.registry.register(metric)
        return metric
