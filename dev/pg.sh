#!/usr/bin/env bash
# Local PostgreSQL servers for milink's development and tests.
#
#   dev/pg.sh up          start clusters "source" (54311) and "target" (54312); idempotent
#   dev/pg.sh replica     also start cluster "replica" (54313) with wal_level=replica, to show that error
#   dev/pg.sh small       also start cluster "small" (54315): a target with few logical replication workers
#                         (max_logical_replication_workers = 4), for admission-control tests and benches
#   dev/pg.sh env         print the exports tests and milink.toml use (URLs, password file)
#   dev/pg.sh tailspin    (re)load the Tailspin sample (ToyStore, Customer360) into the source
#   dev/pg.sh down        stop every cluster started here
#   dev/pg.sh status      one line per cluster
#
# Settings: MILINK_PG_DIR (default /tmp/milink-pg), MILINK_PG_SOURCE_PORT (54311),
# MILINK_PG_TARGET_PORT (54312), MILINK_PG_REPLICA_PORT (54313), MILINK_PG_BIN (server binaries).
#
# Why it is shaped so: tests run in parallel processes that may all call `up` at once, so every command
# takes a lock and checks before it acts. PostgreSQL refuses to run as root, so as root the servers run as
# the `postgres` OS user in directories it owns. The superuser `milink` logs in over TCP with a generated
# password (scram-sha-256), like a real server; only the Unix socket, in a directory nobody else can
# enter, trusts local connections, which is how the password is set without it ever reaching argv.
set -euo pipefail

DIR=${MILINK_PG_DIR:-/tmp/milink-pg}
SOURCE_PORT=${MILINK_PG_SOURCE_PORT:-54311}
TARGET_PORT=${MILINK_PG_TARGET_PORT:-54312}
REPLICA_PORT=${MILINK_PG_REPLICA_PORT:-54313}
SMALL_PORT=${MILINK_PG_SMALL_PORT:-54315}
ROLE=milink
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'pg.sh: %s\n' "$*"; }
die() { printf 'pg.sh: %s\n' "$*" >&2; exit 1; }

# The directory holding initdb/pg_ctl: MILINK_PG_BIN, else the newest /usr/lib/postgresql/<major>/bin
# (Debian/Ubuntu), else whatever is on PATH.
find_bin() {
    if [[ -n ${MILINK_PG_BIN:-} && -x ${MILINK_PG_BIN}/initdb ]]; then echo "$MILINK_PG_BIN"; return; fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n 1 || true)
    if [[ -n $newest && -x $newest/initdb ]]; then echo "$newest"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
    return 1
}

install_postgres() {
    if [[ $(id -u) -ne 0 ]]; then
        die "PostgreSQL server binaries (initdb) not found. Install them, e.g.: sudo apt-get install -y postgresql postgresql-contrib (or set MILINK_PG_BIN to the directory holding initdb)"
    fi
    command -v apt-get >/dev/null 2>&1 || die "initdb not found and apt-get is unavailable: install PostgreSQL server 14+ and set MILINK_PG_BIN"
    say "installing postgresql and postgresql-contrib with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # The official postgres image does the same: no default "main" cluster on port 5432, we make our own.
    apt-get install -y -qq postgresql-common >/dev/null
    sed -ri 's/#?\s*(create_main_cluster)\s*=.*/\1 = false/' /etc/postgresql-common/createcluster.conf
    apt-get install -y -qq postgresql postgresql-contrib >/dev/null
}

BIN=$(find_bin || true)

# Runs a server binary as the server's OS user: `postgres` when we are root, ourselves otherwise.
as_server() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_dirs() {
    mkdir -p "$DIR/log"
    chmod 755 "$DIR"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /usr/sbin/nologin postgres
        chown postgres: "$DIR/log"
    fi
}

