#!/usr/bin/env python3
"""Bulk account provisioning for the benchmark (the same accounts on every server).

    provision.py mbeon CONFIG COUNT PASSWORD        accounts u1..uCOUNT in mbeon-chat's database, through
                                                   the same Accounts API as `mbeon-chat user add`
    provision.py prosody DATA_DIR DOMAIN COUNT PASSWORD ITERATIONS
                                                   Prosody's internal_hashed account files (what
                                                   `prosodyctl register` writes: SCRAM-SHA-1 keys, hex)

A thousand `mbeon-chat user add` / `prosodyctl register` process starts would take longer than the whole
benchmark, so the driver registers two accounts with the real commands (to check they agree) and the
rest here. ejabberd's accounts are registered over its HTTP API (see compare.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

USER_FORMAT = "u{}"


def scram_sha1(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    server_key = hmac.digest(salted, b"Server Key", "sha1")
    return hashlib.sha1(client_key).digest(), server_key


def prosody_encode(s: str) -> str:
    # util.datamanager: every non-alphanumeric byte as %xx
    return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in s)


def provision_prosody(
    data_dir: Path, domain: str, count: int, password: str, iterations: int, start: int = 1
) -> None:
    folder = data_dir / prosody_encode(domain) / "accounts"
    folder.mkdir(parents=True, exist_ok=True)

    def one(n: int) -> None:
        name = USER_FORMAT.format(n)
        salt = str(uuid.uuid4())
        stored, server = scram_sha1(password, salt.encode(), iterations)
        (folder / f"{prosody_encode(name)}.dat").write_text(
            "return {\n"
            f'\t["iteration_count"] = {iterations};\n'
            f'\t["salt"] = "{salt}";\n'
            f'\t["server_key"] = "{server.hex()}";\n'
            f'\t["stored_key"] = "{stored.hex()}";\n'
            "};\n"
        )

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, range(start, count + 1)))


async def provision_mbeon(config_path: str, count: int, password: str, start: int = 1) -> None:
    from mbeon_chat.config import load_config
    from mbeon_chat.core.accounts import Accounts
    from mbeon_chat.storage.api import AlreadyExists, open_storage

    config = load_config(config_path)
    storage = await open_storage(config.storage_urls)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    accounts = Accounts(storage.accounts, pool, config.auth.scram_iterations)
    sem = asyncio.Semaphore(8)

    async def one(n: int) -> None:
        async with sem:
            with contextlib.suppress(AlreadyExists):
                await accounts.create(USER_FORMAT.format(n), password)

    try:
        await asyncio.gather(*(one(n) for n in range(start, count + 1)))
    finally:
        pool.shutdown()
        await storage.close()


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "mbeon":
        config, count, password = argv[1], int(argv[2]), argv[3]
        start = int(argv[4]) if len(argv) > 4 else 1
        asyncio.run(provision_mbeon(config, count, password, start))
    elif kind == "prosody":
        data_dir, domain, count, password, iterations = (
            Path(argv[1]),
            argv[2],
            int(argv[3]),
            argv[4],
            int(argv[5]),
        )
        start = int(argv[6]) if len(argv) > 6 else 1
        provision_prosody(data_dir, domain, count, password, iterations, start)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
