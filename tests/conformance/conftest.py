"""One real server per test module (starting one with every default plugin takes about a second).

Tests share it, so each uses its own resources (``Client.bound`` picks a fresh one) and leaves no state that
another test could trip over; a test that needs another configuration starts its own with ``server()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from conformance_kit import server

from harness import RunningServer


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with server(tmp_path_factory.mktemp("conformance")) as running:
        yield running
