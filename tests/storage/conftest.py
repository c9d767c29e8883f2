"""Fixtures of the storage suite: every test here runs once per backend (see tests/backends.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from functools import cache
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from backends import (  # noqa: F401  (fixtures and hooks are found by name in this namespace)
    backend_name,
    backend_url,
    database_factory,
    empty_database_url,
    migrated_database,
    pytest_collection_modifyitems,
    pytest_configure,
)
from mbeon_chat.storage.api import ScramCredentials, Storage, open_storage
from mbeon_chat.stream.sasl import derive_scram_credentials


@pytest.fixture
async def storage(backend_url: str) -> AsyncIterator[Storage]:  # noqa: F811
    opened = await open_storage(backend_url)
    yield opened
    await opened.close()


@cache
def _derive(password: str) -> tuple[ScramCredentials, ScramCredentials]:
    return derive_scram_credentials(password, "sha1", 16), derive_scram_credentials(password, "sha256", 16)


@pytest.fixture
def credentials() -> Callable[[str], tuple[ScramCredentials, ScramCredentials]]:
    """``credentials(password) -> (sha1, sha256)``: SCRAM credentials, cheap to derive (16 iterations)."""
    return _derive


@pytest.fixture
def log_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event of the test, at every level, whatever logging another test configured."""
    previous = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**previous)
