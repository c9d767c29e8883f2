"""Small portable SQL helpers shared by the stores (dialect-specific upsert, clock)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["insert_ignore", "now_ms", "upsert"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def upsert(
    conn: AsyncConnection,
    table: Table,
    values: Mapping[str, Any],
    keys: Sequence[str],
    update: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``values``, or on a conflict on ``keys`` update the existing row.

    ``update`` maps columns to values or SQL expressions (``table.c.n + 1``); by default every non-key
    column takes its value from ``values``. One statement on every backend, so it is atomic.
    """
    dialect = conn.dialect.name
    if dialect == "mysql" or dialect == "mariadb":
        my_stmt = mysql.insert(table).values(dict(values))
        changes = (
            dict(update)
            if update is not None
            else {name: my_stmt.inserted[name] for name in values if name not in keys}
        )
        await conn.execute(my_stmt.on_duplicate_key_update(changes))
        return
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(dict(values))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(dict(values))
    else:  # pragma: no cover - only the three supported backends
        raise NotImplementedError(f"upsert on {dialect}")
    changes = (
        dict(update)
        if update is not None
        else {name: stmt.excluded[name] for name in values if name not in keys}
    )
    await conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=changes))


async def insert_ignore(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``values`` (one row or several) unless a row with the same primary or unique key exists
    (then nothing changes for that row).

    The retry-safe write: re-running it after a commit whose acknowledgement was lost changes nothing.
    """
    values = dict(values) if isinstance(values, Mapping) else [dict(v) for v in values]
    dialect = conn.dialect.name
    if dialect == "mysql" or dialect == "mariadb":
        # ON DUPLICATE KEY UPDATE <pk> = <pk>, not INSERT IGNORE (which would also hide other errors).
        first = next(iter(table.primary_key.columns))
        my_stmt = mysql.insert(table).values(values)
        await conn.execute(my_stmt.on_duplicate_key_update({first.name: first}))
        return
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(values)
    else:  # pragma: no cover - only the three supported backends
        raise NotImplementedError(f"insert_ignore on {dialect}")
    await conn.execute(stmt.on_conflict_do_nothing())
