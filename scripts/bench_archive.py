"""Message archive benchmark: archive writes per second and MAM query latency, per storage backend.

Each backend gets a fresh database (created, migrated, dropped at the end), accounts, and a keyring; then

- ``writes_per_s_1``: archive writes one after the other (one sender: the latency-bound case);
- ``writes_per_s_N``: N concurrent writers (many conversations at once: the throughput case);
  every write is one ``mam.archive`` transaction storing the sender's and the recipient's sealed copies;
- ``query_*_ms``: p50 / p95 latency of MAM queries of a page of 50 over an archive of ``--messages``
  messages: the last page (``<before/>``), a page after a random id, and a ``with`` filter (with counts).

One JSON line per backend on stdout. Run from the repository root:

    .venv/bin/python scripts/bench_archive.py                 # sqlite, mariadb, postgresql
    .venv/bin/python scripts/bench_archive.py --backends sqlite --messages 5000

Server URLs (an admin URL of an existing database): MBEON_BENCH_MARIADB_URL, MBEON_BENCH_POSTGRESQL_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from mbeon_chat.storage.api import Storage, open_storage
from mbeon_chat.storage.crypto import Keyring, MasterKey
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.migrate import upgrade
from mbeon_chat.storage.stores.archive import ArchiveFilter, ArchiveWrite, PageRequest
from mbeon_chat.stream.sasl import derive_scram_credentials

ADMIN_URLS = {
    "mariadb": os.environ.get("MBEON_BENCH_MARIADB_URL", "mysql+aiomysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get(
        "MBEON_BENCH_POSTGRESQL_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
}
DOMAIN = "bench.example"
USERS = 20
BODY = "How are you today? I wanted to follow up on what we talked about last week. " * 2


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(backend: str, tmp: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    name = f"mbeon_bench_{secrets.token_hex(4)}"
    if backend == "sqlite":

        async def nothing() -> None:
            return None

        return f"sqlite+aiosqlite:///{tmp / name}.db", nothing
    url = make_url(ADMIN_URLS[backend])
    if backend == "mariadb":
        await admin(ADMIN_URLS[backend], f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    else:
        await admin(ADMIN_URLS[backend], f"CREATE DATABASE {name}")

    async def drop() -> None:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        await admin(ADMIN_URLS[backend], f"DROP DATABASE IF EXISTS {name}{force}")

    return url.set(database=name).render_as_string(hide_password=False), drop


def message(sender: int, recipient: int) -> ArchiveWrite:
    a, b = f"user{sender}@{DOMAIN}", f"user{recipient}@{DOMAIN}"
    stanza = (
        f"<message xmlns='jabber:client' from='{a}/phone' to='{b}' type='chat'><body>{BODY}</body></message>"
    )
    return ArchiveWrite(new_id(), a, b, stanza.encode(), f"user{sender}", f"user{recipient}", "phone")


async def timed_writes(storage: Storage, n: int, concurrency: int) -> float:
    queue: asyncio.Queue[ArchiveWrite] = asyncio.Queue()
    for i in range(n):
        sender = i % USERS
        queue.put_nowait(message(sender, (sender + 1 + i % 3) % USERS))

    async def worker() -> None:
        while not queue.empty():
            await storage.archive.archive(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def latencies(fn: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 2),
        "p95": round(samples[int(len(samples) * 0.95) - 1], 2),
    }


async def bench(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url, drop = await create_database(backend, tmp)
    try:
        await upgrade(url, lambda _line: None)
        storage = await open_storage(url, keyring=Keyring([MasterKey.generate()]), domain=DOMAIN)
        try:
            creds = (derive_scram_credentials("pw", "sha1", 16), derive_scram_credentials("pw", "sha256", 16))
            for i in range(USERS):
                await storage.accounts.create(f"user{i}", *creds)
            await timed_writes(storage, 50, 1)  # warm up: connections, keys
            sequential = await timed_writes(storage, args.messages // 4, 1)
            concurrent = await timed_writes(storage, args.messages, args.concurrency)
            archive = storage.archive
            page = await archive.query("user0", ArchiveFilter(), PageRequest(max=args.messages))
            ids = [m.id for m in page.messages]

            async def last_page() -> Any:
                return await archive.query("user0", ArchiveFilter(), PageRequest(max=50, before=""))

            async def after_random() -> Any:
                return await archive.query(
                    "user0", ArchiveFilter(), PageRequest(max=50, after=random.choice(ids))
                )

            async def with_filter() -> Any:
                flt = ArchiveFilter(with_jid=f"user1@{DOMAIN}")
                return await archive.query("user0", flt, PageRequest(max=50, before=""))

            result = {
                "backend": backend,
                "archive_rows": 2 * (50 + args.messages // 4 + args.messages),
                "messages_in_queried_archive": len(ids),
                "writes_per_s_1": round(sequential, 1),
                f"writes_per_s_{args.concurrency}": round(concurrent, 1),
                "query_last_page_ms": await latencies(last_page, args.queries),
                "query_after_id_ms": await latencies(after_random, args.queries),
                "query_with_ms": await latencies(with_filter, args.queries),
            }
        finally:
            await storage.close()
    finally:
        await drop()
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument(
        "--messages", type=int, default=4000, help="concurrent writes (a quarter of it sequential)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            try:
                print(json.dumps(await bench(backend.strip(), args, Path(tmp))), flush=True)
            except Exception as exc:  # unreachable server: say so, go on with the others
                print(
                    json.dumps({"backend": backend, "error": f"{type(exc).__name__}: {exc}"[:300]}),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
