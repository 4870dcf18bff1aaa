#!/usr/bin/env bash
# A local PgBouncer in front of the dev PostgreSQL clusters (dev/pg.sh), for the pooler cutover tests.
#
#   dev/pgbouncer.sh up      start PgBouncer on 127.0.0.1:6432 (starts dev/pg.sh's clusters too); idempotent
#   dev/pgbouncer.sh env     print the exports tests and milink.toml use (admin url, files)
#   dev/pgbouncer.sh down    stop it
#   dev/pgbouncer.sh status  one line
#
# Settings: MILINK_PGBOUNCER_DIR (default /tmp/milink-pgbouncer), MILINK_PGBOUNCER_PORT (6432),
# MILINK_PG_DIR (where dev/pg.sh keeps the clusters and the password of role milink).
#
# Why it is shaped so:
# - pool_mode = transaction. milink's cutover PAUSEs the database, and PAUSE returns only once every server
#   connection is released: in transaction mode that is at the end of each client's transaction, so a PAUSE
#   finishes in about the length of the longest running transaction. In session mode a server connection is
#   released only when its client disconnects, so PAUSE would hang for as long as the application stays
#   connected, i.e. forever.
# - The [databases] entries live in their own file, %include'd at the end of pgbouncer.ini: milink repoints
#   a database by rewriting its entry there (PgBouncer has no SQL command to change an entry) and sending
#   RELOAD. `*` sends any other database name to the source, so tests reach their own databases at once; a
#   test that cuts over adds an explicit entry for its database, the one milink rewrites.
# - Writers of that file (tests, milink) hold an flock on `databases.ini.lock` while they rewrite it.
# - Clients log in as role milink with dev/pg.sh's password (scram-sha-256, the auth_file holds it in
#   clear text so PgBouncer can log in to the servers with it); the admin console user pgbouncer_admin has
#   its own generated password in admin_password. As root, PgBouncer runs as the postgres OS user, like the
#   clusters. Tests run in parallel, so every command takes a lock and checks before it acts.
set -euo pipefail

DIR=${MILINK_PGBOUNCER_DIR:-/tmp/milink-pgbouncer}
PORT=${MILINK_PGBOUNCER_PORT:-6432}
PG_DIR=${MILINK_PG_DIR:-/tmp/milink-pg}
SOURCE_PORT=${MILINK_PG_SOURCE_PORT:-54311}
ADMIN=pgbouncer_admin
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'pgbouncer.sh: %s\n' "$*"; }
die() { printf 'pgbouncer.sh: %s\n' "$*" >&2; exit 1; }

find_bin() {
    if command -v pgbouncer >/dev/null 2>&1; then command -v pgbouncer; return; fi
    if [[ -x /usr/sbin/pgbouncer ]]; then echo /usr/sbin/pgbouncer; return; fi
    return 1
}

install_pgbouncer() {
    if [[ $(id -u) -ne 0 ]]; then
        die "pgbouncer not found. Install it, e.g.: sudo apt-get install -y pgbouncer"
    fi
    command -v apt-get >/dev/null 2>&1 || die "pgbouncer not found and apt-get is unavailable: install PgBouncer 1.18+"
    say "installing pgbouncer with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt-get may hold the dpkg lock for a while (parallel setup): wait for it rather than fail.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq pgbouncer >/dev/null
}

as_server() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

lock() {
    exec 9>"$DIR/.lock"
    flock 9
}

ensure_dirs() {
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
}

ensure_admin_password() {
    if [[ ! -s $DIR/admin_password ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$DIR/admin_password")
        say "generated a password for the admin console user $ADMIN in $DIR/admin_password"
    fi
    chmod 600 "$DIR/admin_password"
}

# Written as the server's user (or by us, not root), mode 600: the auth file holds passwords.
write_private() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- bash -c "umask 077; cat >'$1'"; else (umask 077; cat >"$1"); fi
}

write_config() {
    local password admin_password
    password=$(cat "$PG_DIR/password")
    admin_password=$(cat "$DIR/admin_password")
    # Both passwords are alphanumeric (generated above and by dev/pg.sh), so they need no escaping.
    printf '"milink" "%s"\n"%s" "%s"\n' "$password" "$ADMIN" "$admin_password" | write_private "$DIR/userlist.txt"
    write_private "$DIR/pgbouncer.ini" <<EOF
; Written by dev/pgbouncer.sh on every start; edits are overwritten.
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DIR/userlist.txt
admin_users = $ADMIN
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0

%include $DIR/databases.ini
EOF
    # The databases file belongs to milink and the tests once created: never overwritten here.
    if [[ ! -f $DIR/databases.ini ]]; then
        printf '[databases]\n* = host=127.0.0.1 port=%s\n' "$SOURCE_PORT" \
            | if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- tee "$DIR/databases.ini" >/dev/null; else cat >"$DIR/databases.ini"; fi
        chmod 644 "$DIR/databases.ini"
    fi
    # Tests and milink (root) create the lock file; PgBouncer never needs it.
    touch "$DIR/databases.ini.lock"
    chmod 666 "$DIR/databases.ini.lock"
}

running() {
    [[ -f $DIR/pgbouncer.pid ]] && kill -0 "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null
}

start() {
    if running; then return 0; fi
    write_config
    rm -f "$DIR/pgbouncer.pid"
    as_server "$BIN" -d "$DIR/pgbouncer.ini" 9>&- || { tail -n 20 "$DIR/pgbouncer.log" >&2; die "pgbouncer did not start; see $DIR/pgbouncer.log"; }
    for _ in $(seq 1 100); do
        if running && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            say "started pgbouncer on 127.0.0.1:$PORT"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$DIR/pgbouncer.log" >&2
    die "pgbouncer did not start listening on 127.0.0.1:$PORT; see $DIR/pgbouncer.log"
}

stop() {
    if running; then
        kill "$(cat "$DIR/pgbouncer.pid")"
        for _ in $(seq 1 50); do running || break; sleep 0.1; done
        say "stopped pgbouncer"
    fi
}

print_env() {
    echo "export MILINK_PGBOUNCER_URL=postgresql://milink@127.0.0.1:$PORT/postgres"
    echo "export MILINK_PGBOUNCER_ADMIN_URL=postgresql://$ADMIN@127.0.0.1:$PORT/pgbouncer"
    echo "export MILINK_PGBOUNCER_ADMIN_PASSWORD_FILE=$DIR/admin_password"
    echo "export MILINK_PGBOUNCER_DATABASES_FILE=$DIR/databases.ini"
}

cmd=${1:-up}
case $cmd in
    up)
        bash "$HERE/pg.sh" up >/dev/null
        BIN=$(find_bin || true)
        if [[ -z $BIN ]]; then install_pgbouncer; BIN=$(find_bin) || die "pgbouncer was installed but is still not found"; fi
        ensure_dirs; lock; ensure_admin_password
        start
        ;;
    env)
        print_env
        ;;
    down)
        [[ -d $DIR ]] || exit 0
        lock
        stop
        ;;
    status)
        if running; then say "running on 127.0.0.1:$PORT"; else say "stopped"; fi
        ;;
    *)
        die "usage: dev/pgbouncer.sh up|env|down|status"
        ;;
esac
