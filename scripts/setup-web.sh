#!/usr/bin/env bash
# Install what the counsellor web client (/chat/) and its browser test need:
#   - converse.js and playwright-core from the npm registry: `npm ci` in web/ (exact versions from
#     web/package-lock.json); the server serves converse.js from web/node_modules, never from a CDN;
#   - Debian's chromium, for the browser test only (skip with --no-browser). No browser is ever downloaded
#     through npm or playwright: the test drives /usr/bin/chromium.
#
# Usage: scripts/setup-web.sh [--no-browser] [--force]
#   --no-browser  only the npm packages (enough to serve /chat/)
#   --force       run npm ci even when web/node_modules matches web/package-lock.json
set -euo pipefail
cd "$(dirname "$0")/.."

browser=1
force=0
for arg in "$@"; do
    case "$arg" in
        --no-browser) browser=0 ;;
        --force) force=1 ;;
        -h | --help)
            sed -n '2,12p' "$0"
            exit 0
            ;;
        *)
            echo "unknown option: $arg" >&2
            exit 2
            ;;
    esac
done

if ! command -v npm >/dev/null 2>&1; then
    echo "setup-web: npm is needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

stamp=web/node_modules/.package-lock.json
if [[ $force == 0 && -f $stamp && $stamp -nt web/package-lock.json \
    && -f web/node_modules/converse.js/dist/converse.min.js && -d web/node_modules/playwright-core ]]; then
    echo "setup-web: web/node_modules is up to date"
else
    echo "setup-web: npm ci in web/"
    (cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ $browser == 1 ]]; then
    if [[ -x /usr/bin/chromium ]]; then
        echo "setup-web: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) is installed"
    elif [[ $(id -u) == 0 ]]; then
        echo "setup-web: apt-get install chromium"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup-web: the browser test needs Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
echo "setup-web: done. Start the server and open http://127.0.0.1:5280/chat/"
