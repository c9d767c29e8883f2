"""XEP-0050 ad-hoc commands of the counselling service (registered with the adhoc plugin)."""

from __future__ import annotations

from typing import Any


def register(api: Any, adhoc: Any, service: Any) -> None:
    """Filled in once the adhoc plugin's API is there."""
