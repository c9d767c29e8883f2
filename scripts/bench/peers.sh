#!/usr/bin/env bash
# Benchmark mbeon-chat against Prosody and ejabberd on this machine and print the comparison table.
#   scripts/bench/peers.sh [--quick] [--servers mbeon,prosody,ejabberd] [--scenarios login,chat,...] [--reps 3]
# Needs root (apt-get, taskset, ejabberd's own user). See scripts/bench/compare.py for what it does.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export MBEON_BENCH_PIDFILE
MBEON_BENCH_PIDFILE="$(mktemp /tmp/mbeon-bench-pids.XXXXXX)"
# compare.py stops every server it starts; this trap is the safety net if it dies without doing so:
# it stops the process groups compare.py recorded (each server runs in a group of its own).
cleanup() {
    while read -r pgid; do
        [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null
    done < "$MBEON_BENCH_PIDFILE"
    rm -f "$MBEON_BENCH_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A session of its own: its scheduler autogroup gets the run's priority, nothing else's.
setsid --wait "$PY" scripts/bench/compare.py "$@"
