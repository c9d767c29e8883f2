"""Plugin host: discover, load in dependency order, stage, swap atomically, unload (Prosody-style modules).

A load, reload or unload is one batch that fully succeeds or changes nothing:

1. import every new module (a syntax or import error names ``file:line``) and check the dependencies;
2. in dependency order, build each plugin's options (errors name the key path), take the running
   version's saved state (``on_save``) and run ``setup(api)`` in staging: registrations are recorded on
   the API object, nothing is live yet;
3. swap: one synchronous step (no ``await``) removes the old versions' hooks, iq handlers, components
   and exports and installs the new ones, then starts the new timers and tasks;
4. tear the old versions down: cancel and await their timers and tasks, run their ``on_unload``.

Any error in 1-2 leaves the running versions untouched and raises :class:`PluginError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import itertools
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from mbeon_chat.config import ConfigError, build_options
from mbeon_chat.core.context import ServerContext
from mbeon_chat.plugin.api import PluginAPI

log = structlog.get_logger("mbeon_chat.plugin.host")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "features"
_generation = itertools.count(1)
TEARDOWN_TIMEOUT = 5.0


class PluginError(Exception):
    """A plugin could not be loaded; the message names the file and line or the config key path."""

    def __init__(self, message: str, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


@dataclass
class LoadedPlugin:
    name: str
    path: Path
    module: ModuleType
    api: PluginAPI
    depends: tuple[str, ...]
    digest: str
    running: list[asyncio.Task[Any]] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)


@dataclass
class PluginRecord:
    """What the host remembers about a plugin across versions (for status reports)."""

    loads: int = 0
    last_loaded: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass
class _Imported:
    name: str
    path: Path
    module: ModuleType
    depends: tuple[str, ...]
    digest: str


class PluginHost:
    def __init__(self, ctx: ServerContext, site_dirs: Iterable[Path] = ()) -> None:
        self.ctx = ctx
        self.site_dirs = [Path(d) for d in site_dirs]
        self.loaded: dict[str, LoadedPlugin] = {}
        self.records: dict[str, PluginRecord] = {}
        self.reload_count = 0
        self.last_blocking = 0.0

    # --- discovery ----------------------------------------------------------------------------------
    def find(self, name: str) -> Path:
        if not name.isidentifier():
            raise PluginError(f"{name!r} is not a plugin name (letters, digits and _ only)", name)
        for base in [*self.site_dirs, BUILTIN_DIR]:
            for candidate in (base / f"{name}.py", base / name / "__init__.py"):
                if candidate.is_file():
                    return candidate
        dirs = ", ".join(str(d) for d in [*self.site_dirs, BUILTIN_DIR])
        raise PluginError(f"plugin {name!r} not found in {dirs}", name)

    def available(self) -> list[str]:
        names = set()
        for base in [*self.site_dirs, BUILTIN_DIR]:
            if base.is_dir():
                for p in base.iterdir():
                    if p.suffix == ".py" and not p.name.startswith("_"):
                        names.add(p.stem)
                    elif (p / "__init__.py").is_file():
                        names.add(p.name)
        return sorted(names)

    def is_builtin(self, path: Path) -> bool:
        return BUILTIN_DIR in path.parents

    def is_changed(self, name: str) -> bool:
        """Whether the plugin's source on disk differs from the running version (or is gone)."""
        plugin = self.loaded[name]
        try:
            return _digest(self.find(name)) != plugin.digest
        except (PluginError, OSError):
            return True

    def changed(self) -> list[str]:
        return [n for n in self.loaded if self.is_changed(n)]

    def dependents(self, name: str) -> list[str]:
        return [n for n, p in self.loaded.items() if name in p.depends]

    # --- public operations ----------------------------------------------------------------------------
    async def load_all(self, names: Iterable[str]) -> None:
        await self.apply(list(names), [])

    async def load(self, name: str) -> list[str]:
        if name in self.loaded:
            raise PluginError(f"plugin {name!r} is already loaded; use reload to replace it", name)
        return await self.apply([name], [])

    async def reload(self, names: Iterable[str] | None = None, *, changed_only: bool = False) -> list[str]:
        """Reload the named plugins (default: all loaded), plus what depends on them. Returns the names."""
        targets = list(names) if names is not None else list(self.loaded)
        for n in targets:
            if n not in self.loaded:
                raise PluginError(f"plugin {n!r} is not loaded; use load to start it", n)
        if changed_only:
            targets = [n for n in targets if self.is_changed(n)]
        return await self.apply(self.with_dependents(targets), [])

    async def unload(self, name: str) -> None:
        if name not in self.loaded:
            raise PluginError(f"plugin {name!r} is not loaded", name)
        await self.apply([], [name])

    async def apply(
        self,
        load: list[str],
        unload: list[str],
        *,
        config: Any = None,
        on_swap: Callable[[], None] | None = None,
    ) -> list[str]:
        """Stage every plugin in ``load`` (new or reloaded), then swap them in and drop ``unload`` at once.

        ``config`` is the configuration whose ``[plugins.<name>]`` options the new versions get (default:
        the live one). ``on_swap`` runs synchronously right after the swap (the app swaps its config,
        TLS context and stream policy there, so everything changes in the same step).
        Returns the names set up, in dependency order.
        """
        load = list(dict.fromkeys(load))
        for name in unload:
            if name not in self.loaded:
                raise PluginError(f"plugin {name!r} is not loaded", name)
            if name in load:
                raise PluginError(f"plugin {name!r} cannot be loaded and unloaded at once", name)
        started = time.perf_counter()
        overlay: dict[str, Any] = {}
        live_config = self.ctx.config
        if config is not None:
            # setup() sees the configuration it will run with (no await until the swap)
            self.ctx.config = config
        try:
            staged = self._stage(load, unload, config, overlay)
        finally:
            self.ctx.config = live_config
        old = [self.loaded[p.name] for p in staged if p.name in self.loaded] + [
            self.loaded[n] for n in unload
        ]
        replaced = {p.name for p in staged} & set(self.loaded)
        # --- the swap: synchronous, no await ---
        for name in unload:
            self._deactivate(self.loaded.pop(name))
            self.ctx.active.pop(name, None)
            self.ctx.exports.pop(name, None)
        for plugin in staged:
            self._activate(plugin)
        overlay.clear()
        if on_swap is not None:
            on_swap()
        #: How long the event loop was held by staging + swap (no await happens in between).
        self.last_blocking = time.perf_counter() - started
        # --- after the swap ---
        for plugin in staged:
            record = self.records.setdefault(plugin.name, PluginRecord())
            record.loads += 1
            record.last_loaded = plugin.loaded_at
            record.last_error = record.last_error_at = None
            for callback in plugin.api.reg.on_activate:
                try:
                    callback()
                except Exception:
                    log.exception("plugin.activate_failed", plugin=plugin.name)
        if replaced:
            self.reload_count += 1
        for plugin in old:
            await self._teardown(plugin)
        for plugin in staged:
            event = "plugin.reloaded" if plugin.name in replaced else "plugin.loaded"
            log.info(event, plugin=plugin.name, path=str(plugin.path))
        for name in unload:
            log.info("plugin.unloaded", plugin=name)
        return [p.name for p in staged]

    def check(self, names: Iterable[str], config: Any = None) -> list[str]:
        """Import and set up ``names`` in staging without activating anything (``check-config``, on a host
        that has nothing loaded)."""
        staged = self._stage(list(dict.fromkeys(names)), [], config, {}, fresh=True)
        for plugin in staged:
            _forget_module(plugin.module)
        return [p.name for p in staged]

    def with_dependents(self, names: Iterable[str]) -> list[str]:
        """``names`` plus every loaded plugin that (transitively) depends on one of them."""
        result = list(dict.fromkeys(names))
        changed = True
        while changed:
            changed = False
            for n, p in self.loaded.items():
                if n not in result and any(d in result for d in p.depends):
                    result.append(n)
                    changed = True
        return result

    # kept for callers of the first version
    _with_dependents = with_dependents

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """One dict per plugin (loaded ones and, unless ``name`` is given, the ones found on disk)."""
        names = (
            [name]
            if name is not None
            else sorted(set(self.loaded) | set(self.available()) | set(self.records))
        )
        out = []
        for n in names:
            plugin = self.loaded.get(n)
            record = self.records.get(n, PluginRecord())
            entry: dict[str, Any] = {"name": n, "state": "loaded" if plugin else "not loaded"}
            if plugin is not None:
                reg = plugin.api.reg
                entry.update(
                    source="built-in" if self.is_builtin(plugin.path) else "site",
                    path=str(plugin.path),
                    depends=list(plugin.depends),
                    dependents=self.dependents(n),
                    loaded_at=plugin.loaded_at,
                    version=record.loads,
                    changed_on_disk=self.is_changed(n),
                    hooks=len(reg.hooks),
                    iq_handlers=len(reg.iqs),
                    components=sorted(reg.components),
                    timers=len(reg.timers),
                    tasks=sum(1 for t in plugin.running if not t.done()),
                )
            else:
                try:
                    path = self.find(n)
                    entry.update(source="built-in" if self.is_builtin(path) else "site", path=str(path))
                except PluginError:
                    entry.update(source="missing", path=None)
            entry["last_error"] = record.last_error
            out.append(entry)
        return out

    # --- staging -------------------------------------------------------------------------------------
    def _stage(
        self, load: list[str], unload: list[str], config: Any, overlay: dict[str, Any], fresh: bool = False
    ) -> list[LoadedPlugin]:
        """Import, check and set up ``load`` in dependency order; nothing becomes live. All or nothing."""
        imported: dict[str, _Imported] = {}
        try:
            for name in load:
                imported[name] = self._import_plugin(name)
            self._check_dependencies(imported, unload)
            staged = [self._setup(imported[n], overlay, config, fresh) for n in self._order(imported)]
            self._check_conflicts(staged, unload)
            return staged
        except PluginError as exc:
            for imp in imported.values():
                _forget_module(imp.module)
            if exc.plugin is not None and not fresh:
                record = self.records.setdefault(exc.plugin, PluginRecord())
                record.last_error, record.last_error_at = str(exc), time.time()
            raise
        except BaseException:
            for imp in imported.values():
                _forget_module(imp.module)
            raise

    def _import_plugin(self, name: str) -> _Imported:
        path = self.find(name)
        try:
            digest = _digest(path)
        except OSError as exc:
            raise PluginError(f"{path}: {exc}", name) from None
        module = self._import(name, path)
        try:
            if not callable(getattr(module, "setup", None)):
                raise PluginError(f"{path}: plugin {name!r} has no setup(api) function", name)
            depends = getattr(module, "DEPENDS", ())
            if not isinstance(depends, tuple | list) or not all(isinstance(d, str) for d in depends):
                raise PluginError(f"{path}: DEPENDS must be a tuple of plugin names", name)
        except PluginError:
            _forget_module(module)
            raise
        return _Imported(name, path, module, tuple(depends), digest)

    def _import(self, name: str, path: Path) -> ModuleType:
        modname = f"mbeon_chat._plugins.{name}_{next(_generation)}"
        package = path.name == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            modname, path, submodule_search_locations=[str(path.parent)] if package else None
        )
        if spec is None or spec.loader is None:
            raise PluginError(f"{path}: cannot import", name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            _forget_module(module)
            raise PluginError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}", name) from None
        except Exception as exc:
            _forget_module(module)
            raise PluginError(
                f"{_where(exc, path)}: import failed: {type(exc).__name__}: {exc}", name
            ) from None
        return module

    def _setup(
        self, imp: _Imported, overlay: dict[str, Any], config: Any, fresh: bool = False
    ) -> LoadedPlugin:
        name, path, module = imp.name, imp.path, imp.module
        options_cls = getattr(module, "Options", None)
        raw = self._raw_options(name, config)
        try:
            options = build_options(options_cls, raw, f"plugins.{name}") if options_cls else None
        except ConfigError as exc:
            raise PluginError(str(exc), name) from None
        if options_cls is None and raw:
            raise PluginError(f"plugins.{name}: this plugin takes no options", name)
        previous = None if fresh else self.loaded.get(name)
        snapshot: dict[str, Any] | None = None
        if previous is not None and previous.api.reg.on_save:
            snapshot = {}
            for save in previous.api.reg.on_save:
                try:
                    snapshot.update(save())
                except Exception as exc:
                    where = _where(exc, previous.path)
                    raise PluginError(
                        f"{where}: saving state failed: {type(exc).__name__}: {exc}", name
                    ) from None
        api = PluginAPI(name, self.ctx, options, snapshot, overlay)
        try:
            result = module.setup(api)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise PluginError(
                    f"{path}: setup() must be synchronous; use api.add_task for async work", name
                )
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{_where(exc, path)}: setup() failed: {type(exc).__name__}: {exc}", name
            ) from None
        return LoadedPlugin(name, path, module, api, imp.depends, imp.digest)

    def _raw_options(self, name: str, config: Any = None) -> dict[str, Any]:
        options = getattr((config or self.ctx.config).plugins, "options", {})
        value = options.get(name, {})
        return dict(value) if isinstance(value, dict) else {}

    def _check_dependencies(self, imported: dict[str, _Imported], unload: list[str]) -> None:
        final = (set(self.loaded) - set(unload)) | set(imported)
        for name, imp in imported.items():
            for dep in imp.depends:
                if dep not in final:
                    raise PluginError(
                        f"{imp.path}: plugin {name!r} depends on {dep!r}, which is not loaded", name
                    )
        for name, plugin in self.loaded.items():
            if name in unload or name in imported:
                continue
            for dep in plugin.depends:
                if dep in unload:
                    raise PluginError(
                        f"cannot unload {dep!r}: {name!r} depends on it (unload {name!r} first)", dep
                    )

    def _check_conflicts(self, staged: list[LoadedPlugin], unload: list[str]) -> None:
        replaced = {p.name for p in staged} | set(unload)
        iq_owner: dict[tuple[str, str, str], str] = {}
        domain_owner: dict[str, str] = {}
        for other, reg in self.ctx.active.items():
            if other not in replaced:
                iq_owner.update(dict.fromkeys(reg.iqs, other))
                domain_owner.update(dict.fromkeys(reg.components, other))
        for plugin in staged:
            reg = plugin.api.reg
            for key in reg.iqs:
                if key in iq_owner:
                    _target, type_, tag = key
                    raise PluginError(
                        f"plugin {plugin.name!r}: iq {type_} {tag} is already handled by {iq_owner[key]!r}",
                        plugin.name,
                    )
                iq_owner[key] = plugin.name
            for domain in reg.components:
                if domain in domain_owner:
                    raise PluginError(
                        f"plugin {plugin.name!r}: component {domain} belongs to {domain_owner[domain]!r}",
                        plugin.name,
                    )
                domain_owner[domain] = plugin.name

    def _order(self, imported: dict[str, _Imported]) -> list[str]:
        """Dependency order within the batch (dependencies first); cycles are errors."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in ordered:
                return
            if n in visiting:
                raise PluginError(f"dependency cycle through {n!r}", n)
            visiting.add(n)
            for d in imported[n].depends:
                if d in imported:
                    visit(d)
            visiting.discard(n)
            ordered.append(n)

        for n in imported:
            visit(n)
        return ordered

    # --- swap ---------------------------------------------------------------------------------------
    def _activate(self, plugin: LoadedPlugin) -> None:
        ctx = self.ctx
        previous = self.loaded.get(plugin.name)
        if previous is not None:
            self._deactivate(previous, keep_hooks=True)
        reg = plugin.api.reg
        ctx.hooks.replace_owner(plugin.name, reg.hooks)
        ctx.router.iq_handlers.update(reg.iqs)
        ctx.router.components.update(reg.components)
        ctx.active[plugin.name] = reg
        if reg.exported:
            ctx.exports[plugin.name] = reg.export
        else:
            ctx.exports.pop(plugin.name, None)
        self.loaded[plugin.name] = plugin
        loop = asyncio.get_running_loop()
        for interval, callback in reg.timers:
            plugin.running.append(loop.create_task(_every(interval, callback, plugin.name)))
        for factory in reg.tasks:
            plugin.running.append(loop.create_task(_guarded(factory, plugin.name)))

    def _deactivate(self, plugin: LoadedPlugin, keep_hooks: bool = False) -> None:
        ctx = self.ctx
        reg = plugin.api.reg
        if not keep_hooks:
            ctx.hooks.replace_owner(plugin.name, [])
        for key in reg.iqs:
            if ctx.router.iq_handlers.get(key) is reg.iqs[key]:
                del ctx.router.iq_handlers[key]
        for domain, comp in reg.components.items():
            if ctx.router.components.get(domain) is comp:
                del ctx.router.components[domain]
        for task in plugin.running:
            task.cancel()

    async def _teardown(self, plugin: LoadedPlugin) -> None:
        """Wait for the old version's cancelled timers/tasks, then run its ``on_unload``; a task that ignores
        cancellation or an ``on_unload`` that hangs is logged and left behind after TEARDOWN_TIMEOUT (the
        reload lock is not held hostage by one plugin)."""
        if plugin.running:
            _, pending = await asyncio.wait(plugin.running, timeout=TEARDOWN_TIMEOUT)
            if pending:
                log.error("plugin.teardown_stuck", plugin=plugin.name, tasks=len(pending))
        for callback in plugin.api.reg.on_unload:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, TEARDOWN_TIMEOUT)
            except Exception:
                log.exception("plugin.unload_failed", plugin=plugin.name)
        _forget_module(plugin.module)


def _digest(path: Path) -> str:
    """A hash of the plugin's source (every .py file of a package plugin)."""
    h = hashlib.sha256()
    if path.name == "__init__.py":
        for p in sorted(path.parent.rglob("*.py")):
            h.update(str(p.relative_to(path.parent)).encode())
            h.update(p.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def _forget_module(module: ModuleType) -> None:
    name = module.__name__
    sys.modules.pop(name, None)
    if hasattr(module, "__path__"):  # a package plugin: its submodules too
        prefix = name + "."
        for key in [k for k in sys.modules if k.startswith(prefix)]:
            del sys.modules[key]


def _where(exc: BaseException, path: Path) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    base = str(path.parent if path.name == "__init__.py" else path)
    for frame in reversed(frames):
        if frame.filename.startswith(base):
            return f"{frame.filename}:{frame.lineno}"
    return str(path)


async def _every(interval: float, callback: Any, name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("plugin.timer_failed", plugin=name)


async def _guarded(factory: Any, name: str) -> None:
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("plugin.task_failed", plugin=name)
