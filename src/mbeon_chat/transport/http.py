"""The HTTP front end (aiohttp): health and metrics endpoints; listeners follow the config live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from mbeon_chat.config import parse_address

if TYPE_CHECKING:
    from mbeon_chat.app import App

log = structlog.get_logger("mbeon_chat.http")


class HttpFrontend:
    def __init__(self, app: App) -> None:
        self.app = app
        self.web = web.Application()
        self.web.router.add_get("/healthz", self.healthz)
        self.web.router.add_get("/readyz", self.readyz)
        self.web.router.add_get("/metrics", self.metrics)
        self.runner: web.AppRunner | None = None
        self.sites: dict[str, web.TCPSite] = {}

    async def sync(self) -> None:
        wanted = set(self.app.config.listeners.http)
        if not wanted and self.runner is None:
            return
        if self.runner is None:
            self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
            await self.runner.setup()
        for addr in [a for a in self.sites if a not in wanted]:
            await self.sites.pop(addr).stop()
        for addr in sorted(wanted - set(self.sites)):
            host, port = parse_address(addr)
            site = web.TCPSite(self.runner, host, port, reuse_address=True)
            await site.start()
            self.sites[addr] = site
            log.info("listener.started", kind="http", address=addr)

    def port(self) -> int:
        for site in self.sites.values():
            server: Any = site._server
            return int(server.sockets[0].getsockname()[1])
        raise KeyError("http")

    async def stop_accepting(self) -> None:
        for site in list(self.sites.values()):
            await site.stop()
        self.sites.clear()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = []
        if not self.app.listeners:
            reasons.append("no client listener is up")
        storage = self.app.storage
        if storage is None or not await storage.database.ping():
            reasons.append("the database does not answer")
        if reasons:
            return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.app.metrics.render(), content_type="text/plain", charset="utf-8")
