#!/usr/bin/env python3
"""XMPP load generator: login, chat, muc, idle and archive scenarios against any XMPP server.

Every scenario is bounded in count and in time and ends with one JSON summary line on stdout (progress
goes to stderr). The work is split over ``--procs`` processes (multiprocessing, each running uvloop);
each reports its CPU time during the measurement, and the summary gives the generator's CPU use so a run
where the generator, not the server, was the limit shows itself. With ``--server-pid`` the summary also
gives the server's CPU use (its process tree, from /proc) and, for ``idle``, its RSS per connection.

    loadgen.py chat --port 5222 --pairs 20 --messages 500 --size 100 --window 10
    loadgen.py muc --port 5222 --rooms 5 --occupants 10 --messages 50
    loadgen.py login --port 5222 --clients 20 --logins 2000
    loadgen.py idle --port 5222 --connections 5000 --server-pid 1234

Accounts are ``--user-format`` (default ``u{}``) numbered from 1, all with ``--password``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contextlib

from client import StanzaScanner, XmppClient, XmppError, client_ssl_context

now_ns = time.perf_counter_ns  # CLOCK_MONOTONIC: comparable across the generator's processes


def log(*parts: Any) -> None:
    print("[loadgen]", *parts, file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


# --- /proc readings of the server ----------------------------------------------------------------------
def proc_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int | None) -> int:
    if not pid:
        return 0
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def percentile(sorted_values: list[int] | array.array, q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i] / 1e6  # ns -> ms


# --- shared plumbing ----------------------------------------------------------------------------------
@dataclass
class Part:
    """What one generator process reports."""

    started: int = 0
    ended: int = 0
    cpu: float = 0.0
    done: int = 0
    sent: int = 0
    lost: int = 0
    errors: int = 0
    failed_logins: int = 0
    latencies: array.array = field(default_factory=lambda: array.array("q"))
    extra: dict[str, Any] = field(default_factory=dict)


def user(args: argparse.Namespace, n: int) -> str:
    return args.user_format.format(n)


async def login_many(
    args: argparse.Namespace, specs: list[tuple[str, str]], concurrency: int = 64, presence: bool = True
) -> list[XmppClient]:
    """Log in ``(username, resource)`` pairs, at most ``concurrency`` at a time."""
    ctx = None if args.no_tls else client_ssl_context()
    sem = asyncio.Semaphore(concurrency)

    async def one(username: str, resource: str) -> XmppClient:
        async with sem:
            c = XmppClient(args.domain, username, args.password, resource)
            for attempt in range(3):
                try:
                    await c.login(args.host, args.port, ctx, presence=presence)
                    return c
                except (XmppError, OSError, TimeoutError) as exc:
                    c.close()
                    if attempt == 2:
                        raise XmppError(f"login {username}/{resource} failed: {exc}") from exc
                    await asyncio.sleep(0.2 * (attempt + 1))
                    c = XmppClient(args.domain, username, args.password, resource)
            raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(u, r) for u, r in specs)))


def cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pad(size: int, key_room: int = 12) -> bytes:
    return b"x" * max(1, size - key_room)


# --- chat --------------------------------------------------------------------------------------------
class Direction:
    """One sender -> receiver flow of a pair."""

    __slots__ = ("head", "inflight", "received", "sender", "sent", "sent_at", "tail", "total")

    def __init__(self, sender: XmppClient, to_jid: str, total: int, size: int) -> None:
        self.sender = sender
        self.head = b"<message type='chat' to='%s'><body>" % to_jid.encode()
        self.tail = b" " + pad(size) + b"</body></message>"
        self.total = total
        self.sent = 0
        self.received = 0
        self.inflight = 0
        self.sent_at = array.array("q", bytes(8 * total))

    def send(self, n: int) -> int:
        n = min(n, self.total - self.sent)
        if n <= 0:
            return 0
        head, tail, sent_at = self.head, self.tail, self.sent_at
        seq = self.sent
        t = now_ns()
        chunks = []
        for i in range(seq, seq + n):
            sent_at[i] = t
            chunks.append(head + str(i).encode() + tail)
        self.sender.write(b"".join(chunks))
        self.sent += n
        self.inflight += n
        return n


async def run_chat(args: argparse.Namespace, part: int, nparts: int, barrier: Callable[[], Any]) -> Part:
    res = Part()
    pairs = list(range(part, args.pairs, nparts))
    specs = []
    for i in pairs:
        specs += [(user(args, 2 * i + 1), "bench"), (user(args, 2 * i + 2), "bench")]
    clients = await login_many(args, specs)
    await asyncio.sleep(0.5)  # presence echoes settle
    directions: list[Direction] = []
    lat = res.latencies
    state = {"stop": False}
    all_done = asyncio.get_running_loop().create_future()
    remaining = [0]

    def attach(receiver: XmppClient, flow: Direction) -> None:
        scanner = StanzaScanner()
        leftover = bytes(receiver.buf)
        receiver.buf.clear()

        def on_data(data: bytes) -> None:
            keys = scanner.feed(data)
            if not keys:
                return
            t = now_ns()
            sent_at = flow.sent_at
            for k in keys:
                lat.append(t - sent_at[int(k)])
            n = len(keys)
            flow.received += n
            flow.inflight -= n
            remaining[0] -= n
            if not state["stop"] and args.rate == 0 and flow.inflight <= args.refill:
                flow.send(args.window - flow.inflight)
            if remaining[0] <= 0 and not all_done.done():
                all_done.set_result(t)

        receiver.on_data = on_data
        if leftover:
            scanner.feed(leftover)
        res.extra.setdefault("scanners", []).append(scanner)

    for k in range(0, len(clients), 2):
        a, b = clients[k], clients[k + 1]
        ab = Direction(a, b.jid, args.messages, args.size)
        ba = Direction(b, a.jid, args.messages, args.size)
        attach(b, ab)
        attach(a, ba)
        directions += [ab, ba]
    remaining[0] = sum(d.total for d in directions)
    await barrier()
    res.started = now_ns()
    c0 = cpu_now()
    if remaining[0] == 0:
        all_done.set_result(now_ns())
    if args.rate == 0:
        for d in directions:
            d.send(args.window)
        pacer = None
    else:
        pacer = asyncio.ensure_future(_pace(args, directions, nparts, state))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(all_done), args.duration)
    state["stop"] = True
    res.ended = all_done.result() if all_done.done() else now_ns()
    res.cpu = cpu_now() - c0
    res.done = sum(d.received for d in directions)
    if pacer is not None:
        pacer.cancel()
    res.sent = sum(d.sent for d in directions)
    if res.done < res.sent:  # let what is in flight arrive before calling it lost
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and sum(d.received for d in directions) < res.sent:
            await asyncio.sleep(0.05)
    res.lost = res.sent - sum(d.received for d in directions)
    res.errors = sum(s.errors for s in res.extra.pop("scanners", []))
    for c in clients:
        c.close()
    return res


async def _pace(
    args: argparse.Namespace, directions: list[Direction], nparts: int, state: dict[str, bool]
) -> None:
    """Open-loop sending at ``args.rate`` msgs/s in total (this process's share), in 5 ms ticks."""
    share = args.rate / nparts
    start = time.perf_counter()
    sent = 0
    i = 0
    n = len(directions)
    while not state["stop"]:
        await asyncio.sleep(0.005)
        due = int(share * (time.perf_counter() - start)) - sent
        if due <= 0:
            continue
        budget = due
        spins = 0
        while budget > 0 and spins < n:
            d = directions[i % n]
            i += 1
            got = d.send(min(budget, max(0, args.window - d.inflight), 1 + due // n))
            budget -= got
            spins = 0 if got else spins + 1
        sent += due - budget


# --- muc ---------------------------------------------------------------------------------------------
NS_MUC = b"http://jabber.org/protocol/muc"
INSTANT = (
    b"<iq type='set' id='cfg1' to='%s'><query xmlns='http://jabber.org/protocol/muc#owner'>"
    b"<x xmlns='jabber:x:data' type='submit'/></query></iq>"
)


async def join_room(c: XmppClient, room: str, nick: str, owner: bool) -> None:
    c.write(
        b"<presence to='%s/%s'><x xmlns='%s'><history maxstanzas='0'/></x></presence>"
        % (room.encode(), nick.encode(), NS_MUC)
    )
    got = await c.expect(b"code='110'", b'code="110"', b"type='error'", b'type="error"')
    if b"error" in got[-20:]:
        raise XmppError(f"join {room} failed: {got[-300:]!r} {bytes(c.buf[:300])!r}")
    got += await c.expect(b"</presence>")
    if owner and (b"'201'" in got or b'"201"' in got):
        c.write(INSTANT % room.encode())
        got = await c.expect(b"</iq>", b"/>")
        while b"cfg1" not in got:
            got = await c.expect(b"</iq>", b"/>")
        if b"error" in got:
            raise XmppError(f"room config failed: {got[-300:]!r}")


class Occupant:
    __slots__ = ("client", "head", "inflight", "received", "sent", "sent_at", "tail", "total")

    def __init__(self, client: XmppClient, index: int, room: str, total: int, size: int) -> None:
        self.client = client
        self.head = b"<message type='groupchat' to='%s'><body>%d." % (room.encode(), index)
        self.tail = b" " + pad(size) + b"</body></message>"
        self.total = total
        self.sent = 0
        self.received = 0
        self.inflight = 0
        self.sent_at = array.array("q", bytes(8 * total))

    def send(self, n: int) -> int:
        n = min(n, self.total - self.sent)
        if n <= 0:
            return 0
        t = now_ns()
        chunks = []
        for i in range(self.sent, self.sent + n):
            self.sent_at[i] = t
            chunks.append(self.head + str(i).encode() + self.tail)
        self.client.write(b"".join(chunks))
        self.sent += n
        self.inflight += n
        return n


async def run_muc(args: argparse.Namespace, part: int, nparts: int, barrier: Callable[[], Any]) -> Part:
    res = Part()
    rooms = list(range(part, args.rooms, nparts))
    K = args.occupants
    run_id = args.run_id or f"{os.getpid()}{int(time.time()) % 100000}"
    lat = res.latencies
    state = {"stop": False}
    remaining = [len(rooms) * K * K * args.messages]
    all_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    everyone: list[Occupant] = []
    scanners: list[StanzaScanner] = []
    for r in rooms:
        room = f"bench{run_id}r{r}@{args.muc_domain}"
        specs = [(user(args, r * K + j + 1), "muc") for j in range(K)]
        clients = await login_many(args, specs)
        await join_room(clients[0], room, "o0", owner=True)
        await asyncio.gather(*(join_room(c, room, f"o{j}", owner=False) for j, c in enumerate(clients) if j))
        occupants = [Occupant(c, j, room, args.messages, args.size) for j, c in enumerate(clients)]
        everyone += occupants
        for me in occupants:
            scanner = StanzaScanner()
            scanners.append(scanner)
            me.client.on_data = _muc_receiver(args, me, occupants, scanner, lat, state, remaining, all_done)
            me.client.buf.clear()
    await asyncio.sleep(1.0)  # join presences settle
    await barrier()
    res.started = now_ns()
    c0 = cpu_now()
    if remaining[0] <= 0:
        all_done.set_result(now_ns())
    for o in everyone:
        o.send(args.window)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(all_done), args.duration)
    state["stop"] = True
    res.ended = all_done.result() if all_done.done() else now_ns()
    res.cpu = cpu_now() - c0
    res.done = len(lat)
    res.sent = sum(o.sent for o in everyone)
    expected = res.sent * K
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and len(lat) < expected:
        await asyncio.sleep(0.05)
    res.lost = expected - len(lat)
    res.errors = sum(s.errors for s in scanners)
    res.extra["messages_sent"] = res.sent
    for o in everyone:
        o.client.close()
    return res


def _muc_receiver(
    args: argparse.Namespace,
    me: Occupant,
    room: list[Occupant],
    scanner: StanzaScanner,
    lat: array.array,
    state: dict[str, bool],
    remaining: list[int],
    all_done: asyncio.Future[int],
) -> Callable[[bytes], None]:
    def on_data(data: bytes) -> None:
        keys = scanner.feed(data)
        if not keys:
            return
        t = now_ns()
        mine = 0
        for k in keys:
            who, _, seq = k.partition(b".")
            sender = room[int(who)]
            lat.append(t - sender.sent_at[int(seq)])
            if sender is me:
                mine += 1
        remaining[0] -= len(keys)
        if mine:
            me.inflight -= mine
            if not state["stop"] and me.inflight <= args.refill:
                me.send(args.window - me.inflight)
        if remaining[0] <= 0 and not all_done.done():
            all_done.set_result(t)

    return on_data


# --- login -------------------------------------------------------------------------------------------
async def run_login(args: argparse.Namespace, part: int, nparts: int, barrier: Callable[[], Any]) -> Part:
    res = Part()
    loops = list(range(part, args.clients, nparts))
    ctx = None if args.no_tls else client_ssl_context()
    quota = [args.logins // nparts + (1 if part < args.logins % nparts else 0)]

    async def once(n: int) -> int:
        c = XmppClient(args.domain, user(args, n + 1), args.password, "login")
        t = now_ns()
        try:
            await c.login(args.host, args.port, ctx, presence=True)
            return now_ns() - t
        finally:
            c.close()

    # Warm-up: one login per account (the client caches the salted password as a real client would).
    await asyncio.gather(*(once(n) for n in loops))
    await barrier()
    res.started = now_ns()
    c0 = cpu_now()
    deadline = time.monotonic() + args.duration

    async def loop(n: int) -> None:
        while quota[0] > 0 and time.monotonic() < deadline:
            quota[0] -= 1
            try:
                res.latencies.append(await once(n))
                res.done += 1
            except (XmppError, OSError, TimeoutError) as exc:
                res.failed_logins += 1
                if res.failed_logins < 5:
                    log("login failed:", exc)

    await asyncio.gather(*(loop(n) for n in loops))
    res.ended = now_ns()
    res.cpu = cpu_now() - c0
    return res


# --- idle --------------------------------------------------------------------------------------------
async def run_idle(args: argparse.Namespace, part: int, nparts: int, barrier: Callable[[], Any]) -> Part:
    res = Part()
    mine = list(range(part, args.connections, nparts))
    ctx = None if args.no_tls else client_ssl_context()
    sem = asyncio.Semaphore(args.concurrency)
    clients: list[XmppClient] = []

    async def one(n: int) -> None:
        async with sem:
            c = XmppClient(args.domain, user(args, n + 1), args.password, "idle")
            try:
                await c.login(args.host, args.port, ctx, presence=True)
                clients.append(c)
                c.on_data = lambda data: None
            except (XmppError, OSError, TimeoutError) as exc:
                res.failed_logins += 1
                c.close()
                if res.failed_logins < 5:
                    log("idle login failed:", exc)

    res.started = now_ns()
    c0 = cpu_now()
    await asyncio.gather(*(one(n) for n in mine))
    res.ended = now_ns()
    res.cpu = cpu_now() - c0
    res.done = len(clients)
    await barrier()  # the parent measures the server while everything is held open
    res.lost = sum(1 for c in clients if c.lost)
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)
    return res


SCENARIOS = {"chat": run_chat, "archive": run_chat, "muc": run_muc, "login": run_login, "idle": run_idle}


# --- process orchestration -----------------------------------------------------------------------------
def child_main(args: argparse.Namespace, part: int, nparts: int, conn: Any) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def barrier() -> None:
        loop = asyncio.get_running_loop()
        conn.send(("ready", None))
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] != "go":
            raise SystemExit(0)

    async def main() -> Part:
        return await SCENARIOS[args.scenario](args, part, nparts, barrier)

    try:
        res = asyncio.run(main())
    except BaseException as exc:  # report, don't hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    payload = dict(res.__dict__)
    payload["latencies"] = res.latencies.tobytes()
    conn.send(("done", payload))


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    ctx = mp.get_context("fork")
    nparts = max(1, args.procs)
    pipes, procs = [], []
    rss_before = rss_kib(args.server_pid)
    for part in range(nparts):
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=child_main, args=(args, part, nparts, child_end), daemon=True)
        p.start()
        pipes.append(parent_end)
        procs.append(p)
    setup_deadline = time.monotonic() + args.setup_timeout
    failures: list[str] = []

    def gather(tag: str) -> list[Any]:
        out = []
        for conn in pipes:
            left = (
                max(0.1, setup_deadline - time.monotonic())
                if tag == "ready"
                else args.duration + args.drain + 60
            )
            if not conn.poll(left):
                failures.append(f"no '{tag}' from a generator process in time")
                out.append(None)
                continue
            msg = conn.recv()
            if msg[0] == "error":
                failures.append(msg[1])
                out.append(None)
            else:
                out.append(msg[1])
        return out

    result: dict[str, Any] = {"scenario": args.scenario, "server": args.label, "procs": nparts}
    gather("ready")
    if failures:
        for conn in pipes:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        result["error"] = "; ".join(failures[:3])
        return result
    if args.scenario == "idle":
        time.sleep(args.hold)
        result["server_rss_kib_before"] = rss_before
        result["server_rss_kib"] = rss_kib(args.server_pid)
    server_cpu0 = cpu_seconds(args.server_pid)
    wall0 = time.perf_counter()
    for conn in pipes:
        conn.send(("go",))
    parts = gather("done")
    server_cpu1 = cpu_seconds(args.server_pid)
    wall1 = time.perf_counter()
    for p in procs:
        p.join(10)
    if failures:
        result["error"] = "; ".join(failures[:3])
    parts = [p for p in parts if p]
    if not parts:
        return result
    started = min(p["started"] for p in parts)
    ended = max(p["ended"] for p in parts)
    elapsed = max(1e-9, (ended - started) / 1e9)
    lat = array.array("q")
    for p in parts:
        lat.frombytes(p["latencies"])
    lat_sorted = sorted(lat)
    done = sum(p["done"] for p in parts)
    gen_cpu = sum(p["cpu"] for p in parts)
    result.update(
        elapsed_s=round(elapsed, 3),
        loadgen_cpu_pct=round(100 * gen_cpu / elapsed, 1),
        errors=sum(p["errors"] for p in parts),
    )
    if args.server_pid:
        server_cpu = server_cpu1 - server_cpu0
        wall = wall1 - wall0
        if args.scenario != "idle":
            result["server_cpu_pct"] = round(100 * server_cpu / max(wall, 1e-9), 1)
    sc = args.scenario
    if sc in ("chat", "archive"):
        result.update(
            pairs=args.pairs,
            messages=args.messages,
            size=args.size,
            window=args.window,
            rate=args.rate,
            delivered=done,
            sent=sum(p["sent"] for p in parts),
            lost=sum(p["lost"] for p in parts),
            msgs_per_s=round(done / elapsed, 1),
            p50_ms=round(percentile(lat_sorted, 0.50), 3),
            p99_ms=round(percentile(lat_sorted, 0.99), 3),
            p999_ms=round(percentile(lat_sorted, 0.999), 3),
        )
        if args.server_pid and done:
            result["server_cpu_us_per_msg"] = round(1e6 * (server_cpu1 - server_cpu0) / done, 1)
    elif sc == "muc":
        result.update(
            rooms=args.rooms,
            occupants=args.occupants,
            messages=args.messages,
            size=args.size,
            window=args.window,
            delivered=done,
            sent=sum(p["extra"].get("messages_sent", 0) for p in parts),
            lost=sum(p["lost"] for p in parts),
            fanout_per_s=round(done / elapsed, 1),
            p50_ms=round(percentile(lat_sorted, 0.50), 3),
            p99_ms=round(percentile(lat_sorted, 0.99), 3),
            p999_ms=round(percentile(lat_sorted, 0.999), 3),
        )
        if args.server_pid and done:
            result["server_cpu_us_per_delivery"] = round(1e6 * (server_cpu1 - server_cpu0) / done, 1)
    elif sc == "login":
        result.update(
            clients=args.clients,
            logins=done,
            failed=sum(p["failed_logins"] for p in parts),
            logins_per_s=round(done / elapsed, 1),
            p50_ms=round(percentile(lat_sorted, 0.50), 3),
            p99_ms=round(percentile(lat_sorted, 0.99), 3),
        )
    elif sc == "idle":
        held = done - sum(p["lost"] for p in parts)
        result.update(
            connections=done,
            failed=sum(p["failed_logins"] for p in parts),
            dropped=sum(p["lost"] for p in parts),
            connect_per_s=round(done / elapsed, 1),
        )
        if args.server_pid and held:
            grown = result["server_rss_kib"] - result["server_rss_kib_before"]
            result["rss_kib_per_conn"] = round(grown / held, 2)
        result.pop("loadgen_cpu_pct", None)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--muc-domain", default="", help="default: groups.<domain>")
    p.add_argument("--user-format", default="u{}")
    p.add_argument("--password", default="bench-password")
    p.add_argument("--label", default="server", help="server name in the summary")
    p.add_argument("--server-pid", type=int, default=0)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--no-tls", action="store_true", help="skip STARTTLS (diagnostics: isolates TLS cost)")
    p.add_argument("--duration", type=float, default=30.0, help="measurement time limit (s)")
    p.add_argument(
        "--drain", type=float, default=3.0, help="grace for in-flight stanzas before counting lost"
    )
    p.add_argument("--setup-timeout", type=float, default=300.0)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--size", type=int, default=100, help="body bytes")
    p.add_argument("--window", type=int, default=10, help="messages in flight per sender")
    p.add_argument(
        "--refill",
        type=int,
        default=-1,
        help="top a sender up to --window once its in-flight count falls to this (default: window/2); "
        "fewer, larger writes keep the generator's own cost down",
    )
    p.add_argument("--rate", type=float, default=0, help="chat: open-loop total msgs/s (0: as fast as acked)")
    p.add_argument("--rooms", type=int, default=5)
    p.add_argument("--occupants", type=int, default=10)
    p.add_argument("--run-id", default="")
    p.add_argument("--clients", type=int, default=20, help="login: concurrent clients")
    p.add_argument("--logins", type=int, default=2000)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument(
        "--concurrency", type=int, default=100, help="idle: logins in progress at once per process"
    )
    p.add_argument("--hold", type=float, default=5.0, help="idle: seconds to hold before measuring RSS")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.muc_domain:
        args.muc_domain = f"groups.{args.domain}"
    if args.refill < 0:
        args.refill = args.window // 2
    result = run(args)
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
