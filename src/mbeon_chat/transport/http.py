"""The HTTP front end (aiohttp): XMPP over WebSocket, XEP-0156 discovery, the web client, health and metrics.

Routes on the ``listeners.http`` addresses (TLS when ``listeners.http_tls``):

- ``websocket.path`` (``/xmpp-websocket``): RFC 7395, see :mod:`mbeon_chat.transport.websocket`.
- ``/.well-known/host-meta`` and ``/.well-known/host-meta.json``: XEP-0156, announce the WebSocket URL.
- ``/chat/``: the counsellor web client (converse.js from ``web/node_modules``, installed by
  ``scripts/setup-web.sh``; 503 with that hint when it is missing), under a Content-Security-Policy that
  allows only this server.
- ``/healthz`` (the process answers), ``/readyz`` (client listeners up and the database answering; 503 with
  the reasons otherwise).
- ``/metrics`` (Prometheus text): when ``listeners.metrics`` lists addresses it is served there only (with
  /healthz and /readyz); otherwise here, to loopback clients that did not come through a proxy.

Listeners follow the config live (reload adds/removes addresses, toggles TLS).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import structlog
from aiohttp import web

import mbeon_chat
from mbeon_chat.config import Config, parse_address
from mbeon_chat.transport.tls import ensure_self_signed
from mbeon_chat.transport.websocket import WebSocketEndpoint, is_loopback, public_url

if TYPE_CHECKING:
    import ssl

    from mbeon_chat.app import App

log = structlog.get_logger("mbeon_chat.http")

PACKAGE_WEB = Path(mbeon_chat.__file__).parent / "web"
SETUP_HINT = (
    "The web client is not installed: run scripts/setup-web.sh (npm ci in web/) and reload this page.\n"
)
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WS_REL = "urn:xmpp:alt-connections:websocket"
DB_PING_TIMEOUT = 3.0


def converse_dirs(config: Config) -> list[Path]:
    """Where converse.js's ``dist/`` may lie: configured, else web/node_modules in the source tree or cwd."""
    if config.web.converse_dir:
        return [config.path(config.web.converse_dir)]
    tail = Path("web", "node_modules", "converse.js", "dist")
    return [Path(mbeon_chat.__file__).resolve().parents[2] / tail, Path.cwd() / tail]


def find_converse(config: Config) -> Path | None:
    for candidate in converse_dirs(config):
        if (candidate / "converse.min.js").is_file():
            return candidate.resolve()
    return None


def cert_paths(config: Config) -> tuple[Path, Path]:
    if config.tls.cert and config.tls.key:
        return config.path(config.tls.cert), config.path(config.tls.key)
    return ensure_self_signed(config.data_dir / "certs", config.server.domain)


