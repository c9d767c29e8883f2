"""Prometheus metrics (prefix ``mbeon_``). Labels never carry JIDs or message content.

The per-stanza series (stanzas in/out, routing time) are counted in plain ints on the hot path and folded
into the Prometheus objects when the metrics are read (:meth:`Metrics.render`): a Prometheus ``inc()``
takes a lock and an ``observe()`` scans the buckets in Python, which cost more than routing a message.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mbeon_chat.xmpp.element import Element

_ROUTING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0)
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
            buckets=_ROUTING_BUCKETS,
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
        # Hot-path tallies, folded into the objects above by _fold() (see the module docstring).
        self._in_n: dict[str, int] = {}
        self._out_n: dict[str, int] = {}
        n_buckets = len(_ROUTING_BUCKETS) + 1  # the last one is +Inf
        self._route_n = {k: [0] * n_buckets for k in self._routing}
        self._route_sum = dict.fromkeys(self._routing, 0.0)

    def connection_opened(self, transport: str) -> None:
        self.connections.labels(transport).inc()

    def connection_closed(self, transport: str) -> None:
        self.connections.labels(transport).dec()

    def session_bound(self, count: int) -> None:
        self.sessions.set(count)

    def stanza_in(self, el: Element) -> None:
        tag = el.tag
        self._in_n[tag] = self._in_n.get(tag, 0) + 1

    def stanza_out(self, el: Element) -> None:
        tag = el.tag
        self._out_n[tag] = self._out_n.get(tag, 0) + 1

    def auth(self, ok: bool) -> None:
        self.auth_total.labels("success" if ok else "failure").inc()

    def stream_error(self, condition: str) -> None:
        self.stream_errors.labels(condition).inc()

    def routed(self, kind: str, seconds: float) -> None:
        # bucket i counts observations <= bound i, as Histogram.observe does
        self._route_n[kind][bisect_left(_ROUTING_BUCKETS, seconds)] += 1
        self._route_sum[kind] += seconds

    def _fold(self) -> None:
        """Move the hot-path tallies into the Prometheus objects (before they are read)."""
        pairs = ((self._in_n, self._in, self._other_in), (self._out_n, self._out, self._other_out))
        for tally, known, other in pairs:
            if tally:
                items = list(tally.items())
                tally.clear()
                for tag, n in items:
                    known.get(tag, other).inc(n)
        for kind, counts in self._route_n.items():
            if not any(counts):
                continue
            child = self._routing[kind]
            # Histogram children keep one value per bucket (non-cumulative) and the sum; add to them directly.
            for i, n in enumerate(counts):
                if n:
                    child._buckets[i].inc(n)
                    counts[i] = 0
            child._sum.inc(self._route_sum[kind])
            self._route_sum[kind] = 0.0

    def db_timing(self, name: str, seconds: float, ok: bool) -> None:
        self.db.labels(name, "ok" if ok else "error").observe(seconds)

    def plugin_reload(self, ok: bool) -> None:
        self.plugin_reloads.labels("ok" if ok else "error").inc()

    def websocket_refused(self, reason: str) -> None:
        """``reason``: origin | subprotocol | not-websocket (a fixed set: never client-chosen text)."""
        self.websocket_refusals.labels(reason).inc()

    def render(self) -> bytes:
        self._fold()
        return generate_latest(self.registry)

    def extra(self, metric: Any) -> Any:
        """Register a plugin's own metric once (plugins get the same object back across reloads)."""
        name = getattr(metric, "_name", None)
        existing = self.registry._names_to_collectors.get(name) if name else None
        if existing is not None:
            return existing
        self.registry.register(metric)
        return metric
