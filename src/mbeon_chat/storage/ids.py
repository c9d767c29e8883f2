"""Time-ordered identifiers: UUIDv7 (RFC 9562, section 5.7).

``new_id()`` returns the canonical 36-character lowercase form. Within one process the ids are strictly
increasing, so sorting ids (as strings or bytes) gives creation order even within one millisecond: when
the clock has not advanced (or went backwards), the 74 random bits are treated as a counter and
incremented (RFC 9562 section 6.2, method 2 "monotonic random"). Fresh random bits start with their top
bit clear, which leaves room for at least 2**73 increments before the counter would spill into the
timestamp.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

__all__ = ["UUIDv7Generator", "id_timestamp_ms", "new_id"]

_RAND_BITS = 74
RAND_MAX = (1 << _RAND_BITS) - 1


def _fresh_random() -> int:
    return int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS + 1)


class UUIDv7Generator:
    """Monotonic UUIDv7 source; thread-safe. ``clock_ns`` is injectable (tests freeze it)."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.clock_ns = clock_ns
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0

    def new_id(self) -> str:
        now_ms = self.clock_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms, self._last_rand = now_ms, _fresh_random()
            elif self._last_rand < RAND_MAX:
                self._last_rand += 1
            else:  # counter exhausted within this millisecond: borrow the next one
                self._last_ms, self._last_rand = self._last_ms + 1, _fresh_random()
            ms, rand = self._last_ms, self._last_rand
        rand_a = rand >> 62  # 12 bits
        rand_b = rand & ((1 << 62) - 1)  # 62 bits
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        return str(uuid.UUID(int=value))


default_generator = UUIDv7Generator()


def new_id() -> str:
    """Return a new UUIDv7 string, greater than every id returned before in this process."""
    return default_generator.new_id()


def id_timestamp_ms(value: str) -> int:
    """The Unix time in milliseconds embedded in a UUIDv7 string."""
    return uuid.UUID(value).int >> 80