def http_tls_context(config: Config) -> ssl.SSLContext:
    """The client certificate, without the XMPP ALPN id of the client listeners' context."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = cert_paths(config)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpFrontend:
    def __init__(self, app: App) -> None:
        self.app = app
        config = app.config
        self.websocket = WebSocketEndpoint(app.ctx, app.policy, app.metrics)
        self.web = web.Application()
        router = self.web.router
        router.add_get(config.websocket.path, self.websocket.handle)
        router.add_get("/.well-known/host-meta", self.host_meta)
        router.add_get("/.well-known/host-meta.json", self.host_meta_json)
        router.add_get("/chat", self.chat_redirect)
        router.add_get("/chat/", self.chat_index)
        router.add_get("/chat/config.json", self.chat_config)
        router.add_get("/chat/dist/{path:.+}", self.chat_dist)
        router.add_get("/chat/{name:[a-z0-9-]+\\.(?:js|css|svg)}", self.chat_file)
        router.add_get("/healthz", self.healthz)
        router.add_get("/readyz", self.readyz)
        router.add_get("/metrics", self.metrics_guarded)
        self.metrics_web = web.Application()
        self.metrics_web.router.add_get("/metrics", self.metrics)
        self.metrics_web.router.add_get("/healthz", self.healthz)
        self.metrics_web.router.add_get("/readyz", self.readyz)
        self.runner: web.AppRunner | None = None
        self.metrics_runner: web.AppRunner | None = None
        #: (address, TLS settings or None) -> site; a TLS change restarts the site with the new certificate.
        self.sites: dict[tuple[str, Any], web.TCPSite] = {}
        self.metrics_sites: dict[str, web.TCPSite] = {}

    # --- listeners ------------------------------------------------------------------------------
    async def sync(self) -> None:
        config = self.app.config
        # A new certificate (file contents, as the app fingerprints them) restarts the TLS sites.
        tls_key = (config.tls, getattr(self.app, "_tls_digest", "")) if config.listeners.http_tls else None
        wanted = {(addr, tls_key) for addr in config.listeners.http}
        if wanted and self.runner is None:
            self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False, shutdown_timeout=5)
            await self.runner.setup()
        for key in [k for k in self.sites if k not in wanted]:
            await self.sites.pop(key).stop()
            log.info("listener.stopped", kind="http", address=key[0])
        for key in sorted(wanted - set(self.sites), key=lambda k: k[0]):
            assert self.runner is not None
            host, port = parse_address(key[0])
            ssl_ctx = http_tls_context(config) if key[1] is not None else None
            site = web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=ssl_ctx)
            await site.start()
            self.sites[key] = site
            log.info("listener.started", kind="https" if ssl_ctx else "http", address=key[0])
        wanted_metrics = set(config.listeners.metrics)
        if wanted_metrics and self.metrics_runner is None:
            self.metrics_runner = web.AppRunner(
                self.metrics_web, access_log=None, handle_signals=False, shutdown_timeout=5
            )
            await self.metrics_runner.setup()
        for addr in [a for a in self.metrics_sites if a not in wanted_metrics]:
            await self.metrics_sites.pop(addr).stop()
            log.info("listener.stopped", kind="metrics", address=addr)
        for addr in sorted(wanted_metrics - set(self.metrics_sites)):
            assert self.metrics_runner is not None
            host, port = parse_address(addr)
            site = web.TCPSite(self.metrics_runner, host, port, reuse_address=True)
            await site.start()
            self.metrics_sites[addr] = site
            log.info("listener.started", kind="metrics", address=addr)

    def port(self) -> int:
        return _site_port(next(iter(self.sites.values())))

    def metrics_port(self) -> int:
        return _site_port(next(iter(self.metrics_sites.values())))

    async def stop_accepting(self) -> None:
        for site in [*self.sites.values(), *self.metrics_sites.values()]:
            await site.stop()
        self.sites.clear()
        self.metrics_sites.clear()

    async def stop(self) -> None:
        for runner in (self.runner, self.metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self.runner = self.metrics_runner = None

    # --- health and metrics -----------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = []
        listeners = self.app.config.listeners
        for kind in ("starttls", "direct_tls"):
            for addr in getattr(listeners, kind):
                server = self.app.listeners.get((kind, addr))
                if server is None or not server.is_serving():
                    reasons.append(f"the {kind} listener {addr} is down")
        storage = self.app.storage
        try:
            ok = storage is not None and await asyncio.wait_for(storage.database.ping(), DB_PING_TIMEOUT)
        except TimeoutError:
            ok = False
        if not ok:
            reasons.append("the database does not answer")
        if reasons:
            return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.app.metrics.render(), content_type="text/plain", charset="utf-8")

    async def metrics_guarded(self, request: web.Request) -> web.Response:
        if self.app.config.listeners.metrics:
            raise web.HTTPNotFound(text="metrics are served on listeners.metrics\n")
        proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        if proxied or not is_loopback(request.remote):
            raise web.HTTPForbidden(
                text="metrics are answered to loopback clients only (see listeners.metrics)\n"
            )
        return await self.metrics(request)

    # --- XEP-0156 -----------------------------------------------------------------------------------
    def _ws_url(self, request: web.Request) -> str:
        conf = self.app.config.websocket
        return public_url(request, conf.path, conf.public_url, conf.trust_proxy_tls)

    async def host_meta(self, request: web.Request) -> web.Response:
        body = (
            "<?xml version='1.0' encoding='utf-8'?>\n"
            f"<XRD xmlns='{XRD_NS}'>\n"
            f"  <Link rel='{WS_REL}' href={quoteattr(self._ws_url(request))}/>\n"
            "</XRD>\n"
        )
        return web.Response(text=body, content_type="application/xrd+xml", headers=_DISCOVERY_HEADERS)

    async def host_meta_json(self, request: web.Request) -> web.Response:
        doc = {"links": [{"rel": WS_REL, "href": self._ws_url(request)}]}
        return web.json_response(doc, content_type="application/json", headers=_DISCOVERY_HEADERS)

    # --- the web client -------------------------------------------------------------------------------
    def _chat_headers(self, request: web.Request) -> dict[str, str]:
        conf = self.app.config.websocket
        ws_sources = {f"ws://{request.host}", f"wss://{request.host}"}
        if conf.public_url:
            ws_sources.add(conf.public_url)
        csp = "; ".join(
            (
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self' 'unsafe-inline'",
                "img-src 'self' data: blob:",
                "font-src 'self' data:",
                "media-src 'self' data: blob:",
                "connect-src 'self' " + " ".join(sorted(ws_sources)),
                "worker-src 'self'",
                "manifest-src 'self'",
                "base-uri 'self'",
                "form-action 'self'",
                "frame-ancestors 'none'",
            )
        )
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache",
        }

    def _converse_or_503(self, request: web.Request) -> Path:
        if not self.app.config.web.chat:
            raise web.HTTPNotFound(text="the web client is disabled (web.chat = false)\n")
        found = find_converse(self.app.config)
        if found is None:
            raise web.HTTPServiceUnavailable(text=SETUP_HINT, headers=self._chat_headers(request))
        return found

    async def chat_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/chat/")

    async def chat_index(self, request: web.Request) -> web.StreamResponse:
        self._converse_or_503(request)
        return web.FileResponse(PACKAGE_WEB / "index.html", headers=self._chat_headers(request))

    async def chat_file(self, request: web.Request) -> web.StreamResponse:
        self._converse_or_503(request)
        path = PACKAGE_WEB / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=self._chat_headers(request))

    async def chat_config(self, request: web.Request) -> web.Response:
        self._converse_or_503(request)
        config = self.app.config
        doc = {
            "domain": config.server.domain,
            "name": config.server.name,
            "websocket_path": config.websocket.path,
            "websocket_url": config.websocket.public_url or None,
            "assets_path": "/chat/dist/",
        }
        return web.json_response(doc, headers=self._chat_headers(request))

    async def chat_dist(self, request: web.Request) -> web.StreamResponse:
        root = self._converse_or_503(request)
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        headers = self._chat_headers(request)
        headers["Cache-Control"] = "public, max-age=3600"
        return web.FileResponse(path, headers=headers)


_DISCOVERY_HEADERS = {"Access-Control-Allow-Origin": "*"}


def _site_port(site: web.TCPSite) -> int:
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])
