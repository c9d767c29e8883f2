#!/usr/bin/env python3
"""Run every benchmark scenario against mbeon-chat, Prosody and ejabberd in one run; print a table.

    scripts/bench/peers.sh                      # everything: install peers, provision, run, table
    scripts/bench/peers.sh --quick              # smaller counts, 1 repetition (a smoke run)
    scripts/bench/peers.sh --servers mbeon --scenarios chat,muc --reps 3

What it does, in order:
1. installs Debian's ``prosody`` and ``ejabberd`` if missing (``apt-cache policy`` first; services are kept
   from starting on install), generates one self-signed EC certificate that all three servers use;
2. provisions the same accounts (``u1``..``uN``, one password, SCRAM-SHA-1 with 4096 iterations) on each:
   mbeon-chat through ``mbeon-chat user add`` plus the Accounts API in bulk, Prosody through ``prosodyctl
   register`` plus its account files in bulk, ejabberd through ``ejabberdctl register`` plus its HTTP API;
3. for every scenario and repetition, and for each server in turn, starts a fresh server process pinned to
   core 1 (``taskset -c 1``), runs the load generator pinned to core 0, stops the server;
4. prints medians side by side with ratios to Prosody, and writes ``results.jsonl`` and ``table.md``
   into the work directory.

Configs live in ``scripts/bench/peers/``. Everything started is stopped on exit (also on Ctrl-C). The
machine may be shared: the run puts itself in its own scheduler autogroup with a high priority (``--nice``)
so that other work on the machine disturbs the measurement less; it does not touch other processes.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS = HERE / "peers"
PYTHON = sys.executable
PASSWORD = "bench-password"
DOMAIN = "localhost"
SERVER_CPU = "1"
LOADGEN_CPU = "0"

STARTED: list[subprocess.Popen[bytes]] = []
#: peers.sh's EXIT trap stops the process groups listed here if this process dies without cleaning up.
PIDFILE = os.environ.get("MBEON_BENCH_PIDFILE", "")


def _record_pids() -> None:
    if PIDFILE:
        Path(PIDFILE).write_text("".join(f"{p.pid}\n" for p in STARTED if p.poll() is None))


def say(*parts: Any) -> None:
    print("[compare]", *parts, file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)


# --- lifecycle of what we start ----------------------------------------------------------------------------
def stop_process(p: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def stop_all() -> None:
    while STARTED:
        stop_process(STARTED.pop())
    _record_pids()


def spawn(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    STARTED.append(p)
    _record_pids()
    return p


def boost(pid: int, nice: int) -> None:
    """Give a process's scheduler autogroup (its session) a priority: see the module docstring."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def wait_port(port: int, timeout: float = 90.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def fill(template: Path, dest: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    dest.write_text(text)


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# --- the servers ------------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    port: int
    work: Path
    opts: argparse.Namespace
    proc: subprocess.Popen[bytes] | None = None
    provisioned: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def supports(self, scenario: str) -> bool:
        return True

    def prepare(self, users: int) -> None: ...

    def start(self, archive: bool = False) -> None: ...

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            with contextlib.suppress(ValueError):
                STARTED.remove(self.proc)
            _record_pids()
            self.proc = None
            # a VM may still be shutting down after its launcher exited: the next start needs the port
            deadline = time.monotonic() + 30
            while not port_free(self.port) and time.monotonic() < deadline:
                time.sleep(0.2)

    def _provisioned_marker(self) -> Path:
        return self.work / "provisioned"

    def _have(self) -> int:
        try:
            return int(self._provisioned_marker().read_text())
        except (OSError, ValueError):
            return 0


