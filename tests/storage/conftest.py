"""Fixtures of the storage suite: every test here runs once per backend (see tests/backends.py)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path

import pytest

# Make `tests.backends` importable without a pytest `pythonpath` setting (the repository root).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.backends import (  # noqa: E402, F401  (fixtures are found by name in this namespace)
    backend_name,
    backend_url,
    database_factory,
    empty_database_url,
    migrated_database,
    pytest_collection_modifyitems,
    pytest_configure,
)

from mbeon_chat.storage.api import ScramCredentials, Storage, open_storage  # noqa: E402
from mbeon_chat.stream.sasl import derive_scram_credentials  # noqa: E402


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
