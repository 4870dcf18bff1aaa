#!/usr/bin/env bash
# The browser tests of the web UI (tests/ui): the Tailspin journey played by clicks in Chromium against
# the real `milink up` and the dev PostgreSQL clusters. Screenshots land in target/ui-screenshots.
#
# What it installs when missing: Debian's chromium (apt-get, as root) and the pinned @playwright/test in
# tests/ui (npm ci). No browser is downloaded by npm: the tests drive /usr/bin/chromium (or MILINK_CHROMIUM).
# Node.js is needed for these tests only; milink itself builds and runs without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'ui-test.sh: %s\n' "$*"; }

CHROMIUM=${MILINK_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq chromium >/dev/null
    else
        say "chromium not found at $CHROMIUM: install it (sudo apt-get install -y chromium) or set MILINK_CHROMIUM"
        exit 1
    fi
fi
command -v npm >/dev/null 2>&1 || { say "npm not found: install Node.js 18+ (sudo apt-get install -y nodejs npm)"; exit 1; }

bash dev/pg.sh up
cargo build --locked -p milink
(cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
export MILINK_CHROMIUM=$CHROMIUM
export MILINK_BIN=${MILINK_BIN:-$PWD/target/debug/milink}
(cd tests/ui && npx playwright test "$@")
say "screenshots: target/ui-screenshots/"
