"""Composition root and lifecycle: build everything from the config; start(); run(trigger); stop(grace)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Histogram

from mbeon_chat.admin import AdminService
from mbeon_chat.config import Config, ConfigError, diff, how_applied, load_config, parse_address
from mbeon_chat.core.accounts import Accounts
from mbeon_chat.core.c2s import end_session
from mbeon_chat.core.context import ServerContext
from mbeon_chat.core.hooks import HookBus
from mbeon_chat.core.router import Router
from mbeon_chat.core.session import ConflictPolicy, SessionRegistry
from mbeon_chat.core.throttle import LoginThrottle
from mbeon_chat.observability.logs import configure_logging
from mbeon_chat.observability.metrics import Metrics
from mbeon_chat.plugin.host import PluginError, PluginHost
from mbeon_chat.storage.api import open_storage
from mbeon_chat.storage.crypto import keyring_from_config
from mbeon_chat.stream.negotiation import StreamPolicy
from mbeon_chat.transport.tcp import start_tcp_listener
from mbeon_chat.transport.tls import ensure_self_signed, server_context
from mbeon_chat.xmpp.errors import StreamCondition

log = structlog.get_logger("mbeon_chat.app")


@dataclasses.dataclass
class ReloadReport:
    """What one reload, load or unload did, per key and per plugin (or the error; then nothing changed)."""

    ok: bool
    applied: list[str] = dataclasses.field(default_factory=list)
    needs_restart: list[str] = dataclasses.field(default_factory=list)
    plugins: list[str] = dataclasses.field(default_factory=list)  # reloaded
    loaded: list[str] = dataclasses.field(default_factory=list)
    unloaded: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    #: Of ``seconds``, how long the event loop was held (plugin staging + the swap).
    blocking_seconds: float = 0.0
    trigger: str = "api"

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"reload failed, nothing changed: {self.error}"]
        out = []
        for key in self.applied:
            how = how_applied(key)
            out.append(f"applied: {key}" + (f" ({how})" if how else ""))
        out += [f"needs restart: {k} (the running server keeps the old value)" for k in self.needs_restart]
        out += [f"plugin reloaded: {p}" for p in self.plugins]
        out += [f"plugin loaded: {p}" for p in self.loaded]
        out += [f"plugin unloaded: {p}" for p in self.unloaded]
        out += [f"warning: {w}" for w in self.warnings]
        if len(out) == 0:
            out.append("nothing changed")
        out.append(
            f"done in {self.seconds * 1000:.1f} ms (event loop held {self.blocking_seconds * 1000:.1f} ms)"
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lines": self.lines()}


class App:
    def __init__(
        self, config: Config, config_path: str | Path | None = None, *, configure_logs: bool = True
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._configure_logs = configure_logs
        self.metrics = Metrics()
        self.hooks = HookBus()
        self.registry = SessionRegistry(
            ConflictPolicy(config.auth.resource_conflict), config.limits.max_resources
        )
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
        self.admin = AdminService(self)
        self.ctx.control = self.admin
        self.listeners: dict[tuple[str, str], asyncio.Server] = {}
        self._tls: ssl.SSLContext | None = None
        self._tls_digest = ""
        self._policy: StreamPolicy | None = None
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[Any] | None = None
        self.last_reload: ReloadReport | None = None
        self._reload_seconds = self.metrics.extra(
            Histogram(
                "mbeon_reload_seconds",
                "Reload/load/unload duration by outcome",
                ["result"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
                registry=None,
            )
        )
        self.started_at = 0.0
        self.storage: Any = None
        self.http: Any = None
        #: A mbeon_chat.cluster.node.ClusterNode when this App is one of several workers (server.workers).
        self.cluster: Any = None
        self.stopped = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        if self._configure_logs:
            configure_logging(config.log.level, config.log.format)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = await open_storage(
            config.storage_urls,
            on_timing=self.metrics.db_timing,
            keyring=keyring_from_config(config),
            domain=config.server.domain,
        )
        self.ctx.storage = self.storage
        self.ctx.accounts = Accounts(self.storage.accounts, self.hash_pool, config.auth.scram_iterations)
        self._tls, self._tls_digest = self._load_tls(config)
        await self.plugins.load_all(config.plugins.enabled)
        self._policy = self._build_policy(config)
        if self.cluster is not None:
            await self.cluster.start()
        self.listeners.update(await self._open_listeners(config))
        await self._sync_http()
        await self.admin.start()
        self._sync_watcher()
        self.started_at = time.time()
        log.info(
            "server.started",
            domain=config.server.domain,
            listeners=sorted(f"{k}:{a}" for k, a in self.listeners),
        )

    async def run(self, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Start, serve until the trigger completes (default: SIGTERM/SIGINT), then stop. SIGHUP reloads."""
        stop = asyncio.Event()
        self.install_signal_handlers(stop.set)
        await self.start()
        waiter = asyncio.ensure_future(shutdown_trigger() if shutdown_trigger else stop.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        await self.stop()

    def install_signal_handlers(self, stop: Callable[[], None] | None = None) -> None:
        """SIGHUP reloads (config file + changed plugins; the outcome goes to the log); TERM/INT stop."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload(trigger="sighup")))
        if stop is not None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    async def stop(self, grace: float = 10.0) -> None:
        log.info("server.stopping", sessions=len(self.registry))
        self._stop_watcher()
        await self.admin.stop()
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
        for session in list(self.registry):  # kept without a connection (XEP-0198): ended while plugins run
            await end_session(self.ctx, session, "server shutdown")
        if self.cluster is not None:
            await self.cluster.stop()
        async with self._reload_lock:
            await self.plugins.apply([], list(reversed(list(self.plugins.loaded))))
        if self.http is not None:
            await self.http.stop()
        if self._tasks:
            # Let work started by the closing sessions (end hooks, database writes) finish first.
            await asyncio.wait(list(self._tasks), timeout=min(grace, 1.0))
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

    # --- reload, load, unload ------------------------------------------------------------------------
    async def reload(self, plugin: str | None = None, *, trigger: str = "api") -> ReloadReport:
        """Reload one plugin (and its dependents), or the config file and every changed plugin.

        All or nothing: on an error the running configuration and plugins stay as they were and the report
        carries the error (naming file:line or the config key path). Reloads are serialised.
        """
        if plugin is not None:
            return await self._locked(trigger, lambda: self._reload_plugin(plugin))
        return await self._locked(trigger, self._reload_all)

    async def load_plugin(self, name: str, *, trigger: str = "api") -> ReloadReport:
        async def op() -> ReloadReport:
            return ReloadReport(True, loaded=await self.plugins.load(name))

        return await self._locked(trigger, op)

    async def unload_plugin(self, name: str, *, trigger: str = "api") -> ReloadReport:
        async def op() -> ReloadReport:
            await self.plugins.unload(name)
            return ReloadReport(True, unloaded=[name])

        return await self._locked(trigger, op)

    async def _locked(self, trigger: str, op: Callable[[], Awaitable[ReloadReport]]) -> ReloadReport:
        async with self._reload_lock:
            started = time.perf_counter()
            self.plugins.last_blocking = 0.0
            try:
                report = await op()
            except (ConfigError, PluginError) as exc:
                report = ReloadReport(False, error=str(exc))
            except Exception as exc:  # a bug, not a bad plugin: say so, keep serving
                log.exception("server.reload_crashed", trigger=trigger)
                report = ReloadReport(
                    False, error=f"internal error: {type(exc).__name__}: {exc} (see the log)"
                )
            report.seconds = time.perf_counter() - started
            report.blocking_seconds = self.plugins.last_blocking
            report.trigger = trigger
        self.metrics.plugin_reload(report.ok)
        self._reload_seconds.labels("ok" if report.ok else "error").observe(report.seconds)
        self.last_reload = report
        if report.ok:
            log.info(
                "server.reloaded",
                trigger=trigger,
                applied=report.applied,
                needs_restart=report.needs_restart,
                reloaded=report.plugins,
                loaded=report.loaded,
                unloaded=report.unloaded,
                warnings=report.warnings,
                ms=round(report.seconds * 1000, 2),
            )
        else:
            log.error("server.reload_failed", trigger=trigger, error=report.error)
        return report

    async def _reload_plugin(self, name: str) -> ReloadReport:
        names = await self.plugins.reload([name])
        self._refresh_policy()
        return ReloadReport(True, plugins=names)

    async def _reload_all(self) -> ReloadReport:
        old = self.config
        new = load_config(self.config_path) if self.config_path else old
        changes = diff(old, new)
        report = ReloadReport(
            True,
            applied=[k for k, is_live in changes if is_live],
            needs_restart=[k for k, is_live in changes if not is_live],
        )
        tls, tls_digest = self._load_tls(new)  # always: a renewed certificate file is picked up too
        if tls_digest != self._tls_digest and not any(k.startswith("tls.") for k in report.applied):
            report.applied.append("tls.cert")
        # Plugins: enabled changes (relative to the previous config: a plugin unloaded or loaded at run time
        # stays so until the config changes it), changed options, changed code, plus their dependents.
        loaded = self.plugins.loaded
        removed = [n for n in old.plugins.enabled if n not in new.plugins.enabled and n in loaded]
        added = [n for n in new.plugins.enabled if n not in old.plugins.enabled and n not in loaded]
        section_keys = {f.name for f in dataclasses.fields(new.plugins)}
        options = {k.split(".", 1)[1] for k, _ in changes if k.startswith("plugins.") and k.count(".") == 1}
        options -= section_keys
        reload_names = [
            n for n in loaded if n not in removed and (n in options or self.plugins.is_changed(n))
        ]
        targets = [n for n in self.plugins.with_dependents(reload_names) if n not in removed]
        opened = await self._open_listeners(new)
        try:
            self._probe_http(new)
            staged = await self.plugins.apply(
                added + targets, removed, config=new, on_swap=lambda: self._swap_config(new, tls, tls_digest)
            )
        except BaseException:
            for server in opened.values():
                server.close()
            raise
        self.listeners.update(opened)
        self._close_removed_listeners(new)
        try:
            await self._sync_http()
        except Exception as exc:
            report.warnings.append(f"listeners.http: {exc} (not applied; fix it and reload again)")
        self._sync_watcher()
        report.plugins = [n for n in staged if n not in added]
        report.loaded = [n for n in staged if n in added]
        report.unloaded = removed
        return report

    def _swap_config(self, config: Config, tls: ssl.SSLContext, tls_digest: str) -> None:
        """The synchronous part of a reload: every live setting changes in this one step."""
        logs_changed = config.log != self.config.log
        self.config = config
        self.ctx.config = config
        self.registry.conflict = ConflictPolicy(config.auth.resource_conflict)
        self.registry.max_resources = config.limits.max_resources
        self.throttle.step, self.throttle.maximum = config.auth.failure_delay, config.auth.failure_delay_max
        if self.ctx.accounts is not None:
            self.ctx.accounts.iterations = config.auth.scram_iterations
        self._tls, self._tls_digest = tls, tls_digest
        self._policy = self._build_policy(config)
        if self._configure_logs and logs_changed:
            configure_logging(config.log.level, config.log.format)

    # --- TLS, policy and listeners -------------------------------------------------------------------
    def _cert_paths(self, config: Config) -> tuple[Path, Path]:
        if config.tls.cert and config.tls.key:
            return config.path(config.tls.cert), config.path(config.tls.key)
        return ensure_self_signed(config.data_dir / "certs", config.server.domain)

    def _load_tls(self, config: Config) -> tuple[ssl.SSLContext, str]:
        cert, key = self._cert_paths(config)
        try:
            digest = hashlib.sha256(cert.read_bytes() + b"\0" + key.read_bytes()).hexdigest()
            return server_context(cert, key), digest
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

    def _refresh_policy(self) -> None:
        self._policy = self._build_policy(self.config)

    def policy(self) -> StreamPolicy:
        """The stream policy for a new connection (rebuilt on every reload)."""
        assert self._policy is not None
        if self._policy.allow_registration != (
            self.config.auth.allow_registration and "register" in self.plugins.loaded
        ):
            self._policy = self._build_policy(self.config)
        return self._policy

    def tls_context(self) -> ssl.SSLContext | None:
        """The current certificate's context (STARTTLS takes it per connection; direct TLS via SNI)."""
        return self._tls

    @staticmethod
    def _wanted_listeners(config: Config) -> set[tuple[str, str]]:
        wanted = {("starttls", a) for a in config.listeners.starttls}
        return wanted | {("direct_tls", a) for a in config.listeners.direct_tls}

    async def _open_listeners(self, config: Config) -> dict[tuple[str, str], asyncio.Server]:
        """Open the client listeners ``config`` has and we lack; all or none (errors name the key)."""
        opened: dict[tuple[str, str], asyncio.Server] = {}
        try:
            for kind, addr in sorted(self._wanted_listeners(config) - set(self.listeners)):
                host, port = parse_address(addr)
                index = list(getattr(config.listeners, kind)).index(addr)
                try:
                    server = await start_tcp_listener(
                        self.ctx,
                        host,
                        port,
                        self.policy,
                        self._direct_tls_context if kind == "direct_tls" else self.tls_context,
                        kind == "direct_tls",
                        reuse_port=config.server.workers > 1,
                    )
                except OSError as exc:
                    raise ConfigError(
                        f"listeners.{kind}[{index}]: cannot listen on {addr}: {exc.strerror or exc}"
                    ) from None
                opened[(kind, addr)] = server
                log.info("listener.started", kind=kind, address=addr)
        except BaseException:
            for server in opened.values():
                server.close()
            raise
        return opened

    def _close_removed_listeners(self, config: Config) -> None:
        """Stop accepting on addresses no longer configured; connections they accepted stay open."""
        wanted = self._wanted_listeners(config)
        for key in [k for k in self.listeners if k not in wanted]:
            self.listeners.pop(key).close()
            log.info("listener.stopped", kind=key[0], address=key[1])

    def _probe_http(self, config: Config) -> None:
        """Check that new http addresses can be bound before the swap (errors name the key)."""
        current = {key[0] if isinstance(key, tuple) else key for key in getattr(self.http, "sites", {})}
        for index, addr in enumerate(config.listeners.http):
            if addr in current:
                continue
            host, port = parse_address(addr)
            if port == 0:
                continue
            try:
                with socket.create_server((host, port), reuse_port=False) as probe:
                    probe.close()
            except OSError as exc:
                raise ConfigError(
                    f"listeners.http[{index}]: cannot listen on {addr}: {exc.strerror or exc}"
                ) from None

    async def _sync_http(self) -> None:
        if self.http is None:
            from mbeon_chat.transport.http import HttpFrontend

            self.http = HttpFrontend(self)
        await self.http.sync()

    async def _sync_listeners(self) -> None:
        """Make the listeners match the live config (kept for callers of the first version)."""
        self.listeners.update(await self._open_listeners(self.config))
        self._close_removed_listeners(self.config)
        await self._sync_http()

    def _direct_tls_context(self) -> ssl.SSLContext | None:
        """The direct TLS listener's context: its SNI hook switches each handshake to the current certificate.

        OpenSSL calls the servername callback on every ClientHello (with ``None`` when the client sends no
        SNI), so a reloaded certificate applies to every new direct TLS connection.
        """
        base = self.tls_context()
        if base is None:
            return None
        ctx = server_context(*self._cert_paths(self.config))

        def pick(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            current = self.tls_context()
            if current is not None and sock.context is not current:
                sock.context = current

        ctx.sni_callback = pick
        return ctx

    # --- file watching (plugins.watch) ---------------------------------------------------------------------
    def _sync_watcher(self) -> None:
        if self.config.plugins.watch and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        elif not self.config.plugins.watch and self._watcher is not None:
            self._stop_watcher()

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        try:
            import watchfiles
        except ImportError:
            log.warning("plugins.watch_unavailable", reason="plugins.watch needs the watchfiles package")
            return
        paths = [str(d) for d in self.plugins.site_dirs if d.is_dir()]
        config_file = str(Path(self.config_path).resolve()) if self.config_path else None
        if config_file:
            paths.append(config_file)
        if not paths:
            return
        log.info("plugins.watching", paths=paths)
        async for changes in watchfiles.awatch(*paths, recursive=True):
            if any(p.endswith(".py") or p == config_file for _, p in changes):
                # A separate task: stopping the watcher (plugins.watch = false) must not cut a reload short.
                await asyncio.shield(self.spawn(self.reload(trigger="watch")))

    # --- ports ----------------------------------------------------------------------------------------
    def bound_port(self, kind: str) -> int:
        for (k, _), server in self.listeners.items():
            if k == kind:
                sockets = server.sockets
                return int(sockets[0].getsockname()[1])
        raise KeyError(kind)


def build_app(config_path: str | Path | None, overrides: dict[str, Any] | None = None) -> App:
    return App(load_config(config_path, overrides), config_path)