class Mbeon(Server):
    workers = 1
    cpus = SERVER_CPU

    def config(self, archive: bool) -> Path:
        path = self.work / (f"{self.name}-archive.toml" if archive else f"{self.name}.toml")
        fill(
            PEERS / "mbeon.toml",
            path,
            {
                "DATA_DIR": str(self.work / "var"),
                "PORT": str(self.port),
                "HTTP_PORT": str(self.port + 58),
                "WORKERS": str(self.workers),
                "CERT": str(self.opts.cert),
                "KEY": str(self.opts.key),
            },
        )
        text = path.read_text()
        if self.workers <= 1 or not mbeon_has_workers():
            text = "\n".join(line for line in text.splitlines() if not line.startswith("workers ="))
        if archive:
            text = text.replace('"muc"]', '"muc", "mam"]')
            if self.opts.archive_db:  # accounts for the chat pairs are provisioned there by prepare()
                text = text.replace("[tls]", f'[storage]\nurl = ["{self.opts.archive_db}"]\n\n[tls]')
        path.write_text(text + "\n")
        return path

    def cli(self, config: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run([str(REPO / ".venv/bin/mbeon-chat"), "-c", str(config), *args], **kw)

    def supports(self, scenario: str) -> bool:
        if scenario == "archive":
            return mbeon_has_mam()
        if scenario == "muc":
            return importlib.util.find_spec("mbeon_chat.features.muc") is not None
        return True

    def prepare(self, users: int) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.config(False)
        if self.opts.archive_db and mbeon_has_mam():
            archive = self.config(True)
            self.cli(archive, "migrate", capture_output=True)
            run([PYTHON, str(HERE / "provision.py"), "mbeon", str(archive), "60", PASSWORD, "1"])
        self.cli(config, "migrate", capture_output=True)  # always: the schema moves on between runs
        if self._have() >= users:
            return
        if self._have() == 0:
            self.cli(
                config, "user", "add", "u1", "--password-stdin", input=PASSWORD + "\n", capture_output=True
            )
        say(f"mbeon: provisioning {users} accounts")
        run([PYTHON, str(HERE / "provision.py"), "mbeon", str(config), str(users), PASSWORD, "2"])
        self._provisioned_marker().write_text(str(users))

    def start(self, archive: bool = False) -> None:
        config = self.config(archive)
        cmd = ["taskset", "-c", self.cpus, str(REPO / ".venv/bin/mbeon-chat"), "-c", str(config), "serve"]
        self.proc = spawn(cmd, self.work / "server.log")
        boost(self.proc.pid, self.opts.nice)
        wait_port(self.port, proc=self.proc)
        if self.workers > 1:
            time.sleep(1.0)  # every worker listening, the bus connected


class MbeonWorkers(Mbeon):
    """mbeon-chat with server.workers = 2 on both cores (the generator shares core 0 with one of them):
    not a like-for-like row, it shows what the second core adds. Same data directory and accounts."""

    workers = 2
    cpus = f"{LOADGEN_CPU},{SERVER_CPU}"

    def prepare(self, users: int) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.cli(self.config(False), "migrate", capture_output=True)


class Prosody(Server):
    def config(self, archive: bool) -> Path:
        path = self.work / "prosody.cfg.lua"
        fill(
            PEERS / "prosody.cfg.lua",
            path,
            {
                "DATA_DIR": str(self.work),
                "PORT": str(self.port),
                "CERT": str(self.opts.cert),
                "KEY": str(self.opts.key),
                "EXTRA_MODULES": '"mam";' if archive else "",
            },
        )
        return path

    def prepare(self, users: int) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.config(False)
        if self._have() >= users:
            return
        if self._have() == 0:
            run(
                ["prosodyctl", "--config", str(config), "register", "u1", DOMAIN, PASSWORD],
                capture_output=True,
            )
        say(f"prosody: provisioning {users} accounts")
        run(
            [
                PYTHON,
                str(HERE / "provision.py"),
                "prosody",
                str(self.work / "data"),
                DOMAIN,
                str(users),
                PASSWORD,
                "4096",
                "2",
            ]
        )
        self._provisioned_marker().write_text(str(users))

    def start(self, archive: bool = False) -> None:
        config = self.config(archive)
        cmd = ["taskset", "-c", SERVER_CPU, "prosody", "-F", "--config", str(config)]
        self.proc = spawn(cmd, self.work / "stdout.log")
        boost(self.proc.pid, self.opts.nice)
        wait_port(self.port, proc=self.proc)


class Ejabberd(Server):
    node = "mbeonbench@localhost"

    def _dirs(self) -> tuple[Path, Path, Path]:
        return self.work / "etc", self.work / "spool", self.work / "logs"

    def config(self, archive: bool) -> None:
        etc, spool, logs = self._dirs()
        for d in (etc, spool, logs):
            d.mkdir(parents=True, exist_ok=True)
        extra = ""
        if archive:
            extra = "  mod_mam:\n    default: always\n    db_type: mnesia\n    assume_mam_usage: true\n"
        fill(
            PEERS / "ejabberd.yml",
            etc / "ejabberd.yml",
            {
                "PORT": str(self.port),
                "HTTP_PORT": str(self.port + 58),
                "CERTFILE": str(self.opts.combined),
                "EXTRA_MODULES": extra,
            },
        )
        shutil.copy("/etc/ejabberd/inetrc", etc / "inetrc")
        # One scheduler: the VM is pinned to one core like the others.
        (etc / "ejabberdctl.cfg").write_text(
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 +S 1:1"\n'
            "EJABBERD_BYPASS_WARNINGS=true\nERL_MAX_PORTS=65536\n"
        )
        run(["chown", "-R", "ejabberd:ejabberd", str(self.work)])

    def ctl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        etc, spool, logs = self._dirs()
        return run(
            [
                "ejabberdctl",
                "--config-dir",
                str(etc),
                "--logs",
                str(logs),
                "--spool",
                str(spool),
                "--node",
                self.node,
                *args,
            ],
            **kw,
        )

    def prepare(self, users: int) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        if self._have() >= users:
            return
        self.start()
        try:
            if self._have() == 0:
                self.ctl("register", "u1", DOMAIN, PASSWORD, capture_output=True)
            say(f"ejabberd: provisioning {users} accounts over its HTTP API")
            register_ejabberd(self.port + 58, users, 2)
            self._provisioned_marker().write_text(str(users))
        finally:
            self.stop()

    def start(self, archive: bool = False) -> None:
        self.config(archive)
        etc, spool, logs = self._dirs()
        # As the ejabberd user without su: su's PAM session would cut the open files limit to 1024, and
        # the VM stops accepting connections at that. The soft limit is raised to the hard one first.
        cmd = [
            "taskset",
            "-c",
            SERVER_CPU,
            "setpriv",
            "--reuid=ejabberd",
            "--regid=ejabberd",
            "--init-groups",
            "--",
            "sh",
            "-c",
            'ulimit -n "$(ulimit -Hn)"; exec "$@"',
            "sh",
            "ejabberdctl",
            "--config-dir",
            str(etc),
            "--logs",
            str(logs),
            "--spool",
            str(spool),
            "--node",
            self.node,
            "foreground",
        ]
        env = {**os.environ, "HOME": "/var/lib/ejabberd"}  # the Erlang cookie
        self.proc = spawn(cmd, self.work / "stdout.log", env=env, cwd=spool)
        wait_port(self.port, proc=self.proc)
        wait_port(self.port + 58, proc=self.proc)
        for pid in proc_tree(self.proc.pid):
            boost(pid, self.opts.nice)
        time.sleep(1.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self.ctl("stop", capture_output=True, timeout=30)
        super().stop()


def register_ejabberd(http_port: int, users: int, start: int) -> None:
    import asyncio

    import aiohttp

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            sem = asyncio.Semaphore(8)

            async def reg(n: int) -> None:
                body = {"user": f"u{n}", "host": DOMAIN, "password": PASSWORD}
                async with sem, s.post(f"http://127.0.0.1:{http_port}/api/register", json=body) as r:
                    text = await r.text()
                    if r.status != 200 and "already" not in text:
                        raise RuntimeError(f"ejabberd register u{n}: {r.status} {text}")

            await asyncio.gather(*(reg(n) for n in range(start, users + 1)))

    asyncio.run(main())


def proc_tree(pid: int) -> list[int]:
    sys.path.insert(0, str(HERE))
    from loadgen import proc_tree as tree

    return tree(pid)


def mbeon_has_mam() -> bool:
    return importlib.util.find_spec("mbeon_chat.features.mam") is not None


def mbeon_has_workers() -> bool:
    text = (REPO / "src/mbeon_chat/config.py").read_text()
    return "workers:" in text


# --- scenarios ----------------------------------------------------------------------------------------------
def scenario_args(name: str, opts: argparse.Namespace, prosody_chat_rate: float | None) -> list[str] | None:
    q = opts.quick
    if name == "login":
        return ["login", "--clients", "20", "--logins", "300" if q else "1500", "--duration", "30"]
    if name == "chat":
        return [
            "chat",
            "--pairs",
            "20",
            "--messages",
            "300" if q else "2500",
            "--size",
            "100",
            "--window",
            "10",
            "--duration",
            "30",
        ]
    if name == "chat-half":
        if not prosody_chat_rate:
            return None
        rate = prosody_chat_rate / 2
        per_direction = max(50, int(rate * (3 if q else 10) / 40))
        return [
            "chat",
            "--pairs",
            "20",
            "--messages",
            str(per_direction),
            "--size",
            "100",
            "--window",
            "1000",
            "--rate",
            f"{rate:.0f}",
            "--duration",
            "40",
        ]
    if name == "muc":
        return [
            "muc",
            "--rooms",
            "10",
            "--occupants",
            "20",
            "--messages",
            "10" if q else "40",
            "--size",
            "100",
            "--window",
            "5",
            "--duration",
            "40",
        ]
    if name == "idle":
        return ["idle", "--connections", str(opts.idle), "--hold", "5", "--concurrency", "50"]
    if name == "archive":
        return [
            "archive",
            "--pairs",
            "20",
            "--messages",
            "200" if q else "1000",
            "--size",
            "100",
            "--window",
            "10",
            "--duration",
            "30",
        ]
    raise ValueError(name)


def run_loadgen(server: Server, argv: list[str], opts: argparse.Namespace, label: str) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        LOADGEN_CPU,
        PYTHON,
        str(HERE / "loadgen.py"),
        *argv,
        "--port",
        str(server.port),
        "--domain",
        DOMAIN,
        "--password",
        PASSWORD,
        "--label",
        label,
        "--server-pid",
        str(server.pid),
        "--procs",
        str(opts.procs),
    ]
    timeout = 600
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"load generator timed out after {timeout}s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"no summary (exit {out.returncode}): {out.stderr[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


METRICS: dict[str, list[tuple[str, str, bool]]] = {
    # scenario -> (key, label, higher is better)
    "login": [("logins_per_s", "logins/s", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False)],
    "chat": [
        ("msgs_per_s", "delivered msgs/s", True),
        ("p50_ms", "p50 ms", False),
        ("p99_ms", "p99 ms", False),
        ("p999_ms", "p99.9 ms", False),
        ("lost", "lost", False),
        ("server_cpu_us_per_msg", "server CPU us/msg", False),
        ("loadgen_cpu_pct", "generator CPU %", False),
    ],
    "chat-half": [
        ("msgs_per_s", "msgs/s (paced)", True),
        ("p50_ms", "p50 ms", False),
        ("p99_ms", "p99 ms", False),
        ("p999_ms", "p99.9 ms", False),
        ("lost", "lost", False),
    ],
    "muc": [
        ("fanout_per_s", "fan-out stanzas/s", True),
        ("p50_ms", "p50 ms", False),
        ("p99_ms", "p99 ms", False),
        ("lost", "lost", False),
        ("server_cpu_us_per_delivery", "server CPU us/delivery", False),
        ("loadgen_cpu_pct", "generator CPU %", False),
    ],
    "idle": [("rss_kib_per_conn", "RSS KiB/connection", False), ("connections", "connections held", True)],
    "archive": [
        ("msgs_per_s", "archived msgs/s", True),
        ("p99_ms", "p99 ms", False),
        ("lost", "lost", False),
    ],
}


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def table(
    results: list[dict[str, Any]], servers: list[str], scenarios: list[str], pending: dict[str, str]
) -> str:
    head = ["scenario", "metric", *servers] + [
        f"{s}/prosody" for s in servers if s != "prosody" and "prosody" in servers
    ]
    rows = [head]
    for sc in scenarios:
        for key, label, _higher in METRICS.get(sc, []):
            meds: dict[str, float | None] = {}
            for s in servers:
                vals = [
                    r[key]
                    for r in results
                    if r.get("server") == s and r.get("bench") == sc and key in r and "error" not in r
                ]
                meds[s] = median(vals)
            row = [sc, label]
            for s in servers:
                row.append(pending.get(f"{s}:{sc}", fmt(meds[s])) if meds[s] is None else fmt(meds[s]))
            base = meds.get("prosody")
            for s in servers:
                if s == "prosody" or "prosody" not in servers:
                    continue
                v = meds[s]
                row.append(f"{v / base:.2f}x" if v is not None and base else "-")
            rows.append(row)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------------------
def install_peers(names: list[str]) -> None:
    wanted = [p for p in ("prosody", "ejabberd") if p in names]
    missing = []
    for pkg in wanted:
        policy = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
        installed = next(
            (line.split(":", 1)[1].strip() for line in policy.splitlines() if "Installed:" in line), ""
        )
        if not installed or installed == "(none)":
            missing.append(pkg)
    if not missing:
        return
    say("installing", *missing)
    run(["apt-get", "update", "-qq"])
    policy_rc = Path("/usr/sbin/policy-rc.d")
    created = not policy_rc.exists()
    if created:  # keep the packages' own services from starting on the default ports
        policy_rc.write_text("#!/bin/sh\nexit 101\n")
        policy_rc.chmod(0o755)
    try:
        run(
            ["apt-get", "install", "-y", "-q", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    finally:
        if created:
            policy_rc.unlink()


def make_certs(work: Path) -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(REPO / "src"))
    from mbeon_chat.transport.tls import ensure_self_signed

    certs = work / "certs"
    cert, key = ensure_self_signed(certs, DOMAIN)
    combined = certs / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    for p in (work, certs):
        p.chmod(0o755)
    for p in (cert, key, combined):
        p.chmod(0o644)  # ejabberd reads it as its own user; a throwaway benchmark key
    return cert, key, combined


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import ssl

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "prosody": version_of(["dpkg-query", "-W", "-f=${Version}", "prosody"]),
        "ejabberd": version_of(["dpkg-query", "-W", "-f=${Version}", "ejabberd"]),
        "erlang": version_of(["dpkg-query", "-W", "-f=${Version}", "erlang-base"]),
        "lua": version_of(["lua5.4", "-v"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="mbeon,prosody,ejabberd")
    p.add_argument("--scenarios", default="login,chat,chat-half,muc,idle,archive")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small counts and one repetition")
    p.add_argument("--idle", type=int, default=5000, help="connections held in the idle scenario")
    p.add_argument("--procs", type=int, default=2, help="load generator processes (all on core 0)")
    p.add_argument(
        "--archive-db",
        default="",
        help="mbeon-chat storage URL for the archive scenario (default: its SQLite database), e.g. "
        "mysql+aiomysql://root@127.0.0.1/mbeon_bench (create the database first)",
    )
    p.add_argument("--nice", type=int, default=-19, help="autogroup nice for the run (0: leave as is)")
    p.add_argument("--workdir", default="/tmp/mbeon-bench", help="kept between runs (accounts are reused)")
    p.add_argument("--no-install", action="store_true")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="print the table from the work directory's results.jsonl (every run recorded there) and exit",
    )
    opts = p.parse_args(argv)
    if opts.quick:
        opts.reps = 1
        opts.idle = min(opts.idle, 1000)
    servers = [s for s in opts.servers.split(",") if s]
    scenarios = [s for s in opts.scenarios.split(",") if s]
    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if opts.table_only:
        recorded = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line]
        reps = max((r.get("rep", 0) for r in recorded), default=0) + 1
        print(f"Medians of up to {reps} run(s) recorded in {work / 'results.jsonl'}\n")
        print(table(recorded, servers, scenarios, {}))
        return 0

    atexit.register(stop_all)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    if opts.nice:
        boost(os.getpid(), opts.nice)
    if os.cpu_count() and os.cpu_count() < 2:
        say("warning: fewer than 2 cores; server and generator share one")

    if not opts.no_install:
        install_peers(servers)
    opts.cert, opts.key, opts.combined = make_certs(work)
    users = max(opts.idle, 20 * 10, 2 * 20, 20) + 10
    opts.users = users
    ports = {"mbeon": 15222, "mbeon-2w": 16222, "prosody": 25222, "ejabberd": 35222}
    classes = {"mbeon": Mbeon, "mbeon-2w": MbeonWorkers, "prosody": Prosody, "ejabberd": Ejabberd}
    instances: dict[str, Server] = {}
    for name in servers:
        for port in (ports[name], ports[name] + 58):
            if not port_free(port):
                raise SystemExit(f"port {port} (for {name}) is taken: stop what listens there first")
        folder = work / ("mbeon" if name.startswith("mbeon") else name)  # the mbeon rows share accounts
        instances[name] = classes[name](name, ports[name], folder, opts)
    info = machine_info()
    say("machine:", json.dumps(info))
    for s in instances.values():
        s.prepare(users)

    results_path = work / "results.jsonl"
    results: list[dict[str, Any]] = []
    pending: dict[str, str] = {}
    prosody_chat_rate: float | None = None
    run_id = int(time.time())
    for sc in scenarios:
        if sc == "chat-half" and "prosody" in servers:
            rates = [
                r["msgs_per_s"]
                for r in results
                if r.get("bench") == "chat" and r.get("server") == "prosody" and "msgs_per_s" in r
            ]
            prosody_chat_rate = median(rates)
        argv_sc = scenario_args(sc, opts, prosody_chat_rate)
        if argv_sc is None:
            say(f"{sc}: skipped (needs the Prosody chat figure first)")
            continue
        for rep in range(opts.reps):
            for name, server in instances.items():
                if not server.supports(sc):
                    pending[f"{name}:{sc}"] = "pending"
                    continue
                extra = ["--run-id", f"{run_id}{rep}"] if sc == "muc" else []
                try:
                    server.start(archive=(sc == "archive"))
                    time.sleep(1.0)
                    result = run_loadgen(server, argv_sc + extra, opts, name)
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    server.stop()
                result.update(
                    bench=sc, rep=rep, server=name, load=Path("/proc/loadavg").read_text().split()[0]
                )
                results.append(result)
                with results_path.open("a") as fh:
                    fh.write(json.dumps(result) + "\n")
                say(
                    sc,
                    rep,
                    name,
                    json.dumps(
                        {
                            k: v
                            for k, v in result.items()
                            if k
                            in dict.fromkeys(
                                [m[0] for m in METRICS.get(sc, [])]
                                + ["error", "server_cpu_pct", "loadgen_cpu_pct"]
                            )
                        }
                    ),
                )
    text = table(results, servers, scenarios, pending)
    header = (
        f"Medians of {opts.reps} run(s); each server on core {SERVER_CPU}, the generator "
        f"({opts.procs} processes) on core {LOADGEN_CPU}; TLS on, SCRAM-SHA-1, 4096 iterations.\n"
        f"machine: {info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, Python {info['python']}, "
        f"{info['openssl']}; prosody {info['prosody']}, ejabberd {info['ejabberd']} "
        f"(Erlang {info['erlang']})\n"
    )
    (work / "table.md").write_text(header + "\n" + text + "\n")
    print(header)
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
