#!/usr/bin/env bash
# The main job, end to end on this machine: the Tailspin seed lab on two local PostgreSQL servers.
#
#   1. start two PostgreSQL servers (installing PostgreSQL when missing and root) and load Tailspin
#   2. start `milink up` (embedded host: API, SQLite state and queue, timers)
#   3. assess the source: ToyStore is ready; Customer360 is not, and says why
#   4. try to link Customer360 (refused, with its blockers), link ToyStore while pgbench writes to it
#   5. watch it seed and catch up to Ready for cutover
#   6. cut over with the confirmation; the writer keeps writing until the fence stops it
#   7. check with plain SQL, independently of milink, that the target holds every row of the source
#
# Everything it makes lives in .dev/ (config, state, logs) and in the clusters of dev/pg.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK=$ROOT/.dev
mkdir -p "$WORK"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "PostgreSQL: source and target servers, Tailspin sample"
bash dev/pg.sh up
bash dev/pg.sh tailspin
eval "$(bash dev/pg.sh env)"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n 1)
PG_BIN=${MILINK_PG_BIN:-${PG_BIN:-$(dirname "$(command -v psql)")}}

step "Building milink (release)"
cargo build -q --release -p milink
MILINK=$ROOT/target/release/milink

PORT=${MILINK_DEMO_PORT:-7878}
cat > "$WORK/milink.toml" <<TOML
# Written by dev/tailspin.sh. Passwords are never in this file: password_file names where to read it.
[server]
listen = "127.0.0.1:$PORT"
state = "milink.db"

[connections.tailspin-src]
engine = "postgres"
url = "$MILINK_PG_SOURCE_URL"
password_file = "$MILINK_PG_PASSWORD_FILE"

[connections.tailspin-dst]
engine = "postgres"
url = "$MILINK_PG_TARGET_URL"
password_file = "$MILINK_PG_PASSWORD_FILE"
TOML
rm -f "$WORK/milink.db" "$WORK/milink.db-wal" "$WORK/milink.db-shm"

step "Starting milink up (log: .dev/milink.log)"
"$MILINK" up --config "$WORK/milink.toml" 2>"$WORK/milink.log" &
MILINK_PID=$!
WRITER_PID=
cleanup() {
    [[ -n $WRITER_PID ]] && kill "$WRITER_PID" 2>/dev/null || true
    kill "$MILINK_PID" 2>/dev/null && wait "$MILINK_PID" 2>/dev/null || true
}
trap cleanup EXIT
export MILINK_SERVER=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
    curl -fsS "$MILINK_SERVER/api/health" >/dev/null 2>&1 && break
    "$MILINK" migrate list >/dev/null 2>&1 && break
    sleep 0.1
done

step "milink assess tailspin-src"
"$MILINK" assess tailspin-src

step "milink migrate start ... -d Customer360  (expected: refused, with the reasons)"
if "$MILINK" migrate start --source tailspin-src --target tailspin-dst -d Customer360; then
    echo "Customer360 should have been refused" >&2; exit 1
else
    echo "(refused with exit code $? as expected)"
fi

step "Application traffic: pgbench writing to ToyStore (4 clients)"
cat > "$WORK/writer.sql" <<'SQL'
\set c random(0, 99)
\set p random(1, 50)
BEGIN;
INSERT INTO orders (customer_id, status, ordered_at)
    SELECT customer_id, 'placed', now() FROM customers ORDER BY customer_id LIMIT 1 OFFSET :c;
UPDATE products SET stock = stock + 1 WHERE product_id = :p;
END;
SQL
PGPASSWORD=$(cat "$MILINK_PG_PASSWORD_FILE") "$PG_BIN/pgbench" -n -c 4 -T 900 --rate 200 -f "$WORK/writer.sql" \
    -h 127.0.0.1 -p "${MILINK_PG_SOURCE_PORT:-54311}" -U milink ToyStore >"$WORK/pgbench.log" 2>&1 &
WRITER_PID=$!

step "milink migrate start --source tailspin-src --target tailspin-dst -d ToyStore"
ID=$("$MILINK" -o json migrate start --source tailspin-src --target tailspin-dst -d ToyStore \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["migrations"][0]["id"])')
"$MILINK" migrate list

step "milink migrate watch $ID  (seeding, catching up, ready)"
"$MILINK" migrate watch "$ID" --until ready
"$MILINK" migrate list

step "milink migrate cutover $ID --confirm-traffic-stopped --wait"
"$MILINK" migrate cutover "$ID" --confirm-traffic-stopped --wait
wait "$WRITER_PID" 2>/dev/null || true
WRITER_PID=
echo "pgbench: $(grep -E 'number of transactions actually processed|aborted' "$WORK/pgbench.log" | head -n 2 | tr '\n' ' ')"

step "Data check with plain SQL (not milink): every table, row for row"
export PGPASSWORD
PGPASSWORD=$(cat "$MILINK_PG_PASSWORD_FILE")
q() { "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U milink -d ToyStore -c "$2"; }
SRC=${MILINK_PG_SOURCE_PORT:-54311}; DST=${MILINK_PG_TARGET_PORT:-54312}
TABLES=$(q "$SRC" "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1")
FAILED=0
printf '%-28s %12s %12s  %s\n' TABLE SOURCE TARGET CHECKSUM
for t in $TABLES; do
    sql="SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM $t x"
    read -r sc ss <<<"$(q "$SRC" "$sql")"; read -r tc ts <<<"$(q "$DST" "$sql")"
    verdict=equal; [[ $sc == "$tc" && $ss == "$ts" ]] || { verdict=DIFFERENT; FAILED=1; }
    printf '%-28s %12s %12s  %s\n' "$t" "$sc" "$tc" "$verdict"
done
seqs="SELECT string_agg(format('%s=%s', sequencename, coalesce(last_value, 0)), ' ' ORDER BY sequencename) FROM pg_sequences"
echo "sequences on source: $(q "$SRC" "$seqs")"
echo "sequences on target: $(q "$DST" "$seqs")"

step "milink migrate show $ID"
"$MILINK" migrate show "$ID"
if [[ $FAILED -ne 0 ]]; then echo "DATA CHECK FAILED" >&2; exit 1; fi
printf '\nTailspin migrated: ToyStore is on the target with every committed row; Customer360 was refused with its reasons.\n'
