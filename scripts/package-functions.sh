#!/usr/bin/env bash
# Builds the custom handler for Linux x86_64 and lays out the Function App, ready for zip deploy:
#
#   dist/functions/              host.json, one folder per function (function.json), the `milink` binary,
#                                and milink.toml when --config is given
#   dist/milink-functions.zip    the same files at the zip's root (what `az functionapp deployment source
#                                config-zip` and WEBSITE_RUN_FROM_PACKAGE take)
#
# Usage: scripts/package-functions.sh [--config milink.toml] [--out dist] [--glibc 2.28]
#                                     [--target x86_64-unknown-linux-musl] [--binary path/to/milink]
#
# --binary packs (and checks) a binary built elsewhere instead of building one.
#
# The binary is named `milink`, as host.json's customHandler.description.defaultExecutablePath says, and
# runs as `milink functions`.
#
# glibc: a binary linked on this machine needs the glibc it was linked against (2.34 here), and the image a
# Function App runs on can be older: the v4 images of Azure/azure-functions-docker are Debian 11 (glibc 2.31)
# and Debian 12 (2.36), the v3 ones Debian 10 (2.28), and the Bicep leaves linuxFxVersion empty, so the
# platform picks. So the binary is linked with cargo-zigbuild against glibc 2.28 (--glibc; zig ships the
# glibc stubs of every version): it then runs on Debian 10 and later, Ubuntu 18.10 and later, RHEL 8. 2.28
# rather than 2.17: no Functions image is older than Debian 10, and a lower floor gains nothing while it
# narrows what the C code compiled here (ring, the bundled SQLite) may call. dev/zigbuild.sh installs the
# pinned cargo-zigbuild and zig. `--target x86_64-unknown-linux-musl` builds a static binary instead when that
# rustup target is installed.
#
# The script then CHECKS the binary it packed: the newest GLIBC_ symbol version it needs
# (scripts/glibc-needed.py reads the ELF's version-needs list) must be at most the chosen glibc, and it must
# start as the host starts it (`milink functions`, FUNCTIONS_CUSTOMHANDLER_PORT) and answer the host's
# readiness probe (`GET /`). Either failing fails the script, and no zip is written.
#
# Builds go to $CARGO_TARGET_DIR (default target/); a release build takes minutes, so on a shared machine
# run it as `nice -n 19 scripts/package-functions.sh`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/dist
TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28
CONFIG=
BINARY=
while [[ $# -gt 0 ]]; do
    case $1 in
        --config) CONFIG=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --glibc) GLIBC=$2; shift 2 ;;
        --target) TARGET=$2; shift 2 ;;
        --binary) BINARY=$2; shift 2 ;;
        *) echo "usage: $0 [--config milink.toml] [--out dist] [--glibc 2.28] [--target <triple>] [--binary <path>]" >&2; exit 2 ;;
    esac
done
[[ $GLIBC =~ ^2\.[0-9]+$ ]] || { echo "package-functions: --glibc takes a version like 2.28" >&2; exit 2; }
say() { printf 'package-functions: %s\n' "$*"; }

if [[ -n $CONFIG && ! -f $CONFIG ]]; then
    echo "package-functions: $CONFIG does not exist" >&2; exit 1
fi
if [[ -n $CONFIG ]] && grep -Eiq '(://[^/@]*:[^/@]*@|password *=)' "$CONFIG"; then
    echo "package-functions: $CONFIG seems to hold a password; use password_env naming an app setting (a Key Vault reference)" >&2
    exit 1
fi

if [[ -n $BINARY ]]; then
    [[ -x $BINARY ]] || { echo "package-functions: $BINARY is not an executable" >&2; exit 1; }
    say "packing $BINARY (not building)"
else
    started=$(date +%s)
    case $TARGET in
        *-linux-gnu)
            say "building milink for $TARGET against glibc $GLIBC (release, cargo-zigbuild)"
            ZIGBUILD_BIN=$(bash "$ROOT/dev/zigbuild.sh" path)
            (cd "$ROOT" && PATH="$ZIGBUILD_BIN:$PATH" cargo zigbuild --release --locked -p milink --target "$TARGET.$GLIBC")
            ;;
        *-linux-musl)
            say "building milink for $TARGET (release, static)"
            (cd "$ROOT" && cargo build --release --locked -p milink --target "$TARGET")
            ;;
        *) echo "package-functions: a Function App runs Linux x86_64: use x86_64-unknown-linux-gnu or -musl" >&2; exit 2 ;;
    esac
    say "built in $(( $(date +%s) - started )) s"
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    BINARY=$TARGET_DIR/$TARGET/release/milink
fi

