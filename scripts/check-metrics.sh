#!/usr/bin/env bash
# Checks that /metrics is valid Prometheus exposition (`promtool check metrics`: every metric has
# HELP and TYPE, names and units follow the conventions) in every role: an embedded node, and an
# api, a writer and a reader node of a distributed deployment over NATS and PostgreSQL. Each
# node is scraped after an event went through it, so the metrics of the write path exist.
#
# usage: scripts/check-metrics.sh [path/to/vigil]
# needs: promtool (Debian package prometheus), nats-server on 127.0.0.1:4222, PostgreSQL on
# 127.0.0.1:5432 with trust auth (createdb/dropdb), curl.
set -euo pipefail
VIGIL=${1:-target/debug/vigil}
work=$(mktemp -d)
ns="metrics$$"
db="vigil_metrics_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  dropdb -h 127.0.0.1 -U postgres --if-exists "$db" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "node on port $1 did not become ready; its log:" >&2; cat "$2" >&2; return 1
}
check() { # name port
  local body="$work/$1.metrics"
  curl -sf "http://127.0.0.1:$2/metrics" >"$body"
  if promtool check metrics <"$body"; then
    echo "ok: /metrics of the $1 node ($(grep -c '^# TYPE' "$body") metrics)"
  else
    echo "FAILED: /metrics of the $1 node" >&2; return 1
  fi
}
send_event() { # port token
  curl -sf -X POST "http://127.0.0.1:$1/v1/events" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d '{"type":"metrics.check","severity":3}' >/dev/null
}

# The dashboard's queries are valid PromQL and name only metrics vigil exports.
python3 - "$work/dashboard-rules.yml" <<'PY'
import json, sys
dash = json.load(open("deploy/grafana/vigil.json"))
exprs = [t["expr"].replace("$__rate_interval", "5m") for p in dash["panels"] for t in p["targets"]]
with open(sys.argv[1], "w") as f:
    f.write("groups:\n- name: dashboard\n  rules:\n")
    for i, e in enumerate(exprs):
        f.write(f"  - record: vigil:dashboard:{i}\n    expr: {json.dumps(e)}\n")
PY
promtool check rules "$work/dashboard-rules.yml" >/dev/null
echo "ok: deploy/grafana/vigil.json queries are valid PromQL"

# Embedded.
port=$(free_port)
"$VIGIL" serve --data-dir "$work/embedded" --listen "127.0.0.1:$port" >"$work/embedded.log" 2>&1 &
pids+=($!)
wait_ready "$port" "$work/embedded.log"
send_event "$port" "$(cat "$work/embedded/admin.key")"
sleep 1.5 # a checkpoint is signed within --checkpoint-interval
check embedded "$port"

# Distributed: api, writer and reader as separate processes sharing PostgreSQL.
createdb -h 127.0.0.1 -U postgres "$db"
store="postgres://postgres@127.0.0.1/$db"
common=(--store "$store" --nats nats://127.0.0.1:4222 --nats-namespace "$ns" --data-dir "$work/dist")
api=$(free_port); writer=$(free_port); reader=$(free_port)
"$VIGIL" serve --roles api --listen "127.0.0.1:$api" "${common[@]}" >"$work/api.log" 2>&1 &
pids+=($!)
wait_ready "$api" "$work/api.log"
"$VIGIL" writer --listen "127.0.0.1:$writer" "${common[@]}" >"$work/writer.log" 2>&1 &
pids+=($!)
"$VIGIL" reader --listen "127.0.0.1:$reader" "${common[@]}" >"$work/reader.log" 2>&1 &
pids+=($!)
wait_ready "$writer" "$work/writer.log"
wait_ready "$reader" "$work/reader.log"
send_event "$api" "$(cat "$work/dist/admin.key")"
sleep 2 # the writer appends, the signer signs
check api "$api"
check writer "$writer"
check reader "$reader"

# Every metric the dashboard names is one some node exported above.
exported=$(cat "$work"/*.metrics | sed -n 's/^# TYPE \([a-z_]*\) .*/\1/p' | sort -u)
missing=""
for m in $(grep -o 'vigil_[a-z_]*' deploy/grafana/vigil.json | sed 's/_bucket$//; s/_count$//; s/_sum$//' | sort -u); do
  echo "$exported" | grep -qx "$m" || missing="$missing $m"
done
if [ -n "$missing" ]; then
  # Metrics that only appear once their event happened (a seal, a dead letter, a failure).
  for m in $missing; do
    grep -rq "\"$m\"" crates/*/src || { echo "FAILED: the dashboard names $m, which no crate exports" >&2; exit 1; }
  done
fi
echo "ok: every metric of the dashboard is exported by vigil"
