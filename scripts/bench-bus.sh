#!/usr/bin/env bash
# The distributed pipeline on one machine: NATS JetStream, one vigil node with the api, writer
# and reader roles over a store, and `vigil generate` as the producer.
#
#   scripts/bench-bus.sh                       # embedded store, NATS at 127.0.0.1:4222
#   STORE=postgres://postgres@127.0.0.1/vigil_bench scripts/bench-bus.sh
#
# 1. publish rate: `vigil generate --nats --rate 0` puts EVENTS (default 1000000) events into
#    the stream while no writer runs (its summary line);
# 2. writer rate: a node starts over that backlog; the time until all EVENTS are stored;
# 3. end-to-end lag at RATE (default 10000) events/s for 30 s on a fresh node and namespace:
#    `vigil_bus_event_lag_seconds` from /metrics, the time from JetStream's receipt of an event
#    to the end of the store append that made it durable and queryable.
# Needs a release build (cargo build --release) and jq. Each run uses its own namespace and
# deletes nothing from NATS but its streams' contents (work-queue streams empty as writers ack).
set -euo pipefail

nats=${NATS:-nats://127.0.0.1:4222}
store=${STORE:-embedded}
events=${EVENTS:-1000000}
rate=${RATE:-10000}
port=${BENCH_PORT:-7980}
bin=./target/release/vigil
dir=$(mktemp -d /tmp/vigil-bus-bench.XXXXXX)
ns=bench$$
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

start() { # start NAMESPACE DATA-DIR
    : >"$dir/stdout"
    "$bin" serve --listen 127.0.0.1:$port --data-dir "$2" --store "$store" --log-level warn \
        --nats "$nats" --nats-namespace "$1" >"$dir/stdout" 2>>"$dir/server.log" &
    server=$!
    for _ in $(seq 300); do grep -q "listening" "$dir/stdout" && return; sleep 0.1; done
    echo "server did not start" >&2; cat "$dir/server.log" >&2; exit 1
}
stop() { kill -TERM $server; wait $server || true; server=; }
count() { # count KEY: events of the key's tenant
    curl -fsS -H "Authorization: Bearer $1" "http://127.0.0.1:$port/v1/events/count" | jq .count
}
now() { date +%s.%N; }

# 1. The stream and the consumer exist once a node started; then a backlog with no writer.
start "$ns" "$dir/data"
stop
echo "## generator: $events events, as fast as JetStream acknowledges" >&2
"$bin" generate --nats "$nats" --nats-namespace "$ns" --tenant bench --rate 0 --seed 1 \
    --count "$events" --batch-size 1000 -o json

# 2. A node over the backlog: how fast its writer drains it into the store (counted with a
# key of the generator's tenant).
start "$ns" "$dir/data"
t0=$(now)
key=$(VIGIL_URL=http://127.0.0.1:$port VIGIL_TOKEN=$(cat "$dir/data/admin.key") \
    "$bin" keys create --name bench --tenant bench --scopes events:read -o json | jq -r .key)
while [ "$(count "$key")" -lt "$events" ]; do sleep 0.2; done
t1=$(now)
jq -n --argjson n "$events" --argjson s "$(echo "$t1 - $t0" | bc -l)" \
    '{writer: {events: $n, seconds: $s, events_per_second: ($n / $s | floor)}}'
stop

# 3. Steady load on a fresh node: the lag from JetStream to the store.
ns2=${ns}lag
case $store in embedded) rm -rf "$dir/data2" ;; esac
start "$ns2" "$dir/data2"
echo "## end to end: $rate events/s for 30 s" >&2
"$bin" generate --nats "$nats" --nats-namespace "$ns2" --tenant bench --rate "$rate" --seed 2 \
    --count $((rate * 30)) --batch-size 100 -o json
sleep 1
curl -fsS "http://127.0.0.1:$port/metrics" | grep '^vigil_bus_event_lag_seconds' |
    jq -R -s '{lag_seconds: (split("\n") | map(select(length > 0) | capture("quantile=\"(?<q>[0-9.]+)\"} (?<v>[0-9.e+-]+)") | {(.q): (.v | tonumber)}) | add)}'
stop
