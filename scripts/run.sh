#!/usr/bin/env bash
# Set up and run the server on embedded defaults: SQLite under var/, a self-signed certificate for
# localhost, client connections on 127.0.0.1:5222 (STARTTLS) and :5223 (direct TLS), HTTP on :5280.
# Creates the demo accounts alice@localhost and bob@localhost with random passwords on the first run
# (printed, and kept in var/demo-accounts.txt, readable by you only).
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
  umask 077
  : > var/demo-accounts.txt
  for user in alice bob; do
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    echo "$password" | .venv/bin/mbeon-chat user add "$user" --password-stdin
    echo "$user@localhost $password" >> var/demo-accounts.txt
  done
  echo "demo accounts (also in var/demo-accounts.txt):"
  cat var/demo-accounts.txt
fi
exec .venv/bin/mbeon-chat serve
