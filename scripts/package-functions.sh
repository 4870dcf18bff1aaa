#!/usr/bin/env bash
# Builds the custom handler for Linux x86_64 and lays out the Function App, ready for zip deploy:
#
#   dist/functions/              host.json, one folder per function (function.json), the `milink` binary,
#                                and milink.toml when --config is given
#   dist/milink-functions.zip    the same files at the zip's root (what `az functionapp deployment source
#                                config-zip` and WEBSITE_RUN_FROM_PACKAGE take)
#
# Usage: scripts/package-functions.sh [--config milink.toml] [--out dist] [--target x86_64-unknown-linux-gnu]
#
# The binary is named `milink`, as host.json's customHandler.description.defaultExecutablePath says, and
# runs as `milink functions`. The default target is x86_64-unknown-linux-gnu: the Functions v4 Linux images
# are Debian 12 (glibc 2.36); the script prints the newest glibc symbol the binary needs so a mismatch shows
# here, not at cold start. `--target x86_64-unknown-linux-musl` builds a static binary instead when that
# target is installed (rustup target add x86_64-unknown-linux-musl).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/dist
TARGET=x86_64-unknown-linux-gnu
CONFIG=
while [[ $# -gt 0 ]]; do
    case $1 in
        --config) CONFIG=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --target) TARGET=$2; shift 2 ;;
        *) echo "usage: $0 [--config milink.toml] [--out dist] [--target <triple>]" >&2; exit 2 ;;
    esac
done
say() { printf 'package-functions: %s\n' "$*"; }

if [[ -n $CONFIG && ! -f $CONFIG ]]; then
    echo "package-functions: $CONFIG does not exist" >&2; exit 1
fi
if [[ -n $CONFIG ]] && grep -Eiq '(://[^/@]*:[^/@]*@|password *=)' "$CONFIG"; then
    echo "package-functions: $CONFIG seems to hold a password; use password_env naming an app setting (a Key Vault reference)" >&2
    exit 1
fi

say "building milink for $TARGET (release)"
(cd "$ROOT" && cargo build --release --locked -p milink --target "$TARGET")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=$TARGET_DIR/$TARGET/release/milink

STAGE=$OUT/functions
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

if command -v objdump >/dev/null 2>&1; then
    glibc=$(objdump -T "$STAGE/milink" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
    [[ -n $glibc ]] && say "the binary needs $glibc or newer (Functions v4 Linux images: Debian 12, glibc 2.36)"
fi

rm -f "$OUT/milink-functions.zip"
(cd "$STAGE" && zip -q -r -X "$OUT/milink-functions.zip" .)
say "laid out $count functions in $STAGE"
say "zip: $OUT/milink-functions.zip ($(du -h "$OUT/milink-functions.zip" | cut -f1))"
say "deploy: az functionapp deployment source config-zip -g <group> -n <app> --src $OUT/milink-functions.zip"
