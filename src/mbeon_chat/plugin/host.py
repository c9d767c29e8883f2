"""Plugin host: discover, load in dependency order, stage, swap atomically, unload (Prosody-style modules).

A reload fully succeeds or changes nothing: the new code is imported and its options validated, it is set
up in staging (registrations recorded, nothing live), then all staged plugins are swapped in one
synchronous step, and only then are the old versions' timers and tasks torn down.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
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


class PluginError(Exception):
    """A plugin could not be loaded; the message names the file and line or the config key path."""


@dataclass
class LoadedPlugin:
    name: str
    path: Path
    module: ModuleType
    api: PluginAPI
    depends: tuple[str, ...]
    mtime: float
    running: list[asyncio.Task[Any]]


class PluginHost:
    def __init__(self, ctx: ServerContext, site_dirs: Iterable[Path] = ()) -> None:
        self.ctx = ctx
        self.site_dirs = [Path(d) for d in site_dirs]
        self.loaded: dict[str, LoadedPlugin] = {}
        self.reload_count = 0

    # --- discovery ----------------------------------------------------------------------------------
    def find(self, name: str) -> Path:
        for base in [*self.site_dirs, BUILTIN_DIR]:
            for candidate in (base / f"{name}.py", base / name / "__init__.py"):
                if candidate.is_file():
                    return candidate
        raise PluginError(f"plugin {name!r} not found in {', '.join(str(d) for d in [*self.site_dirs, BUILTIN_DIR])}")

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

    def is_changed(self, name: str) -> bool:
        plugin = self.loaded[name]
        return self._mtime(plugin.path) != plugin.mtime

    # --- public operations ----------------------------------------------------------------------------
    async def load_all(self, names: Iterable[str]) -> None:
        await self.apply(list(names), [])

    async def reload(self, names: Iterable[str] | None = None, *, changed_only: bool = False) -> list[str]:
        """Reload the named plugins (default: all loaded), plus what depends on them. Returns the names."""
        targets = list(names) if names is not None else list(self.loaded)
        for n in targets:
            if n not in self.loaded:
                raise PluginError(f"plugin {n!r} is not loaded")
        if changed_only:
            targets = [n for n in targets if self._mtime(self.loaded[n].path) != self.loaded[n].mtime]
        targets = self._with_dependents(targets)
        await self.apply(targets, [])
        return targets

    async def unload(self, name: str) -> None:
        if name not in self.loaded:
            raise PluginError(f"plugin {name!r} is not loaded")
        dependents = [n for n, p in self.loaded.items() if name in p.depends]
        if dependents:
            raise PluginError(f"cannot unload {name!r}: {', '.join(dependents)} depend on it")
        await self.apply([], [name])

    async def apply(self, load: list[str], unload: list[str]) -> None:
        """Stage every plugin in ``load`` (new or reloaded), then swap them and drop ``unload`` at once."""
        staged: list[LoadedPlugin] = []
        wanted = set(self.loaded) - set(unload) | set(load)
        for name in self._order(load, wanted):
            staged.append(self._stage(name))
        old = [self.loaded[p.name] for p in staged if p.name in self.loaded] + [self.loaded[n] for n in unload]
        # --- the swap: synchronous, no await ---
        for name in unload:
            self._deactivate(self.loaded.pop(name))
            self.ctx.active.pop(name, None)
            self.ctx.exports.pop(name, None)
        for plugin in staged:
            self._activate(plugin)
        # --- tear down the old versions ---
        for plugin in old:
            await self._teardown(plugin)
        if staged and any(p.name in {o.name for o in old} for p in staged):
            self.reload_count += 1
        for plugin in staged:
            log.info("plugin.loaded", plugin=plugin.name, path=str(plugin.path))
        for name in unload:
            log.info("plugin.unloaded", plugin=name)

    # --- staging -------------------------------------------------------------------------------------
    def _stage(self, name: str) -> LoadedPlugin:
        path = self.find(name)
        module = self._import(name, path)
        setup = getattr(module, "setup", None)
        if not callable(setup):
            raise PluginError(f"{path}: plugin {name!r} has no setup(api) function")
        depends = tuple(getattr(module, "DEPENDS", ()))
        options_cls = getattr(module, "Options", None)
        raw = self._raw_options(name)
        try:
            options = build_options(options_cls, raw, f"plugins.{name}") if options_cls else None
        except ConfigError as exc:
            raise PluginError(str(exc)) from None
        if options_cls is None and raw:
            raise PluginError(f"plugins.{name}: this plugin takes no options")
        previous = self.loaded.get(name)
        snapshot: dict[str, Any] | None = None
        if previous is not None:
            snapshot = {}
            for save in previous.api.reg.on_save:
                snapshot.update(save())
        api = PluginAPI(name, self.ctx, options, snapshot)
        try:
            result = setup(api)
            if inspect.isawaitable(result):
                raise PluginError(f"{path}: setup() must be synchronous; use api.add_task for async work")
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{_where(exc, path)}: setup() failed: {type(exc).__name__}: {exc}") from None
        self._check_conflicts(name, api)
        return LoadedPlugin(name, path, module, api, depends, self._mtime(path), [])

    def _import(self, name: str, path: Path) -> ModuleType:
        modname = f"mbeon_chat._plugins.{name}_{next(_generation)}"
        package = path.name == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            modname, path, submodule_search_locations=[str(path.parent)] if package else None
        )
        if spec is None or spec.loader is None:
            raise PluginError(f"{path}: cannot import")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(modname, None)
            raise PluginError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
        except Exception as exc:
            sys.modules.pop(modname, None)
            raise PluginError(f"{_where(exc, path)}: import failed: {type(exc).__name__}: {exc}") from None
        return module

    def _raw_options(self, name: str) -> dict[str, Any]:
        options = getattr(self.ctx.config.plugins, "options", {})
        value = options.get(name, {})
        return dict(value) if isinstance(value, dict) else {}

    def _check_conflicts(self, name: str, api: PluginAPI) -> None:
        for other, reg in self.ctx.active.items():
            if other == name:
                continue
            clash = set(reg.iqs) & set(api.reg.iqs)
            if clash:
                target, type_, tag = sorted(clash)[0]
                raise PluginError(f"plugin {name!r}: iq {type_} {tag} is already handled by {other!r}")
            domains = set(reg.components) & set(api.reg.components)
            if domains:
                raise PluginError(f"plugin {name!r}: component {sorted(domains)[0]} belongs to {other!r}")

    def _order(self, names: list[str], wanted: set[str]) -> list[str]:
        """Dependency order (dependencies first); missing or cyclic dependencies are errors."""
        deps: dict[str, tuple[str, ...]] = {}
        for n in names:
            mod_deps = self._peek_depends(n)
            for d in mod_deps:
                if d not in wanted:
                    raise PluginError(f"plugin {n!r} depends on {d!r}, which is not enabled")
            deps[n] = mod_deps
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in ordered:
                return
            if n in visiting:
                raise PluginError(f"dependency cycle through {n!r}")
            visiting.add(n)
            for d in deps.get(n, ()):
                if d in deps:
                    visit(d)
            visiting.discard(n)
            ordered.append(n)

        for n in names:
            visit(n)
        return ordered

    def _peek_depends(self, name: str) -> tuple[str, ...]:
        path = self.find(name)
        try:
            source = path.read_text()
        except OSError as exc:
            raise PluginError(f"{path}: {exc}") from None
        for line in source.splitlines():
            if line.startswith("DEPENDS"):
                try:
                    value = eval(line.split("=", 1)[1].split("#")[0].strip(), {"__builtins__": {}})  # literal only
                except Exception:
                    raise PluginError(f"{path}: DEPENDS must be a literal tuple of names") from None
                return tuple(value)
        return ()

    def _with_dependents(self, names: list[str]) -> list[str]:
        result = list(names)
        changed = True
        while changed:
            changed = False
            for n, p in self.loaded.items():
                if n not in result and any(d in result for d in p.depends):
                    result.append(n)
                    changed = True
        return result

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
        self.loaded[plugin.name] = plugin
        loop = asyncio.get_running_loop()
        for interval, callback in reg.timers:
            plugin.running.append(loop.create_task(_every(interval, callback, plugin.name)))
        for factory in reg.tasks:
            plugin.running.append(loop.create_task(_guarded(factory, plugin.name)))
        for callback in reg.on_activate:
            callback()

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
        if plugin.running:
            await asyncio.gather(*plugin.running, return_exceptions=True)
        for callback in plugin.api.reg.on_unload:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin.unload_failed", plugin=plugin.name)

    @staticmethod
    def _mtime(path: Path) -> float:
        base = path.parent if path.name == "__init__.py" else path
        if base.is_dir():
            return max((p.stat().st_mtime for p in base.rglob("*.py")), default=0.0)
        return base.stat().st_mtime


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
