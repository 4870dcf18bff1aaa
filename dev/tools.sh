#!/usr/bin/env bash
# Optional tools the benchmarks compare milink with.
#   dev/tools.sh pgcopydb   install pgcopydb (Debian/Ubuntu package) if missing; pg_seed uses it when present
set -euo pipefail
say() { echo "tools.sh: $*" >&2; }
case "${1:-}" in
    pgcopydb)
        if command -v pgcopydb >/dev/null 2>&1; then
            exit 0
        fi
        command -v apt-get >/dev/null 2>&1 || { say "apt-get not found: install pgcopydb from https://github.com/dimitri/pgcopydb"; exit 1; }
        sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        say "installing pgcopydb"
        $sudo apt-get install -y -q pgcopydb >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q pgcopydb >/dev/null; }
        ;;
    *)
        echo "usage: dev/tools.sh pgcopydb" >&2
        exit 2
        ;;
esac