ensure_password() {
    if [[ ! -s $DIR/password ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$DIR/password")
        say "generated a password for role $ROLE in $DIR/password"
    fi
    chmod 600 "$DIR/password"
}

lock() {
    exec 9>"$DIR/.lock"
    flock 9
}

port_of() {
    case $1 in
        source) echo "$SOURCE_PORT" ;;
        target) echo "$TARGET_PORT" ;;
        replica) echo "$REPLICA_PORT" ;;
        small) echo "$SMALL_PORT" ;;
    esac
}

# A self-signed certificate, so the servers speak TLS like managed ones (clients may still connect without).
ensure_certificate() {
    local name=$1 data=$2
    [[ -f $data/server.crt ]] && return 0
    if ! command -v openssl >/dev/null 2>&1; then
        say "openssl not found: cluster $name runs without TLS"
        return 0
    fi
    as_server openssl req -x509 -nodes -newkey rsa:2048 -days 3650 -subj "/CN=127.0.0.1" \
        -keyout "$data/server.key" -out "$data/server.crt" >/dev/null 2>&1
    as_server chmod 600 "$data/server.key"
    say "made a self-signed TLS certificate for cluster $name"
}

# Written by us as root or as the server user, into the server's data directory.
write_server_file() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- tee "$1" >/dev/null; else cat >"$1"; fi
}

# Settings and pg_hba.conf written on every start (before the server reads them), so a changed port takes
# effect on the next start. Replication limits are high because every test migration holds a slot, a
# walsender and an apply worker, plus table-sync workers while seeding. Role milink_tls_only may only log
# in over TLS, which lets tests prove milink's connections are encrypted when a url asks for it.
write_settings() {
    local name=$1 data=$2 wal_level=logical ssl=off
    [[ $name == replica ]] && wal_level=replica
    [[ -f $data/server.crt ]] && ssl=on
    write_server_file "$data/milink_hba.conf" <<EOF
# Written by dev/pg.sh on every start; edits are overwritten.
local     all          all                              trust
hostnossl all          milink_tls_only  127.0.0.1/32    reject
host      all          all              127.0.0.1/32    scram-sha-256
host      all          all              ::1/128         scram-sha-256
host      replication  all              127.0.0.1/32    scram-sha-256
EOF
    local conf
    conf=$(cat <<EOF
# Written by dev/pg.sh on every start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $(port_of "$name")
unix_socket_directories = '$DIR/run-$name'
wal_level = $wal_level
max_connections = 300
max_replication_slots = 64
max_wal_senders = 64
max_logical_replication_workers = 64
max_worker_processes = 128
max_sync_workers_per_subscription = 2
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
ssl = $ssl
hba_file = '$data/milink_hba.conf'
EOF
)
    if [[ $name == small ]]; then
        # Later lines win: a target that holds only a few links at once (admission control's tests).
        conf+=$'\n''max_logical_replication_workers = 4'$'\n''max_worker_processes = 8'
    fi
    printf '%s\n' "$conf" | write_server_file "$data/milink.conf"
}

