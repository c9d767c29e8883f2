#!/usr/bin/env bash
# Set up and run the server on embedded defaults: SQLite under var/, a self-signed certificate for
# localhost, client connections on 127.0.0.1:5222 (STARTTLS) and :5223 (direct TLS), HTTP on :5280.
# Creates the demo accounts alice@localhost and bob@localhost (password: change-me-now) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
if [ -x scripts/setup-web.sh ]; then
  scripts/setup-web.sh --no-browser || echo "web client not installed: /chat/ will say how to install it" >&2
fi
.venv/bin/mbeon-chat migrate
if ! .venv/bin/mbeon-chat user list | grep -q '^alice@'; then
  for user in alice bob; do
    echo "change-me-now" | .venv/bin/mbeon-chat user add "$user" --password-stdin
  done
fi
exec .venv/bin/mbeon-chat serve
