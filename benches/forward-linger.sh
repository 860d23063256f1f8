#!/usr/bin/env bash
# The spool forwarder's batching: delivery.forward_linger_ms against throughput and CPU,
# in ack = "spool" mode on a real Kafka-protocol broker (tansu, in memory, fresh for each
# value). For each linger: the maximum rate (closed loop, examples/loadgen.rs), the
# gateway's CPU microseconds per request (tokio, the forwarder and librdkafka together),
# the p99, and how long the forwarder took after the run to empty the spool.
#
#   bash benches/forward-linger.sh
#
# LINGERS ("1 5 20 50"), CONNECTIONS (16), SECONDS_PER_RUN (10) set the runs. Only loopback
# addresses are used; every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
lingers=${LINGERS:-1 5 20 50}
connections=${CONNECTIONS:-16}
seconds=${SECONDS_PER_RUN:-10}
secret=bench-secret
port=18080
admin=19090
brokers=127.0.0.1:19092

cargo build --release --quiet --bin waba-gateway --example loadgen
gateway=target/release/waba-gateway
loadgen=target/release/examples/loadgen
tansu=$(bash tests/tools/install-tansu.sh | tail -n 1)
fixtures=(tests/fixtures/messages_text.json tests/fixtures/messages_status_delivered.json
  tests/fixtures/messages_interactive_button_reply.json tests/fixtures/message_template_status_update.json
  tests/fixtures/messages_two_changes_one_entry.json tests/fixtures/messages_order.json)
work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

printf '%-10s %8s %10s %8s %9s\n' "linger ms" rps "cpu us/r" "p99 ms" "drain s"
for linger in $lingers; do
  "$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  pids+=($!)
  sleep 1
  rm -rf "$work/spool"
  WABA_GATEWAY__DELIVERY__ACK=spool \
  WABA_GATEWAY__DELIVERY__FORWARD_LINGER_MS="$linger" \
  WABA_GATEWAY__DELIVERY__SPOOL_DIR="$work/spool" \
  WABA_GATEWAY__KAFKA__BROKERS=$brokers \
  WABA_GATEWAY__KAFKA__TOPIC_PARTITIONS=3 \
  WABA_GATEWAY__APPS__DEFAULT__SECRET=$secret \
  WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN=bench \
  WABA_GATEWAY__SERVER__LISTEN=127.0.0.1:$port \
  WABA_GATEWAY__ADMIN__LISTEN=127.0.0.1:$admin \
  WABA_GATEWAY__LOG__LEVEL=warn \
  WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS=0 \
    "$gateway" serve 2>>"$work/gateway.log" &
  server=$!
  pids+=("$server")
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && break
    sleep 0.1
  done
  url=http://127.0.0.1:$port/webhook
  "$loadgen" "$url" $secret "$connections" 2 0 "${fixtures[@]}" >/dev/null # warm-up
  before=$(cpu_ticks "$server")
  line=$("$loadgen" "$url" $secret "$connections" "$seconds" 0 "${fixtures[@]}")
  ended=$(date +%s.%N)
  for _ in $(seq 600); do
    [ "$(metric waba_gateway_spool_entries)" = 0 ] && break
    sleep 0.1
  done
  drained=$(date +%s.%N)
  after=$(cpu_ticks "$server")
  awk -v l="$linger" -v rps="$(field "$line" rps)" -v req="$(field "$line" requests)" -v p99="$(field "$line" p99_ms)" \
    -v b="$before" -v a="$after" -v t="$(getconf CLK_TCK)" -v e="$ended" -v d="$drained" \
    'BEGIN { printf "%-10s %8d %10.1f %8.2f %9.1f\n", l, rps, (a - b) * 1e6 / t / req, p99, d - e }'
  stop_all
done
