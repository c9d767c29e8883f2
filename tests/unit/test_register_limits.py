"""The per-address registration limit of the register feature (a sliding window)."""

from __future__ import annotations

from mbeon_chat.features.register import Options, RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_applies_per_address_within_the_window() -> None:
    clock = Clock()
    limit = RateLimit(2, 60.0, clock)
    assert limit.allow("10.0.0.1") and limit.allow("10.0.0.1")
    assert not limit.allow("10.0.0.1")
    assert limit.allow("10.0.0.2")
    clock.now += 30
    assert not limit.allow("10.0.0.1")


def test_the_window_slides() -> None:
    clock = Clock()
    limit = RateLimit(2, 60.0, clock)
    assert limit.allow("a")
    clock.now += 40
    assert limit.allow("a")
    clock.now += 21  # the first registration is now older than the window
    assert limit.allow("a")
    assert not limit.allow("a")


def test_refused_attempts_do_not_extend_the_wait() -> None:
    clock = Clock()
    limit = RateLimit(1, 10.0, clock)
    assert limit.allow("a")
    for _ in range(5):
        clock.now += 1
        assert not limit.allow("a")
    clock.now += 6
    assert limit.allow("a")


def test_options_are_validated() -> None:
    import pytest

    from mbeon_chat.config import ConfigError, build_options

    with pytest.raises(ConfigError, match=r"plugins\.register\.registrations_per_address"):
        build_options(Options, {"registrations_per_address": 0}, "plugins.register")
    assert build_options(Options, {}, "plugins.register") == Options()
