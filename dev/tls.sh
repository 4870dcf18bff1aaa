#!/usr/bin/env bash
# A test certificate authority for the local PostgreSQL servers, so tests verify certificates like a user
# of a managed service would (docs/tls.md).
#
#   dev/tls.sh apply    make the CA and certificates (once) and serve them from the running source and
#                       target clusters: ALTER SYSTEM + reload, never a restart; idempotent (dev/pg.sh up
#                       runs it)
#   dev/tls.sh up       apply, and start cluster "tls-expired" (54314) whose certificate has expired
#   dev/tls.sh env      print the exports the tests use (file paths, the expired cluster's url)
#   dev/tls.sh down     stop cluster "tls-expired"
#
# Files in $MILINK_PG_DIR/tls: ca.crt (the test CA, trusted by tests), other-ca.crt (a CA nothing of ours
# was signed by), server.crt (signed by ca, names only IP 127.0.0.1, so "localhost" is a wrong host),
# expired.crt (signed by ca, expired in 2020), cert-only.crt/.key (a client certificate for role
# milink_cert_only, which may log in with nothing else: pg_hba `cert`).
#
# Why it is shaped so: other tests use the shared clusters all the time, so TLS is turned on the way an
# operator would on a live server (reload), and connections that do not ask for TLS keep working
# (pg_hba stays `host`). Wrong CA and wrong host need no extra server: only the client's check differs.
# An expired certificate does: a server serves one certificate, so it gets its own small cluster.
set -euo pipefail

DIR=${MILINK_PG_DIR:-/tmp/milink-pg}
TLS=$DIR/tls
SOURCE_PORT=${MILINK_PG_SOURCE_PORT:-54311}
TARGET_PORT=${MILINK_PG_TARGET_PORT:-54312}
EXPIRED_PORT=${MILINK_PG_TLS_EXPIRED_PORT:-54314}
ROLE=milink
CERT_ROLE=milink_cert_only

say() { printf 'tls.sh: %s\n' "$*"; }
die() { printf 'tls.sh: %s\n' "$*" >&2; exit 1; }

find_bin() {
    if [[ -n ${MILINK_PG_BIN:-} && -x ${MILINK_PG_BIN}/initdb ]]; then echo "$MILINK_PG_BIN"; return; fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n 1 || true)
    if [[ -n $newest && -x $newest/initdb ]]; then echo "$newest"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
    return 1
}
BIN=$(find_bin || true)

as_server() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

lock() {
    mkdir -p "$TLS"
    exec 8>"$TLS/.lock"
    flock 8
}

