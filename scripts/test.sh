#!/usr/bin/env bash
# Set up everything the tests need (Python venv, web client, browser) and run the whole test suite.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing mbeon-chat with test dependencies"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"

if [ -x scripts/setup-web.sh ]; then
  echo "== setting up the web client and the browser test"
  if ! scripts/setup-web.sh; then
    if [ "${CI:-}" = "true" ]; then
      echo "setup-web failed (required in CI)" >&2
      exit 1
    fi
    echo "setup-web failed: the browser test will be skipped (run scripts/setup-web.sh to see why)" >&2
  fi
fi

echo "== running the tests"
exec .venv/bin/python -m pytest -q "$@"
