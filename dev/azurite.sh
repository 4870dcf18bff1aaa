#!/usr/bin/env bash
# Azurite (the Azure Storage emulator) for milink's development and tests: Table Storage state, and the
# blob/queue endpoints a local Functions host needs for AzureWebJobsStorage.
#
#   dev/azurite.sh up       install the pinned azurite from npm if missing, start it on 127.0.0.1; idempotent
#   dev/azurite.sh env      print the exports tests and the Functions app use (connection string, table URL)
#   dev/azurite.sh down     stop it
#   dev/azurite.sh status   one line
#
# Settings: MILINK_AZURITE_DIR (default /tmp/milink-azurite: pid, log), MILINK_AZURITE_TABLE_PORT (10002),
# MILINK_AZURITE_BLOB_PORT (10000), MILINK_AZURITE_QUEUE_PORT (10001).
#
# Why it is shaped so: the version is pinned (3.35.0, the newest that runs on Node 20; 3.36+ need Node 21+)
# and installed into the project's .dev/ directory, so every run tests against the same emulator and nothing
# global is touched. Data is in memory: tests make their own uniquely named tables, and a restart starts
# clean. Tests in parallel processes may all call `up` at once, so every command takes a lock and checks
# before it acts. Azurite does not reject an entity-group batch that spans partitions (Azurite #1215);
# milink enforces that rule itself, and its tests do not rely on the emulator for it.
set -euo pipefail

VERSION=3.35.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
INSTALL=$ROOT/.dev/azurite-$VERSION
DIR=${MILINK_AZURITE_DIR:-/tmp/milink-azurite}
TABLE_PORT=${MILINK_AZURITE_TABLE_PORT:-10002}
BLOB_PORT=${MILINK_AZURITE_BLOB_PORT:-10000}
QUEUE_PORT=${MILINK_AZURITE_QUEUE_PORT:-10001}
ACCOUNT=devstoreaccount1
# The emulator's well-known key, published in Microsoft's docs; it protects nothing.
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

say() { printf 'azurite.sh: %s\n' "$*"; }
die() { printf 'azurite.sh: %s\n' "$*" >&2; exit 1; }

lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
}

install() {
    [[ -x $INSTALL/node_modules/.bin/azurite ]] && return 0
    command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 18+ (e.g. apt-get install -y nodejs npm)"
    say "installing azurite@$VERSION into $INSTALL"
    mkdir -p "$INSTALL"
    (cd "$INSTALL" && npm install --no-audit --no-fund --loglevel=error --prefix "$INSTALL" "azurite@$VERSION" >/dev/null) \
        || die "npm install azurite@$VERSION failed"
}

running() {
    [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

# True once the table endpoint answers HTTP at all (any status).
answering() {
    (exec 3<>"/dev/tcp/127.0.0.1/$TABLE_PORT") 2>/dev/null
}

start() {
    if running; then return 0; fi
    mkdir -p "$DIR"
    # setsid: azurite outlives the shell that started it (tests call `up` from short-lived processes);
    # 9>&-: it must not inherit the lock, or every later `up` would wait for it forever.
    setsid "$INSTALL/node_modules/.bin/azurite" \
        --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" \
        --queueHost 127.0.0.1 --queuePort "$QUEUE_PORT" \
        --tableHost 127.0.0.1 --tablePort "$TABLE_PORT" \
        --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent \
        </dev/null >"$DIR/azurite.log" 2>&1 9>&- &
    echo $! >"$DIR/pid"
    for _ in $(seq 1 150); do
        if answering; then say "started azurite $VERSION (table 127.0.0.1:$TABLE_PORT)"; return 0; fi
        running || { tail -n 20 "$DIR/azurite.log" >&2; die "azurite exited at start; see $DIR/azurite.log"; }
        sleep 0.2
    done
    die "azurite did not answer on 127.0.0.1:$TABLE_PORT within 30 s; see $DIR/azurite.log"
}

print_env() {
    echo "export MILINK_AZURITE_TABLE_URL=http://127.0.0.1:$TABLE_PORT/$ACCOUNT"
    echo "export MILINK_AZURITE_ACCOUNT=$ACCOUNT"
    echo "export MILINK_AZURITE_KEY='$KEY'"
    echo "export AzureWebJobsStorage='DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$BLOB_PORT/$ACCOUNT;QueueEndpoint=http://127.0.0.1:$QUEUE_PORT/$ACCOUNT;TableEndpoint=http://127.0.0.1:$TABLE_PORT/$ACCOUNT;'"
}

cmd=${1:-up}
case $cmd in
    up)
        lock; install; start
        ;;
    env)
        print_env
        ;;
    down)
        lock
        if running; then kill "$(cat "$DIR/pid")"; rm -f "$DIR/pid"; say "stopped azurite"; fi
        ;;
    status)
        if running; then say "running (pid $(cat "$DIR/pid"), table 127.0.0.1:$TABLE_PORT)"; else say "stopped"; fi
        ;;
    *)
        die "usage: dev/azurite.sh up|env|down|status"
        ;;
esac
