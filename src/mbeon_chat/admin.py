"""The local admin channel: a Unix domain socket only the server's user can use, speaking JSON lines.

One request per line, one answer per line::

    {"op": "reload", "plugin": null}       config file + every changed plugin (or one plugin + dependents)
    {"op": "plugins"}                      every plugin found, loaded or not
    {"op": "load", "plugin": "name"}       load a plugin at run time
    {"op": "unload", "plugin": "name"}     unload it (refused while others depend on it)
    {"op": "status"}                       uptime, sessions, listeners, last reload

    -> {"ok": true, "lines": ["applied: log.level (immediately)", ...], ...}
    -> {"ok": false, "error": "plugins/office_hours.py:12: syntax error: ...", "lines": [...]}

The socket is ``listeners.admin_socket`` (default ``<data_dir>/admin.sock``), mode 0600; a peer whose uid is
neither the server's nor root is refused (SO_PEERCRED). :class:`AdminService` is the same set of operations
for in-process callers (the ad-hoc admin commands). :func:`send_admin_command` is the CLI side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from mbeon_chat.app import App
    from mbeon_chat.config import Config

log = structlog.get_logger("mbeon_chat.admin")
MAX_REQUEST = 65536
OPS = ("reload", "plugins", "load", "unload", "status")


def admin_socket_path(config: Config) -> Path:
    if config.listeners.admin_socket:
        return config.path(config.listeners.admin_socket)
    return config.data_dir / "admin.sock"


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A path a Unix socket can bind/connect to: sun_path holds ~107 bytes, so a deep path goes through
    the directory's file descriptor (``/proc/self/fd/N/name``, Linux)."""
    text = str(path)
    if len(os.fsencode(text)) < 100 or not Path("/proc/self/fd").is_dir():
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class AdminService:
    """Admin operations on a running :class:`App`; each result is a JSON-ready dict with ``ok``, ``lines``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._server: asyncio.AbstractServer | None = None
        self.path: Path | None = None

    # --- operations ---------------------------------------------------------------------------------
    async def execute(self, command: dict[str, Any], *, trigger: str = "admin") -> dict[str, Any]:
        op = command.get("op")
        plugin = command.get("plugin")
        if op not in OPS:
            return _error(f"unknown op {op!r}; one of {', '.join(OPS)}")
        if plugin is not None and not isinstance(plugin, str):
            return _error("plugin: must be a plugin name or null")
        if op in ("load", "unload") and not plugin:
            return _error(f"{op} needs a plugin name")
        if op == "plugins":
            return self.plugins()
        if op == "status":
            return self.status()
        app = self.app
        # A separate task: a caller that goes away (CLI killed, client gone) cannot cut a reload short.
        if op == "reload":
            task = app.spawn(app.reload(plugin, trigger=trigger))
        elif op == "load":
            task = app.spawn(app.load_plugin(plugin, trigger=trigger))  # type: ignore[arg-type]
        else:
            task = app.spawn(app.unload_plugin(plugin, trigger=trigger))  # type: ignore[arg-type]
        report = await asyncio.shield(task)
        return report.to_dict()  # type: ignore[no-any-return]

    def plugin_status(self, name: str | None = None) -> list[dict[str, Any]]:
        app = self.app
        entries = app.plugins.status(name)
        enabled = set(app.config.plugins.enabled)
        for entry in entries:
            entry["enabled"] = entry["name"] in enabled
        return entries

    def plugins(self) -> dict[str, Any]:
        entries = self.plugin_status()
        lines = []
        for e in entries:
            if e["state"] == "loaded":
                flags = [e["source"], f"v{e['version']}"]
                if e["changed_on_disk"]:
                    flags.append("changed on disk: reload to apply")
                if not e["enabled"]:
                    flags.append("loaded at run time, not in plugins.enabled")
                lines.append(f"{e['name']}: loaded ({', '.join(flags)})")
            else:
                note = "enabled in config, unloaded at run time" if e["enabled"] else "available"
                lines.append(f"{e['name']}: not loaded ({e['source']}, {note})")
            if e["last_error"]:
                lines.append(f"  last error: {e['last_error']}")
        return {"ok": True, "plugins": entries, "lines": lines}

    def status(self) -> dict[str, Any]:
        app = self.app
        last = app.last_reload
        info: dict[str, Any] = {
            "domain": app.config.server.domain,
            "pid": os.getpid(),
            "uptime": round(time.time() - app.started_at, 1) if app.started_at else 0.0,
            "sessions": len(app.registry),
            "connections": len(app.ctx.connections),
            "listeners": sorted(f"{kind} {addr}" for kind, addr in app.listeners),
            "plugins_loaded": len(app.plugins.loaded),
            "reloads": app.plugins.reload_count,
            "last_reload": None
            if last is None
            else {"ok": last.ok, "trigger": last.trigger, "error": last.error},
        }
        lines = [
            f"domain: {info['domain']} (pid {info['pid']}, up {info['uptime']} s)",
            f"sessions: {info['sessions']}, connections: {info['connections']}",
            f"listeners: {', '.join(info['listeners']) or 'none'}",
            f"plugins loaded: {info['plugins_loaded']}, reloads so far: {info['reloads']}",
        ]
        if last is not None:
            lines.append(f"last reload ({last.trigger}): " + ("ok" if last.ok else f"failed: {last.error}"))
        return {"ok": True, **info, "lines": lines}

    # --- the socket ------------------------------------------------------------------------------------
    async def start(self) -> None:
        path = admin_socket_path(self.app.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _short_path(path) as bind_path:
                sock.bind(bind_path)
            os.chmod(path, 0o600)  # before listen(): nobody can connect until it is private
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            raise
        self.path = path
        log.info("admin.listening", path=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer):
                writer.write(_line(_error("permission denied: only the server's user may use this socket")))
                return
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_line(_error("request too long")))
                    return
                if not raw:
                    return
                try:
                    command = json.loads(raw)
                    if not isinstance(command, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    answer = _error(f"not a JSON object: {exc}")
                else:
                    answer = await self.execute(command)
                writer.write(_line(answer))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("admin.request_failed")
        finally:
            writer.close()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "lines": [message]}


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str).encode() + b"\n"


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or so_peercred is None:
        return True  # not Linux: the 0600 file mode is the guard
    _pid, uid, _gid = struct.unpack(
        "3i", sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    )
    return uid in (os.geteuid(), 0)


def _clear_stale(path: Path) -> None:
    """Remove a socket file left by a server that died; refuse if a server still answers on it."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"listeners.admin_socket: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _short_path(path) as connect_path:
            probe.connect(connect_path)
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise RuntimeError(f"another server is running: its admin socket {path} answers (same data_dir?)")