running() {
    local data=$DIR/$1
    [[ -f $data/PG_VERSION ]] && as_server "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

init_cluster() {
    local name=$1 data=$DIR/$1
    [[ -f $data/PG_VERSION ]] && return 0
    rm -rf "$data"
    mkdir -p "$data" "$DIR/run-$name"
    chmod 700 "$data" "$DIR/run-$name"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$data" "$DIR/run-$name"
    as_server "$BIN/initdb" -D "$data" -U "$ROLE" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --no-locale --no-sync >"$DIR/log/$name-initdb.log" 2>&1 \
        || { cat "$DIR/log/$name-initdb.log" >&2; die "initdb of cluster $name failed"; }
    echo "include_if_exists = 'milink.conf'" | as_server tee -a "$data/postgresql.conf" >/dev/null
    say "initialized cluster $name in $data"
    touch "$DIR/$name.needs-password"
}

# psql over the cluster's private Unix socket (trusted); stdin carries the SQL.
local_psql() {
    local name=$1; shift
    as_server "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/run-$name" -p "$(port_of "$name")" -U "$ROLE" -d postgres "$@"
}

start_cluster() {
    local name=$1 data=$DIR/$1
    init_cluster "$name"
    if ! running "$name"; then
        ensure_certificate "$name" "$data"
        write_settings "$name" "$data"
        as_server "$BIN/pg_ctl" -D "$data" -l "$DIR/log/$name.log" -w -t 60 start >/dev/null 9>&- \
            || { tail -n 20 "$DIR/log/$name.log" >&2; die "cluster $name did not start; see $DIR/log/$name.log"; }
        say "started cluster $name on 127.0.0.1:$(port_of "$name")"
    fi
    if [[ -f $DIR/$name.needs-password || $DIR/password -nt $DIR/$name.password-set ]]; then
        # The password travels on stdin, never in argv, and is alphanumeric so it needs no escaping.
        printf "ALTER ROLE %s PASSWORD '%s';\n" "$ROLE" "$(cat "$DIR/password")" | local_psql "$name"
        rm -f "$DIR/$name.needs-password"
        touch "$DIR/$name.password-set"
        say "set the password of role $ROLE on cluster $name"
    fi
}

stop_cluster() {
    local name=$1
    if running "$name"; then
        as_server "$BIN/pg_ctl" -D "$DIR/$name" -m fast -w stop >/dev/null
        say "stopped cluster $name"
    fi
}

need_bin() {
    if [[ -z $BIN ]]; then
        install_postgres
        BIN=$(find_bin) || die "PostgreSQL was installed but initdb is still not found; set MILINK_PG_BIN"
    fi
}

print_env() {
    echo "export MILINK_PG_SOURCE_URL=postgresql://$ROLE@127.0.0.1:$SOURCE_PORT/postgres"
    echo "export MILINK_PG_TARGET_URL=postgresql://$ROLE@127.0.0.1:$TARGET_PORT/postgres"
    echo "export MILINK_PG_REPLICA_URL=postgresql://$ROLE@127.0.0.1:$REPLICA_PORT/postgres"
    echo "export MILINK_PG_SMALL_URL=postgresql://$ROLE@127.0.0.1:$SMALL_PORT/postgres"
    echo "export MILINK_PG_PASSWORD_FILE=$DIR/password"
}

# Drops and recreates one sample database on the source (and drops it on the target) from its SQL file.
load_sample() {
    local database=$1 file=$2
    for name in source target; do
        running "$name" || continue
        local_psql "$name" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null
    done
    local_psql source -c "CREATE DATABASE \"$database\"" >/dev/null
    as_server "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/run-source" -p "$SOURCE_PORT" -U "$ROLE" \
        -d "$database" --single-transaction <"$file" >/dev/null
    say "loaded $database into the source"
}

cmd=${1:-up}
case $cmd in
    up)
        need_bin; ensure_dirs; lock; ensure_password
        start_cluster source
        start_cluster target
        # The test CA's certificates, served by reload (dev/tls.sh; docs/tls.md).
        bash "$HERE/tls.sh" apply 9>&-
        ;;
    replica | replica-only)
        need_bin; ensure_dirs; lock; ensure_password
        start_cluster replica
        ;;
    small)
        need_bin; ensure_dirs; lock; ensure_password
        start_cluster small
        ;;
    env)
        print_env
        ;;
    tailspin)
        need_bin; ensure_dirs; lock
        running source || die "the source cluster is not running; run dev/pg.sh up first"
        load_sample ToyStore "$HERE/tailspin/toystore.sql"
        load_sample Customer360 "$HERE/tailspin/customer360.sql"
        ;;
    down)
        [[ -n $BIN && -d $DIR ]] || exit 0
        lock
        for name in source target replica small; do stop_cluster "$name"; done
        bash "$HERE/tls.sh" down 9>&-
        ;;
    status)
        for name in source target replica small; do
            if [[ -n $BIN ]] && running "$name"; then say "$name running on 127.0.0.1:$(port_of "$name")"
            else say "$name stopped"; fi
        done
        ;;
    *)
        die "usage: dev/pg.sh up|replica|small|env|tailspin|down|status"
        ;;
esac
