#!/usr/bin/env bash
# cargo-zigbuild and zig, pinned, for building the Functions package against an older glibc
# (scripts/package-functions.sh).
#
#   dev/zigbuild.sh install   install both into .dev/ if missing (idempotent) and print the bin directory
#   dev/zigbuild.sh path      print the bin directory (installing first when needed); put it on PATH
#
# Both come from PyPI (`cargo-zigbuild` ships the binary in its wheel; `ziglang` ships zig), into one
# virtualenv under the project's .dev/ directory, so nothing global is touched and every build uses the same
# pair. cargo-zigbuild finds zig as `python3 -m ziglang` through the virtualenv's python3 on PATH. Installing
# from crates.io instead (`cargo install cargo-zigbuild --locked`) would compile it for minutes on every new
# machine; the wheel is the same program.
set -euo pipefail

CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.15.2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
VENV=$ROOT/.dev/zigbuild-$CARGO_ZIGBUILD_VERSION-zig-$ZIGLANG_VERSION

installed() {
    [[ -x $VENV/bin/cargo-zigbuild ]] \
        && [[ $("$VENV/bin/cargo-zigbuild" --version 2>/dev/null) == "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]] \
        && [[ $("$VENV/bin/python3" -m ziglang version 2>/dev/null) == "$ZIGLANG_VERSION" ]]
}

install() {
    installed && return 0
    command -v python3 >/dev/null || { echo "zigbuild.sh: python3 is needed (the ziglang package runs zig through it)" >&2; exit 1; }
    mkdir -p "$ROOT/.dev"
    # Concurrent callers (two packaging runs) take turns; the second finds it installed.
    exec 9>"$ROOT/.dev/zigbuild.lock"
    flock 9
    installed && return 0
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION" >&2
    installed || { echo "zigbuild.sh: cargo-zigbuild $CARGO_ZIGBUILD_VERSION / zig $ZIGLANG_VERSION did not install" >&2; exit 1; }
}

case ${1:-path} in
    install | path)
        install
        echo "$VENV/bin"
        ;;
    *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
