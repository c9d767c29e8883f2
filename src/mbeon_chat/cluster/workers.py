"""``server.workers = N``: N worker processes on the same listeners, routing to each other over the bus.

The master process forks the workers before any event loop or thread exists, then only supervises: it
passes SIGTERM/SIGINT/SIGHUP on and stops all of them when one dies. Each worker is a complete App with
its listeners opened with SO_REUSEPORT (the kernel spreads new connections over the workers) and a
:class:`~mbeon_chat.cluster.node.ClusterNode` on a :class:`~mbeon_chat.cluster.bus.SocketBus` (Unix
sockets under ``<data_dir>/bus``). Worker "0" is the home of components (MUC), serves the http listener
and the admin socket; the others have neither (admin commands such as reload go to worker 0 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from mbeon_chat.config import Config, load_config


def _worker_config(config: Config, config_path: str | None, index: int) -> Config:
    overrides: dict[str, Any] = {}
    if index > 0:
        admin = str(config.data_dir / f"admin-{index}.sock")
        overrides = {"listeners": {"http": [], "metrics": [], "admin_socket": admin}}
    if config_path is None:
        import dataclasses

        listeners = dataclasses.replace(config.listeners, **overrides.get("listeners", {}))
        return dataclasses.replace(config, listeners=listeners) if overrides else config
    return load_config(config_path, overrides)


def run_worker(config: Config, config_path: str | None, index: int, count: int) -> int:
    """The body of one worker process (also usable in tests with a fresh interpreter)."""
    import structlog

    from mbeon_chat.app import App
    from mbeon_chat.cluster.bus import SocketBus
    from mbeon_chat.cluster.node import ClusterNode

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    config = _worker_config(config, config_path, index)
    structlog.contextvars.bind_contextvars(worker=index)
    app = App(config, config_path)
    bus = SocketBus(config.data_dir / "bus", str(index), [str(i) for i in range(count)])
    app.cluster = ClusterNode(app.ctx, bus, home="0")

    try:
        asyncio.run(app.run())  # the bus queues frames for peers that are not connected yet
    except Exception as exc:  # reported by the master too (the worker's exit code)
        print(f"mbeon-chat worker {index}: {exc}", file=sys.stderr)
        return 1
    return 0


def _prepare_shared_files(config: Config) -> None:
    """What a single process would create on first start, made once here so workers do not race for it:
    the development master key and the self-signed certificate."""
    from mbeon_chat.storage.crypto import keyring_from_config
    from mbeon_chat.transport.tls import ensure_self_signed

    config.data_dir.mkdir(parents=True, exist_ok=True)
    (config.data_dir / "bus").mkdir(parents=True, exist_ok=True)
    keyring_from_config(config)
    if not (config.tls.cert and config.tls.key):
        ensure_self_signed(config.data_dir / "certs", config.server.domain)


def serve_workers(config: Config, config_path: str | None) -> int:
    count = config.server.workers
    try:
        _prepare_shared_files(config)
    except Exception as exc:
        print(f"mbeon-chat: cannot start: {exc}", file=sys.stderr)
        return 1
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                code = run_worker(config, config_path, index, count)
            finally:
                os._exit(code)
        children[pid] = index
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        gone = children.pop(pid, -1)
        exit_code = os.waitstatus_to_exitcode(status)
        if gone >= 0 and not stopping:
            # One worker is gone: its sessions are lost and the others would route into the void; stop all
            # (a supervisor restarts the service).
            print(f"mbeon-chat: worker {gone} exited with {exit_code}; stopping the others", file=sys.stderr)
            code = 1
            forward(signal.SIGTERM, None)
        elif exit_code:
            code = code or 1
    return code