ensure_openssl() {
    command -v openssl >/dev/null 2>&1 && return 0
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || die "openssl not found: install it (apt-get install -y openssl)"
    say "installing openssl with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}

# One OpenSSL config for every certificate: no dependence on the system's openssl.cnf.
write_openssl_config() {
    cat >"$TLS/openssl.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
[ client_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $TLS/ca-index.txt
new_certs_dir = $TLS/issued
serial = $TLS/ca-serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
EOF
}

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

make_ca() {
    local name=$1 subject=$2
    [[ -s $TLS/$name.crt ]] && return 0
    new_key "$TLS/$name.key"
    openssl req -config "$TLS/openssl.cnf" -new -x509 -key "$TLS/$name.key" -subj "$subject" -days 3650 \
        -extensions ca_ext -out "$TLS/$name.crt.tmp"
    mv "$TLS/$name.crt.tmp" "$TLS/$name.crt"
}

# A certificate signed by the test CA; dates as `openssl ca` takes them (YYYYMMDDHHMMSSZ).
issue() {
    local name=$1 subject=$2 extensions=$3 start=$4 end=$5
    [[ -s $TLS/$name.crt ]] && return 0
    new_key "$TLS/$name.key"
    openssl req -config "$TLS/openssl.cnf" -new -key "$TLS/$name.key" -subj "$subject" -out "$TLS/$name.csr"
    openssl ca -config "$TLS/openssl.cnf" -batch -notext -cert "$TLS/ca.crt" -keyfile "$TLS/ca.key" \
        -extensions "$extensions" -startdate "$start" -enddate "$end" -in "$TLS/$name.csr" -out "$TLS/$name.crt.tmp" 2>/dev/null \
        || die "openssl ca could not issue $name.crt"
    mv "$TLS/$name.crt.tmp" "$TLS/$name.crt"
    rm -f "$TLS/$name.csr"
}

make_certificates() {
    ensure_openssl
    mkdir -p "$TLS/issued"
    chmod 755 "$TLS"
    [[ -f $TLS/ca-index.txt ]] || : >"$TLS/ca-index.txt"
    [[ -f $TLS/ca-serial ]] || echo 1000 >"$TLS/ca-serial"
    write_openssl_config
    make_ca ca "/CN=milink test CA"
    make_ca other-ca "/CN=milink other CA"
    local now_plus_10y
    now_plus_10y=$(date -u -d '+10 years' +%Y%m%d%H%M%SZ)
    issue server "/CN=milink dev server" server_ext "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" "$now_plus_10y"
    issue expired "/CN=milink expired server" server_ext 20200101000000Z 20200201000000Z
    issue cert-only "/CN=$CERT_ROLE" client_ext "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" "$now_plus_10y"
    # The servers read their keys as the postgres OS user, which wants them private; CA certificates are
    # public (the target's server reads ca.crt for the subscription).
    for name in server expired; do
        cp "$TLS/$name.key" "$TLS/$name-server.key"
        [[ $(id -u) -eq 0 ]] && chown postgres: "$TLS/$name-server.key"
        chmod 600 "$TLS/$name-server.key"
    done
    chmod 644 "$TLS"/*.crt
}

local_psql() {
    local name=$1 port=$2; shift 2
    as_server "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$DIR/run-$name" -p "$port" -U "$ROLE" -d postgres "$@"
}

# pg_hba: the cert-only role logs in with its certificate over TLS and nothing else. Inserted before the
# first `host` line so it wins; dev/pg.sh rewrites the file on a restart and runs this again.
ensure_hba_line() {
    local hba=$1
    local line="hostssl   all          $CERT_ROLE 127.0.0.1/32    cert"
    grep -qF "$line" "$hba" && return 1
    local tmp
    tmp=$(mktemp)
    awk -v line="$line" '!done && /^host[[:space:]]/ { print line; done = 1 } { print }' "$hba" >"$tmp"
    as_server tee "$hba" <"$tmp" >/dev/null
    rm -f "$tmp"
    return 0
}

# Turns TLS on in a running cluster with the test CA's certificate, by reload.
serve_certificate() {
    local name=$1 port=$2 cert=$3 key=$4 data=$DIR/$1
    as_server "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1 || { say "cluster $name is not running: skipped"; return 0; }
    local current changed=0
    current=$(local_psql "$name" "$port" -c "SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file') || ' ' || current_setting('ssl_ca_file')")
    if [[ $current != "on $cert $TLS/ca.crt" ]]; then
        local_psql "$name" "$port" <<EOF
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$cert';
ALTER SYSTEM SET ssl_key_file = '$key';
ALTER SYSTEM SET ssl_ca_file = '$TLS/ca.crt';
EOF
        changed=1
    fi
    ensure_hba_line "$data/milink_hba.conf" && changed=1
    local_psql "$name" "$port" -c "SELECT 1 FROM pg_roles WHERE rolname = '$CERT_ROLE'" | grep -q 1 \
        || local_psql "$name" "$port" -c "CREATE ROLE $CERT_ROLE LOGIN"
    [[ $changed -eq 1 ]] || return 0
    local_psql "$name" "$port" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 50); do
        current=$(local_psql "$name" "$port" -c "SELECT current_setting('ssl_cert_file')")
        [[ $current == "$cert" ]] && break
        sleep 0.1
    done
    # The settings can be taken while the certificate is not (an unreadable key keeps the old one): ask
    # the server itself, as a client verifying with the test CA would.
    for _ in $(seq 50); do
        if openssl s_client -starttls postgres -connect "127.0.0.1:$port" -CAfile "$TLS/ca.crt" -verify_ip 127.0.0.1 \
            -verify_return_error </dev/null 2>/dev/null | grep -q 'Verify return code: 0'; then
            say "cluster $name serves the test CA's certificate"
            return 0
        fi
        sleep 0.1
    done
    die "cluster $name does not serve $cert after a reload; see $DIR/log/$name.log"
}

apply() {
    lock
    make_certificates
    [[ -n $BIN ]] || { say "PostgreSQL not installed: certificates made, no cluster configured"; return 0; }
    serve_certificate source "$SOURCE_PORT" "$TLS/server.crt" "$TLS/server-server.key"
    serve_certificate target "$TARGET_PORT" "$TLS/server.crt" "$TLS/server-server.key"
}

# A small cluster that serves the expired certificate (and nothing else of interest).
start_expired() {
    local name=tls-expired data=$DIR/tls-expired
    [[ -n $BIN ]] || die "PostgreSQL not installed: run dev/pg.sh up first"
    if [[ ! -f $data/PG_VERSION ]]; then
        rm -rf "$data"
        mkdir -p "$data" "$DIR/run-$name"
        chmod 700 "$data" "$DIR/run-$name"
        [[ $(id -u) -eq 0 ]] && chown postgres: "$data" "$DIR/run-$name"
        as_server "$BIN/initdb" -D "$data" -U "$ROLE" --auth-local=trust --auth-host=scram-sha-256 \
            --encoding=UTF8 --no-locale --no-sync >"$DIR/log/$name-initdb.log" 2>&1 \
            || { cat "$DIR/log/$name-initdb.log" >&2; die "initdb of cluster $name failed"; }
        as_server tee -a "$data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $EXPIRED_PORT
unix_socket_directories = '$DIR/run-$name'
max_connections = 10
shared_buffers = 16MB
fsync = off
ssl = on
ssl_cert_file = '$TLS/expired.crt'
ssl_key_file = '$TLS/expired-server.key'
EOF
        touch "$DIR/$name.needs-password"
    fi
    if ! as_server "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_server "$BIN/pg_ctl" -D "$data" -l "$DIR/log/$name.log" -w -t 60 start >/dev/null 8>&- \
            || { tail -n 20 "$DIR/log/$name.log" >&2; die "cluster $name did not start; see $DIR/log/$name.log"; }
        say "started cluster $name on 127.0.0.1:$EXPIRED_PORT (expired certificate)"
    fi
    if [[ -f $DIR/$name.needs-password ]]; then
        printf "ALTER ROLE %s PASSWORD '%s';\n" "$ROLE" "$(cat "$DIR/password")" | local_psql "$name" "$EXPIRED_PORT"
        rm -f "$DIR/$name.needs-password"
    fi
}

cmd=${1:-apply}
case $cmd in
    apply) apply ;;
    up)
        [[ -s $DIR/password ]] || die "no password file: run dev/pg.sh up first"
        apply
        start_expired
        ;;
    env)
        echo "export MILINK_TLS_DIR=$TLS"
        echo "export MILINK_PG_TLS_EXPIRED_URL=postgresql://$ROLE@127.0.0.1:$EXPIRED_PORT/postgres"
        ;;
    down)
        [[ -n $BIN && -f $DIR/tls-expired/PG_VERSION ]] || exit 0
        lock
        as_server "$BIN/pg_ctl" -D "$DIR/tls-expired" -m fast -w stop >/dev/null 2>&1 && say "stopped cluster tls-expired" || true
        ;;
    *) die "usage: dev/tls.sh apply|up|env|down" ;;
esac
