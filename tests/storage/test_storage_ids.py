"""UUIDv7 ids (RFC 9562): format, time prefix, strict order within a process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from mbeon_chat.storage import ids

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MS = 1_000_000  # nanoseconds


def _clock(readings_ms: Iterator[int] | list[int]) -> ids.UUIDv7Generator:
    readings = iter(readings_ms)
    return ids.UUIDv7Generator(clock_ns=lambda: next(readings) * MS)


def test_new_id_is_a_version_7_rfc_9562_uuid() -> None:
    value = ids.new_id()

    assert UUID_RE.match(value)
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_id_carries_the_creation_time_in_milliseconds() -> None:
    generator = ids.UUIDv7Generator(clock_ns=lambda: 1_800_000_000_123_456_789)

    assert ids.id_timestamp_ms(generator.new_id()) == 1_800_000_000_123


def test_ids_are_strictly_increasing_within_one_millisecond() -> None:
    generator = ids.UUIDv7Generator(clock_ns=lambda: 1_800_000_000_000 * MS)

    values = [generator.new_id() for _ in range(10_000)]

    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_ids_keep_increasing_when_the_clock_goes_back() -> None:
    generator = _clock([2_000_000_000_000, 1_999_999_999_000, 2_000_000_000_000])

    values = [generator.new_id() for _ in range(3)]

    assert values == sorted(values) and len(set(values)) == 3


def test_an_exhausted_counter_moves_on_to_the_next_millisecond() -> None:
    generator = ids.UUIDv7Generator(clock_ns=lambda: 1_800_000_000_000 * MS)
    first = generator.new_id()
    generator._last_rand = ids.RAND_MAX

    second = generator.new_id()

    assert second > first
    assert ids.id_timestamp_ms(second) == ids.id_timestamp_ms(first) + 1


@given(st.lists(st.integers(min_value=0, max_value=2**48 - 2), min_size=2, max_size=50))
def test_ids_sort_in_creation_order_whatever_the_clock_does(clock_ms: list[int]) -> None:
    generator = _clock(clock_ms)

    values = [generator.new_id() for _ in clock_ms]

    assert values == sorted(values)
    assert all(UUID_RE.match(value) for value in values)