STAGE=$OUT/functions
# A refused package leaves no zip behind to deploy by mistake.
rm -f "$OUT/milink-functions.zip"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp "$ROOT/host.json" "$STAGE/host.json"
count=0
for spec in "$ROOT"/functions/*/function.json; do
    name=$(basename "$(dirname "$spec")")
    mkdir -p "$STAGE/$name"
    cp "$spec" "$STAGE/$name/function.json"
    count=$((count + 1))
done
install -m 0755 "$BINARY" "$STAGE/milink"
[[ -n $CONFIG ]] && cp "$CONFIG" "$STAGE/milink.toml"

# The handler must be where host.json says, and executable.
expected=$(sed -n 's/.*"defaultExecutablePath": *"\([^"]*\)".*/\1/p' "$ROOT/host.json")
[[ -x $STAGE/$expected ]] || { echo "package-functions: host.json runs '$expected', which is not in the package" >&2; exit 1; }

# The glibc it needs: the newest GLIBC_ version in its version-needs list.
needed=$(python3 "$ROOT/scripts/glibc-needed.py" "$STAGE/milink" | tail -n 1)
case $TARGET in
    *-linux-musl)
        [[ -z $needed ]] || { echo "package-functions: the static build still needs $needed" >&2; exit 1; }
        say "the binary is static (needs no glibc)"
        ;;
    *)
        [[ -n $needed ]] || { echo "package-functions: found no GLIBC_ version in the binary; is it the one built?" >&2; exit 1; }
        newest=$(printf '%s\n%s\n' "${needed#GLIBC_}" "$GLIBC" | sort -V | tail -n 1)
        if [[ $newest != "$GLIBC" ]]; then
            echo "package-functions: the binary needs $needed, newer than glibc $GLIBC; it would not start on older Functions images" >&2
            exit 1
        fi
        say "the binary needs $needed at most (asked: glibc $GLIBC or newer; Debian 10 has 2.28, 11 has 2.31, 12 has 2.36)"
        ;;
esac

# It starts as the host starts it and answers the readiness probe within 30 s (the host's
# InitializationTimeout). Storage and Service Bus point at a port nothing listens on: the handler binds first
# and answers 503 "starting" while it retries (any answer is "started" for the host).
probe_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
probe_log=$(mktemp)
(
    cd "$STAGE"
    exec env FUNCTIONS_CUSTOMHANDLER_PORT="$probe_port" FUNCTIONS_APP_ROOT_PATH="$STAGE" \
        MILINK_STORAGE_ACCOUNT=devstoreaccount1 MILINK_STORAGE_KEY=AAAA MILINK_TABLE_ENDPOINT=http://127.0.0.1:1/devstoreaccount1 \
        MILINK_SERVICEBUS_URL=http://127.0.0.1:1 MILINK_SERVICEBUS_KEY_NAME=probe MILINK_SERVICEBUS_KEY=AAAA \
        ./milink functions
) >"$probe_log" 2>&1 &
probe_pid=$!
answer=
for _ in $(seq 1 300); do
    answer=$(curl -s --max-time 2 "http://127.0.0.1:$probe_port/" || true)
    [[ -n $answer ]] && break
    kill -0 "$probe_pid" 2>/dev/null || break
    sleep 0.1
done
kill "$probe_pid" 2>/dev/null || true
wait "$probe_pid" 2>/dev/null || true
if [[ $answer != *"milink custom handler"* ]]; then
    echo "package-functions: the packed binary did not answer the readiness probe (got: ${answer:-nothing}); its output:" >&2
    cat "$probe_log" >&2
    rm -f "$probe_log"
    exit 1
fi
rm -f "$probe_log"
say "the packed binary starts and answers the host's probe: $answer"

(cd "$STAGE" && zip -q -r -X "$OUT/milink-functions.zip" .)
say "laid out $count functions in $STAGE"
say "zip: $OUT/milink-functions.zip ($(du -h "$OUT/milink-functions.zip" | cut -f1))"
say "deploy: az functionapp deployment source config-zip -g <group> -n <app> --src $OUT/milink-functions.zip"
