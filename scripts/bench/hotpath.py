#!/usr/bin/env python3
"""In-process microbenchmark of the stanza hot path: bytes in -> parse -> route -> serialise -> bytes out.

No sockets and no TLS: two bound sessions on fake wires inside a real App (the bench config's plugins and
database), so the figure is the server's own Python cost per stanza, free of the kernel, of OpenSSL and of
whatever else runs on the machine. The best of ``--reps`` timings is reported (less noise than a mean).

    hotpath.py CONFIG [--messages 20000] [--batch 10] [--reps 5] [--muc 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


class FakeWire:
    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def flush(self) -> None:
        pass

    def write_buffer_size(self) -> int:
        return 0

    async def start_tls(self) -> None:
        raise RuntimeError("no TLS here")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)


async def bound(app: Any, user: str, resource: str) -> Any:
    from mbeon_chat.core.c2s import ClientConnection
    from mbeon_chat.stream.framing import TcpFraming
    from mbeon_chat.stream.negotiation import ServerStream

    wire = FakeWire()
    machine = ServerStream(app.policy(), TcpFraming(), tls_active=True)
    machine.username = user  # as if SASL had succeeded: the next header opens the bind stage
    conn = ClientConnection(app.ctx, wire, machine, f"hot-{user}", "127.0.0.1")
    conn.feed(HEADER)
    conn.feed(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
        b"</bind></iq>" % resource.encode()
    )
    for _ in range(100):
        await asyncio.sleep(0.01)
        if conn.session is not None:
            break
    assert conn.session is not None, "bind failed"
    conn.feed(b"<presence/>")
    await asyncio.sleep(0.1)
    return conn, wire


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    from mbeon_chat.app import App
    from mbeon_chat.config import load_config

    app = App(load_config(opts.config), opts.config, configure_logs=False)
    await app.start()
    try:
        a, _wa = await bound(app, "u1", "hot")
        b, wb = await bound(app, "u2", "hot")
        to = str(b.session.jid).encode()
        body = b"x" * 100
        chunk = b"".join(
            b"<message type='chat' to='%s' id='m%d'><body>%d %s</body></message>" % (to, i, i, body)
            for i in range(opts.batch)
        )
        n_chunks = opts.messages // opts.batch
        best = float("inf")
        for _ in range(opts.reps):
            before = wb.writes
            t0 = time.perf_counter()
            for _ in range(n_chunks):
                a.feed(chunk)
                await asyncio.sleep(0)  # the worker handles the chunk
                await asyncio.sleep(0)
            dt = time.perf_counter() - t0
            delivered = wb.writes - before
            best = min(best, dt / max(1, n_chunks * opts.batch))
        if delivered != n_chunks * opts.batch:
            raise SystemExit(f"only {delivered} of {n_chunks * opts.batch} messages were delivered")
        return {
            "bench": "hotpath",
            "us_per_message": round(best * 1e6, 2),
            "batch": opts.batch,
            "messages": n_chunks * opts.batch,
        }
    finally:
        await app.stop(grace=2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=5)
    opts = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(opts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