# --- the CLI side -------------------------------------------------------------------------------------
def request(config: Config, command: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Send one command to the running server and return its answer. Raises OSError if it is not running."""
    path = admin_socket_path(config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        with _short_path(path) as connect_path:
            sock.connect(connect_path)
        sock.sendall(json.dumps(command).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError("the server closed the admin connection without answering")
    answer: dict[str, Any] = json.loads(buf)
    return answer


def send_admin_command(config: Config, command: dict[str, Any]) -> int:
    """CLI: send ``command``, print the answer's lines; 0 if it succeeded, 1 if not (with what to do)."""
    path = admin_socket_path(config)
    try:
        answer = request(config, command)
    except (FileNotFoundError, ConnectionRefusedError):
        print(
            f"mbeon-chat: no server is running (nothing answers on {path}). "
            "Start it with `mbeon-chat serve`; "
            "if it runs with another configuration, pass the same --config (or MBEON_CONFIG).",
            file=sys.stderr,
        )
        return 1
    except PermissionError:
        print(
            f"mbeon-chat: permission denied on {path}: run this as the user the server runs as.",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"mbeon-chat: the admin channel at {path} failed: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout if answer.get("ok") else sys.stderr
    for line in answer.get("lines") or [answer.get("error", "")]:
        print(line, file=out)
    return 0 if answer.get("ok") else 1
