"""Slow down repeated failed logins from one address (each failure adds a delay that decays)."""

from __future__ import annotations

import time


class LoginThrottle:
    def __init__(self, step: float = 1.0, maximum: float = 10.0, window: float = 300.0) -> None:
        self.step = step
        self.maximum = maximum
        self.window = window
        self._failures: dict[str, tuple[int, float]] = {}

    def failure(self, address: str) -> float:
        """Record a failure; returns the delay to apply before answering it."""
        now = time.monotonic()
        count, last = self._failures.get(address, (0, now))
        if now - last > self.window:
            count = 0
        count += 1
        if len(self._failures) > 50_000:
            self._failures.clear()
        self._failures[address] = (count, now)
        return min(self.maximum, self.step * (count - 1))

    def success(self, address: str) -> None:
        self._failures.pop(address, None)

    def failures(self, address: str) -> int:
        return self._failures.get(address, (0, 0.0))[0]
