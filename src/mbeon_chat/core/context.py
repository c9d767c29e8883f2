"""Everything the core and the plugins share, built once by the composition root (app.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mbeon_chat.core.hooks import HookBus
from mbeon_chat.core.router import Router
from mbeon_chat.core.session import SessionRegistry
from mbeon_chat.xmpp.element import Element

if TYPE_CHECKING:
    from mbeon_chat.plugin.api import Identity, Registrations


@dataclass
class ServerContext:
    domain: str
    config: Any
    router: Router
    registry: SessionRegistry
    hooks: HookBus
    storage: Any = None
    metrics: Any = None
    accounts: Any = None
    throttle: Any = None
    hash_pool: Any = None
    #: Handler for iqs allowed before authentication (in-band registration), set by a plugin.
    preauth_iq: Callable[[Element, Any], Awaitable[Element | None]] | None = None
    connections: set[Any] = field(default_factory=set)
    spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]] = field(default=asyncio.ensure_future)
    #: Active plugin registrations by plugin name (maintained by the plugin host).
    active: dict[str, Registrations] = field(default_factory=dict)
    #: Objects plugins export for their dependents.
    exports: dict[str, Any] = field(default_factory=dict)
    #: The server's admin operations (reload, load/unload plugins, status): ``mbeon_chat.admin.AdminService``.
    control: Any = None

    def features(self, target: str) -> list[str]:
        out: set[str] = set()
        for reg in self.active.values():
            out |= reg.features.get(target, set())
        return sorted(out)

    def identities(self, target: str) -> list[Identity]:
        return [i for reg in self.active.values() for i in reg.identities.get(target, [])]

    def component_items(self) -> list[tuple[str, str | None]]:
        return [(d, reg.component_names.get(d)) for reg in self.active.values() for d in reg.components]

    def stream_features(self) -> list[Element]:
        out = []
        for reg in self.active.values():
            for factory in reg.stream_features:
                el = factory()
                if el is not None:
                    out.append(el)
        return out
