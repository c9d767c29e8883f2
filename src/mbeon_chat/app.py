"""Composition root and lifecycle: build everything from the config; start(); run(trigger); stop(grace)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from mbeon_chat.config import Config, ConfigError, diff, load_config, parse_address
from mbeon_chat.core.accounts import Accounts
from mbeon_chat.core.context import ServerContext
from mbeon_chat.core.hooks import HookBus
from mbeon_chat.core.router import Router
from mbeon_chat.core.session import ConflictPolicy, SessionRegistry
from mbeon_chat.core.throttle import LoginThrottle
from mbeon_chat.observability.logs import configure_logging
from mbeon_chat.observability.metrics import Metrics
from mbeon_chat.plugin.host import PluginError, PluginHost
from mbeon_chat.storage.api import open_storage
from mbeon_chat.stream.negotiation import StreamPolicy
from mbeon_chat.transport.tcp import start_tcp_listener
from mbeon_chat.transport.tls import ensure_self_signed, server_context
from mbeon_chat.xmpp.errors import StreamCondition

log = structlog.get_logger("mbeon_chat.app")


@dataclasses.dataclass
class ReloadReport:
    ok: bool
    applied: list[str] = dataclasses.field(default_factory=list)
    needs_restart: list[str] = dataclasses.field(default_factory=list)
    plugins: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"reload failed, nothing changed: {self.error}"]
        out = [f"applied: {k}" for k in self.applied]
        out += [f"needs restart: {k}" for k in self.needs_restart]
        out += [f"plugin reloaded: {p}" for p in self.plugins]
        return out or ["nothing changed"]


class App:
    def __init__(self, config: Config, config_path: str | Path | None = None, *, configure_logs: bool = True) -> None:
        self.config = config
        self.config_path = config_path
        self._configure_logs = configure_logs
        self.metrics = Metrics()
        self.hooks = HookBus()
        self.registry = SessionRegistry(ConflictPolicy(config.auth.resource_conflict), config.limits.max_resources)
        self.router = Router(config.server.domain, self.registry, self.hooks)
        self.router.metrics = self.metrics
        self.hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mbeon-hash")
        self.throttle = LoginThrottle(config.auth.failure_delay, config.auth.failure_delay_max)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ctx = ServerContext(
            domain=config.server.domain,
            config=config,
            router=self.router,
            registry=self.registry,
            hooks=self.hooks,
            metrics=self.metrics,
            throttle=self.throttle,
            hash_pool=self.hash_pool,
            spawn=self.spawn,
        )
        self.plugins = PluginHost(self.ctx, [config.path(d) for d in config.plugins.site_dirs])
        self.listeners: dict[tuple[str, str], asyncio.AbstractServer] = {}
        self._tls: ssl.SSLContext | None = None
        self._policy: StreamPolicy | None = None
        self.storage: Any = None
        self.http: Any = None
        self.stopped = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        if self._configure_logs:
            configure_logging(config.log.level, config.log.format)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = await open_storage(config.storage_urls, on_timing=self.metrics.db_timing)
        self.ctx.storage = self.storage
        self.ctx.accounts = Accounts(self.storage.accounts, self.hash_pool, config.auth.scram_iterations)
        self._tls = self._load_tls(config)
        self._policy = self._build_policy(config)
        await self.plugins.load_all(config.plugins.enabled)
        await self._sync_listeners()
        log.info("server.started", domain=config.server.domain, listeners=sorted(f"{k}:{a}" for k, a in self.listeners))

    async def run(self, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Start, serve until the trigger completes (default: SIGTERM/SIGINT), then stop. SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload()))
        await self.start()
        waiter = asyncio.ensure_future(shutdown_trigger() if shutdown_trigger else stop.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        await self.stop()

    async def stop(self, grace: float = 10.0) -> None:
        log.info("server.stopping", sessions=len(self.registry))
        for server in self.listeners.values():
            server.close()
        if self.http is not None:
            await self.http.stop_accepting()
        connections = list(self.ctx.connections)
        for conn in connections:
            conn.close_stream(StreamCondition.SYSTEM_SHUTDOWN, "the server is shutting down")
        workers = [c._worker for c in connections]
        if workers:
            await asyncio.wait(workers, timeout=grace)
        await self.plugins.apply([], list(reversed(list(self.plugins.loaded))))
        if self.http is not None:
            await self.http.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        if self.storage is not None:
            await self.storage.close()
        self.hash_pool.shutdown(wait=False)
        self.stopped.set()
        log.info("server.stopped")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task.failed", error=repr(task.exception()))

    # --- reload ------------------------------------------------------------------------------------
    async def reload(self, plugin: str | None = None) -> ReloadReport:
        """Reload config (when read from a file) and changed plugins; all or nothing."""
        try:
            if plugin is not None:
                names = await self.plugins.reload([plugin])
                self.metrics.plugin_reload(True)
                report = ReloadReport(True, plugins=names)
            else:
                report = await self._reload_all()
        except (ConfigError, PluginError) as exc:
            self.metrics.plugin_reload(False)
            log.error("server.reload_failed", error=str(exc))
            return ReloadReport(False, error=str(exc))
        log.info("server.reloaded", applied=report.applied, needs_restart=report.needs_restart, plugins=report.plugins)
        return report

    async def _reload_all(self) -> ReloadReport:
        old = self.config
        new = load_config(self.config_path) if self.config_path else old
        changes = diff(old, new)
        tls = self._load_tls(new) if (new.tls != old.tls) else self._tls
        policy = self._build_policy(new)
        enabled_old, enabled_new = list(old.plugins.enabled), list(new.plugins.enabled)
        removed = [n for n in enabled_old if n not in enabled_new and n in self.plugins.loaded]
        added = [n for n in enabled_new if n not in self.plugins.loaded]
        changed_options = {k.split(".", 1)[1] for k, _ in changes if k.startswith("plugins.") and k.count(".") == 1}
        changed_code = [n for n in self.plugins.loaded if n not in removed and self.plugins.is_changed(n)]
        reload_names = sorted(set(changed_code) | (changed_options & set(self.plugins.loaded)) - set(removed))
        # Swap the config first so staged plugins read the new options; restore it if staging fails.
        self._apply_config(new)
        try:
            targets = self.plugins._with_dependents(reload_names) if reload_names else []
            await self.plugins.apply(added + targets, removed)
        except BaseException:
            self._apply_config(old)
            raise
        self._tls, self._policy = tls, policy
        await self._sync_listeners()
        self.metrics.plugin_reload(True)
        return ReloadReport(
            True,
            applied=[k for k, is_live in changes if is_live],
            needs_restart=[k for k, is_live in changes if not is_live],
            plugins=added + targets,
        )

    def _apply_config(self, config: Config) -> None:
        self.config = config
        self.ctx.config = config
        self.registry.conflict = ConflictPolicy(config.auth.resource_conflict)
        self.registry.max_resources = config.limits.max_resources
        self.throttle.step, self.throttle.maximum = config.auth.failure_delay, config.auth.failure_delay_max
        if self._configure_logs:
            configure_logging(config.log.level, config.log.format)

    # --- TLS, policy and listeners -------------------------------------------------------------------
    def _load_tls(self, config: Config) -> ssl.SSLContext:
        if config.tls.cert and config.tls.key:
            cert, key = config.path(config.tls.cert), config.path(config.tls.key)
        else:
            cert, key = ensure_self_signed(config.data_dir / "certs", config.server.domain)
        try:
            return server_context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.cert: cannot load {cert} / {key}: {exc}") from None

    def _build_policy(self, config: Config) -> StreamPolicy:
        return StreamPolicy(
            domains=frozenset({config.server.domain}),
            default_domain=config.server.domain,
            tls_available=True,
            tls_required=config.tls.require_starttls,
            sasl_mechanisms=config.auth.mechanisms,
            allow_registration=config.auth.allow_registration and "register" in self.plugins.loaded,
            max_stanza_size=config.limits.max_stanza_size,
            max_depth=config.limits.max_depth,
            max_auth_attempts=config.auth.max_attempts,
            scram_iterations=config.auth.scram_iterations,
            session_features=self.ctx.stream_features,
        )

    def policy(self) -> StreamPolicy:
        assert self._policy is not None
        if self._policy.allow_registration != (self.config.auth.allow_registration and "register" in self.plugins.loaded):
            self._policy = self._build_policy(self.config)
        return self._policy

    def tls_context(self) -> ssl.SSLContext | None:
        return self._tls

    async def _sync_listeners(self) -> None:
        wanted = {("starttls", a) for a in self.config.listeners.starttls}
        wanted |= {("direct_tls", a) for a in self.config.listeners.direct_tls}
        for key in [k for k in self.listeners if k not in wanted]:
            self.listeners.pop(key).close()
            log.info("listener.stopped", kind=key[0], address=key[1])
        for kind, addr in sorted(wanted - set(self.listeners)):
            host, port = parse_address(addr)
            server = await start_tcp_listener(
                self.ctx, host, port, self.policy, self._direct_tls_context if kind == "direct_tls" else self.tls_context,
                kind == "direct_tls",
            )
            self.listeners[(kind, addr)] = server
            log.info("listener.started", kind=kind, address=addr)
        if self.http is None:
            from mbeon_chat.transport.http import HttpFrontend

            self.http = HttpFrontend(self)
        await self.http.sync()

    def _direct_tls_context(self) -> ssl.SSLContext | None:
        """A listener context whose SNI hook switches to the current certificate (live TLS reload)."""
        base = self.tls_context()
        if base is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(*self._current_cert_paths())
        ctx.set_alpn_protocols(["xmpp-client"])

        def pick(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            current = self.tls_context()
            if current is not None:
                sock.context = current

        ctx.sni_callback = pick  # type: ignore[assignment]
        return ctx

    def _current_cert_paths(self) -> tuple[str, str]:
        config = self.config
        if config.tls.cert and config.tls.key:
            return str(config.path(config.tls.cert)), str(config.path(config.tls.key))
        cert, key = ensure_self_signed(config.data_dir / "certs", config.server.domain)
        return str(cert), str(key)

    def bound_port(self, kind: str) -> int:
        for (k, _), server in self.listeners.items():
            if k == kind:
                sockets = server.sockets
                return int(sockets[0].getsockname()[1])
        raise KeyError(kind)


def build_app(config_path: str | Path | None, overrides: dict[str, Any] | None = None) -> App:
    return App(load_config(config_path, overrides), config_path)
