"""Accounts as the core sees them: credentials for SASL, existence checks, and password changes.

Key derivation (PBKDF2) runs in a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from mbeon_chat.stream.sasl import ScramCredentials, derive_scram_credentials, saslprep


class AccountError(Exception):
    pass


class Accounts:
    def __init__(self, store: Any, pool: Executor, iterations: int) -> None:
        self.store = store
        self.pool = pool
        self.iterations = iterations
        self._exists: dict[str, bool] = {}

    async def credentials(self, username: str, mechanism: str) -> ScramCredentials | None:
        record = await self.store.get(username)
        if record is None:
            return None
        creds: ScramCredentials | None = record.sha1 if mechanism == "SCRAM-SHA-1" else record.sha256
        return creds

    async def exists(self, username: str) -> bool:
        known = self._exists.get(username)
        if known is None:
            known = await self.store.exists(username)
            if len(self._exists) > 100_000:
                self._exists.clear()
            self._exists[username] = known
        return known

    async def derive(self, password: str) -> tuple[ScramCredentials, ScramCredentials]:
        try:
            saslprep(password)
        except ValueError as exc:
            raise AccountError(f"the password is not allowed: {exc}") from None
        loop = asyncio.get_running_loop()
        sha1 = loop.run_in_executor(self.pool, derive_scram_credentials, password, "sha1", self.iterations)
        sha256 = loop.run_in_executor(
            self.pool, derive_scram_credentials, password, "sha256", self.iterations
        )
        return await sha1, await sha256

    async def create(self, username: str, password: str) -> None:
        sha1, sha256 = await self.derive(password)
        await self.store.create(username, sha1, sha256)
        self._exists[username] = True

    async def set_password(self, username: str, password: str) -> None:
        sha1, sha256 = await self.derive(password)
        await self.store.set_credentials(username, sha1, sha256)

    async def delete(self, username: str) -> bool:
        self._exists.pop(username, None)
        deleted: bool = await self.store.delete(username)
        return deleted

    def forget(self, username: str) -> None:
        self._exists.pop(username, None)
