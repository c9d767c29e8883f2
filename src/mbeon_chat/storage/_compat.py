"""Work-arounds for driver bugs, each applied only where the bug is present. Delete when fixed upstream."""

from __future__ import annotations

import importlib


def _escape_bytes_prefixed(value: bytes, mapping: object = None) -> str:
    return "_binary X'" + value.hex() + "'"  # what PyMySQL >= 1.2.3 itself sends


def fix_aiomysql_bytes_escape() -> None:
    """Make aiomysql able to send ``bytes`` parameters again with PyMySQL >= 1.2.3.

    aiomysql 0.3.2 calls ``pymysql.converters.escape_bytes_prefixed``, which PyMySQL 1.2.3 turned into a
    placeholder string, so every query with a ``bytes`` parameter fails with "'str' object is not
    callable" (https://github.com/aio-libs/aiomysql/issues/1080, fix pending in aiomysql PR #1081).
    Does nothing when aiomysql is absent or its function is callable.
    """
    try:
        module = importlib.import_module("aiomysql.connection")
    except ImportError:
        return
    if not callable(getattr(module, "escape_bytes_prefixed", None)):
        setattr(module, "escape_bytes_prefixed", _escape_bytes_prefixed)  # noqa: B010
