"""Start the real server on ephemeral ports for tests, with users, and stop it afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbeon_chat.app import App
from mbeon_chat.config import load_config
from mbeon_chat.observability.logs import configure_logging
from mbeon_chat.storage import migrate

DEFAULT_USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333"}


@dataclass
class RunningServer:
    app: App
    domain: str
    data_dir: Path
    users: dict[str, str] = field(default_factory=dict)

    @property
    def starttls_port(self) -> int:
        return self.app.bound_port("starttls")

    @property
    def direct_tls_port(self) -> int:
        return self.app.bound_port("direct_tls")

    @property
    def http_port(self) -> int:
        assert self.app.http is not None
        return self.app.http.port()

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def client_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "certs" / f"{self.domain}.crt"))
        ctx.check_hostname = False
        return ctx


def make_config(tmp: Path, overrides: dict[str, Any] | None = None, storage_url: str | None = None) -> Any:
    data: dict[str, Any] = {
        "server": {"data_dir": str(tmp / "var")},
        "listeners": {"starttls": ["127.0.0.1:0"], "direct_tls": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]},
        "log": {"level": "warning"},
    }
    if storage_url:
        data["storage"] = {"url": [storage_url]}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return load_config(None, data)


@contextlib.asynccontextmanager
async def running_server(
    tmp: Path,
    overrides: dict[str, Any] | None = None,
    users: dict[str, str] | None = None,
    storage_url: str | None = None,
    config_path: Path | None = None,
) -> AsyncIterator[RunningServer]:
    if config_path is not None:
        config = load_config(config_path, overrides)
    else:
        config = make_config(tmp, overrides, storage_url)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(config.log.level, config.log.format)
    await migrate.upgrade(config.storage_urls[0], progress=lambda _: None)
    app = App(config, config_path, configure_logs=False)
    await app.start()
    users = DEFAULT_USERS if users is None else users
    for name, password in users.items():
        if not await app.ctx.accounts.exists(name):
            await app.ctx.accounts.create(name, password)
    try:
        yield RunningServer(app, config.server.domain, config.data_dir, dict(users))
    finally:
        if not app.stopped.is_set():
            await asyncio.wait_for(app.stop(grace=5), 30)
