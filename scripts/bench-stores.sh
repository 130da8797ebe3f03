#!/usr/bin/env bash
# Ingest and query figures for one store backend on a seeded 1 M-event data set, so the
# embedded store and PostgreSQL can be compared side by side on the same machine.
#
#   scripts/bench-stores.sh embedded                  # a fresh data directory
#   scripts/bench-stores.sh postgres://postgres@127.0.0.1/vigil_bench   # an empty database
#
# Needs a release build (cargo build --release) and jq. EVENTS (default 1000000) and
# BENCH_PORT (default 7979) can be overridden. Prints one JSON report per measurement.
set -euo pipefail

store=${1:?usage: $0 embedded|postgres://…}
events=${EVENTS:-1000000}
port=${BENCH_PORT:-7979}
bin=./target/release/vigil
dir=$(mktemp -d /tmp/vigil-bench.XXXXXX)
export VIGIL_URL=http://127.0.0.1:$port

"$bin" serve --listen 127.0.0.1:$port --data-dir "$dir/data" --store "$store" \
    --log-level warn >"$dir/stdout" 2>"$dir/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "listening" "$dir/stdout" && break; sleep 0.1; done

export VIGIL_TOKEN=$(cat "$dir/data/admin.key")
VIGIL_TOKEN=$("$bin" keys create --name bench --tenant bench \
    --scopes events:write,events:read -o json | jq -r .key)
export VIGIL_TOKEN

run() { echo "## $*" >&2; "$bin" bench "$@" -o json; }

# Durable batched ingest of the data set, then single-event requests on top of it.
run --mode batch --connections 4 --batch-size 1000 --events "$events" --duration 1h --seed 1
run --mode single --connections 64 --duration 15s --seed 2

# PostgreSQL plans by table statistics, which autovacuum gathers within a minute or so of a
# bulk load; gather them now rather than measure the minute before.
case $store in
    embedded) ;;
    *) psql "$store" -qc "VACUUM ANALYZE vigil_events" ;;
esac

# Queries, newest first, one connection (latency), 400 requests each.
for q in 'limit=10' \
         'actor.id=u-{rand}&limit=10' \
         'resource.id=acct-{rand}&limit=10' \
         'q=severity>7&limit=10' \
         'q=severity>=9 AND type:login.failed&limit=10' \
         'details.plan=pro&q=details.amount>900&limit=10'; do
    pool=()
    case $q in actor*) pool=(--pool 5000) ;; resource*) pool=(--pool 20000) ;; esac
    run --mode query --connections 1 --requests 400 --query "$q" "${pool[@]}" --seed 3
done
run --mode count --connections 1 --requests 50 --query 'type=login.failed' --seed 3
case $store in
    embedded) du -sh "$dir/data" >&2 ;;
    *) psql "$store" -Atc "SELECT 'database size: ' || pg_size_pretty(pg_database_size(current_database()))" >&2 ;;
esac
