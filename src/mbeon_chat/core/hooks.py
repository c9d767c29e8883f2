"""Named hook chains with priorities (Prosody-style events).

A handler returns ``True`` (or an awaitable resolving to ``True``) to stop the chain. Each registration
remembers its owner so that a plugin host can remove everything a plugin added in one call.

:meth:`HookBus.dispatch` is the hot path's way in: it runs synchronous handlers without creating a
coroutine and only returns an awaitable when a handler does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., "bool | Awaitable[bool | None] | None"]


@dataclass(frozen=True, slots=True)
class Registration:
    event: str
    handler: Handler
    priority: int
    owner: str


class HookBus:
    def __init__(self) -> None:
        self._chains: dict[str, tuple[Registration, ...]] = {}

    def add(self, event: str, handler: Handler, priority: int = 0, owner: str = "core") -> Registration:
        reg = Registration(event, handler, priority, owner)
        chain = [*self._chains.get(event, ()), reg]
        chain.sort(key=lambda r: -r.priority)  # stable: equal priorities keep registration order
        self._chains[event] = tuple(chain)
        return reg

    def remove(self, reg: Registration) -> None:
        chain = tuple(r for r in self._chains.get(reg.event, ()) if r is not reg)
        if chain:
            self._chains[reg.event] = chain
        else:
            self._chains.pop(reg.event, None)

    def replace_owner(self, owner: str, new: list[Registration]) -> None:
        """Swap every registration of ``owner`` for ``new`` in one synchronous step."""
        touched = {r.event for r in new}
        for event, chain in self._chains.items():
            if any(r.owner == owner for r in chain):
                touched.add(event)
        for event in touched:
            chain_list = [r for r in self._chains.get(event, ()) if r.owner != owner]
            chain_list.extend(r for r in new if r.event == event)
            chain_list.sort(key=lambda r: -r.priority)
            if chain_list:
                self._chains[event] = tuple(chain_list)
            else:
                self._chains.pop(event, None)

    def has(self, event: str) -> bool:
        return event in self._chains

    def handlers(self, event: str) -> tuple[Registration, ...]:
        return self._chains.get(event, ())

    async def fire(self, event: str, *args: Any) -> bool:
        """Run the chain until a handler returns True. Returns whether one did."""
        for reg in self._chains.get(event, ()):
            result = reg.handler(*args)
            if result is None or result is False:
                continue
            if result is not True and inspect.isawaitable(result):
                result = await result
            if result:
                return True
        return False

    def dispatch(self, event: str, *args: Any) -> bool | Awaitable[bool]:
        """Like :meth:`fire`, but synchronous until a handler returns an awaitable.

        Returns ``True``/``False`` when every handler that ran was synchronous, else an awaitable of the
        result (the awaitable continues the chain): ``r = hooks.dispatch(...); if not isinstance(r, bool):
        r = await r``. Saves a coroutine per call on chains of plain functions (most of the hot path).
        """
        chain = self._chains.get(event, ())
        for i, reg in enumerate(chain):
            result = reg.handler(*args)
            if result is None or result is False:
                continue
            if result is True:
                return True
            if inspect.isawaitable(result):
                return self._finish(result, chain, i + 1, args)
            if result:  # any other truthy value stops the chain, as in fire()
                return True
        return False

    async def _finish(
        self, pending: Awaitable[Any], chain: tuple[Registration, ...], start: int, args: tuple[Any, ...]
    ) -> bool:
        if await pending:
            return True
        for reg in chain[start:]:
            result = reg.handler(*args)
            if result is None or result is False:
                continue
            if result is not True and inspect.isawaitable(result):
                result = await result
            if result:
                return True
        return False

    def fire_sync(self, event: str, *args: Any) -> bool:
        """Run a chain of synchronous handlers (used for pure decisions on the hot path)."""
        return any(reg.handler(*args) for reg in self._chains.get(event, ()))
