"""The one object a plugin uses to touch the server (built-in features and site plugins alike).

Everything a plugin registers is recorded here; the host applies it in one synchronous swap when the
plugin is activated and removes all of it when the plugin is unloaded or replaced. A plugin never cleans
up by hand. Registration happens only inside ``setup(api)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from mbeon_chat.core.c2s import end_session
from mbeon_chat.core.hooks import Handler, HookBus, Registration
from mbeon_chat.core.router import Component, IqHandler, Router
from mbeon_chat.core.session import Session, SessionRegistry
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

if TYPE_CHECKING:
    from mbeon_chat.core.context import ServerContext


@dataclass(frozen=True, slots=True)
class Identity:
    category: str
    type: str
    name: str | None = None


@dataclass
class Registrations:
    """What one plugin version registered; applied and removed as a whole."""

    hooks: list[Registration] = field(default_factory=list)
    iqs: dict[tuple[str, str, str], IqHandler] = field(default_factory=dict)
    features: dict[str, set[str]] = field(default_factory=dict)  # target -> vars
    identities: dict[str, list[Identity]] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    component_names: dict[str, str] = field(default_factory=dict)
    stream_features: list[Callable[[], Element | None]] = field(default_factory=list)
    timers: list[tuple[float, Callable[[], Any]]] = field(default_factory=list)
    tasks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_save: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    on_unload: list[Callable[[], Any]] = field(default_factory=list)
    on_activate: list[Callable[[], Any]] = field(default_factory=list)
    #: The object :meth:`PluginAPI.export` published (if ``exported``); made visible at the swap.
    export: Any = None
    exported: bool = False


class PluginAPI:
    def __init__(
        self,
        name: str,
        ctx: ServerContext,
        options: Any,
        previous_state: dict[str, Any] | None = None,
        staged_exports: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.ctx = ctx
        self.options = options
        #: What the previous version's ``on_save`` callbacks returned (merged), or None on a first load.
        self.previous_state = previous_state
        self._staged_exports = staged_exports if staged_exports is not None else {}
        self.log = structlog.get_logger(f"mbeon_chat.plugin.{name}").bind(plugin=name)
        self.reg = Registrations()

    # --- the server ------------------------------------------------------------------------------
    @property
    def domain(self) -> str:
        return self.ctx.domain

    @property
    def host_jid(self) -> JID:
        return self.ctx.router.host_jid

    @property
    def router(self) -> Router:
        return self.ctx.router

    @property
    def sessions(self) -> SessionRegistry:
        return self.ctx.registry

    @property
    def hooks(self) -> HookBus:
        return self.ctx.hooks

    @property
    def storage(self) -> Any:
        return self.ctx.storage

    @property
    def config(self) -> Any:
        return self.ctx.config

    def is_admin(self, jid: JID) -> bool:
        return str(jid.bare) in self.ctx.config.server.admins

    async def send(self, stanza: Stanza | Element) -> None:
        """Route a stanza originated by the server or a component (``from`` must be set by the caller)."""
        if isinstance(stanza, Element):
            stanza = Stanza.parse(stanza)
        await self.ctx.router.route(stanza, None)

    def plugin(self, name: str) -> Any:
        """The public object another plugin exported with :meth:`export` (None if it is not loaded).

        During a reload batch this is the staged new version of a dependency that is reloaded with this
        plugin, so a dependent set up in the same batch binds to the new version.
        """
        staged = self._staged_exports
        if name in staged:
            return staged[name]
        return self.ctx.exports.get(name)

    def export(self, obj: Any) -> None:
        """Publish ``obj`` for other plugins (``api.plugin(name)``); it goes live with this version."""
        self.reg.export = obj
        self.reg.exported = True
        self._staged_exports[self.name] = obj

    # --- registration ----------------------------------------------------------------------------
    def on(self, event: str, handler: Handler, priority: int = 0) -> None:
        self.reg.hooks.append(Registration(event, handler, priority, self.name))

    def on_iq(
        self, type_: str, namespace: str, name: str, handler: IqHandler, *, target: str = "host"
    ) -> None:
        """Handle iq get/set with payload ``{namespace}name`` to the host, an account's bare JID, or both."""
        targets = ("host", "account") if target == "both" else (target,)
        for t in targets:
            self.reg.iqs[(t, type_, "{%s}%s" % (namespace, name))] = handler

    def add_feature(self, var: str, *, target: str = "host") -> None:
        self.reg.features.setdefault(target, set()).add(var)

    def add_identity(
        self, category: str, type_: str, name: str | None = None, *, target: str = "host"
    ) -> None:
        self.reg.identities.setdefault(target, []).append(Identity(category, type_, name))

    def add_component(self, domain: str, component: Component, name: str | None = None) -> None:
        self.reg.components[domain] = component
        if name:
            self.reg.component_names[domain] = name

    def add_stream_feature(self, factory: Callable[[], Element | None]) -> None:
        self.reg.stream_features.append(factory)

    def add_timer(self, interval: float, callback: Callable[[], Any]) -> None:
        """Call ``callback`` every ``interval`` seconds while the plugin is active (awaited if async)."""
        self.reg.timers.append((interval, callback))

    def add_task(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a background task while the plugin is active; it is cancelled on unload/reload."""
        self.reg.tasks.append(factory)

    def on_save(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """State to hand to the next version on reload: plain data with a ``version`` key.

        Called on the running version while the new one is staged; the new version reads it in
        ``setup`` from :attr:`previous_state` (or :meth:`restore`). Plain data only: after a reload the
        old classes are different classes.
        """
        self.reg.on_save.append(snapshot)

    def restore(self, version: int) -> dict[str, Any] | None:
        """The previous version's saved state if it carries ``version``; otherwise None (logged)."""
        state = self.previous_state
        if state is None:
            return None
        if state.get("version") != version:
            self.log.warning("plugin.state_discarded", saved_version=state.get("version"), wanted=version)
            return None
        return state

    def on_unload(self, callback: Callable[[], Any]) -> None:
        self.reg.on_unload.append(callback)

    def on_activate(self, callback: Callable[[], Any]) -> None:
        """Called right after the swap made this version live (synchronously)."""
        self.reg.on_activate.append(callback)

    # --- helpers ----------------------------------------------------------------------------------
    def metric(self, metric: Any) -> Any:
        """Register a Prometheus metric (created with ``registry=None``) once; after a reload the new version
        gets the already registered object back, so counts continue."""
        return self.ctx.metrics.extra(metric) if self.ctx.metrics is not None else metric

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        return self.ctx.spawn(coro)

    def session_of(self, jid: JID) -> Session | None:
        return self.ctx.registry.get(jid)

    async def end_session(self, session: Session, reason: str) -> None:
        """End a session a plugin kept without a connection (``session/lost``, XEP-0198): unregister it and
        fire ``session/ended`` (nothing if it already ended or was replaced)."""
        await end_session(self.ctx, session, reason)
