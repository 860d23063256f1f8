#!/usr/bin/env bash
# ack = "spool" against ack = "kafka", side by side on this machine and the same kind of
# broker: the maximum rate (closed loop), the latency at half of it (open loop), and
# fsyncs per second against requests per second (group commit at work). In spool mode
# the maximum rate is how fast notifications are made durable; "backlog" is what the
# forwarder had still to send to Kafka when that run ended, "drain s" how long it took.
#
#   bash benches/ack-modes.sh
#
# BROKERS=host:port uses an external broker (for both modes); the default runs each
# gateway on its embedded broker. CONNECTIONS (32), SECONDS_PER_RUN (10) and REPEATS (3,
# latency runs per mode, the median reported) set the load.
# Only loopback addresses are used; every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${CONNECTIONS:-32}
repeats=${REPEATS:-3}
seconds=${SECONDS_PER_RUN:-10}
brokers=${BROKERS:-embedded}
secret=bench-secret
port=18080
admin=19090

cargo build --release --quiet --bin waba-gateway --example loadgen
gateway=target/release/waba-gateway
loadgen=target/release/examples/loadgen
fixtures=(tests/fixtures/messages_text.json tests/fixtures/messages_status_delivered.json
  tests/fixtures/messages_interactive_button_reply.json tests/fixtures/message_template_status_update.json
  tests/fixtures/messages_two_changes_one_entry.json tests/fixtures/messages_order.json)
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# Starts a gateway in ack mode $1 on a fresh spool, and waits until it is ready.
start() {
  sync
  rm -rf "$work/spool-$1"
  WABA_GATEWAY__DELIVERY__ACK=$1 \
  WABA_GATEWAY__DELIVERY__SPOOL_DIR="$work/spool-$1" \
  WABA_GATEWAY__KAFKA__BROKERS="$brokers" \
  WABA_GATEWAY__KAFKA__EMBEDDED_ADDRESS_FILE="$work/embedded-$1" \
  WABA_GATEWAY__APPS__DEFAULT__SECRET=$secret \
  WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN=bench \
  WABA_GATEWAY__SERVER__LISTEN=127.0.0.1:$port \
  WABA_GATEWAY__ADMIN__LISTEN=127.0.0.1:$admin \
  WABA_GATEWAY__LOG__LEVEL=warn \
  WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS=0 \
    "$gateway" serve 2>>"$work/gateway-$1.log" &
  pid=$!
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && break
    sleep 0.1
  done
  "$loadgen" "$url" $secret "$connections" 2 0 "${fixtures[@]}" >/dev/null # warm-up
}

stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }

url="http://127.0.0.1:$port/webhook"
declare -A result
for mode in kafka spool; do
  start $mode
  fsyncs_before=$(metric waba_gateway_spool_fsyncs_total)
  max=$("$loadgen" "$url" $secret "$connections" "$seconds" 0 "${fixtures[@]}")
  fsyncs_after=$(metric waba_gateway_spool_fsyncs_total)
  rps=$(field "$max" rps)
  # In spool mode answers can outpace forwarding: report what was left to forward when
  # the run ended, and how long the forwarder took to send it.
  backlog=$(metric waba_gateway_spool_entries); backlog=${backlog:-0}
  drain_started=$(date +%s.%N)
  while [ "$mode" = spool ] && [ "$(metric waba_gateway_spool_entries)" != 0 ]; do sleep 0.2; done
  drain=$(awk -v a="$drain_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  stop
  # Latency at half the maximum rate, on a fresh gateway after the disk settled; the
  # median of $repeats runs, since a shared disk's fsync tail varies from run to run.
  half=$(for _ in $(seq "$repeats"); do
    start $mode
    "$loadgen" "$url" $secret "$connections" "$seconds" $((rps / 2)) "${fixtures[@]}"
    stop
  done | sort -t= -k6 -n | awk -v n="$repeats" 'NR == int((n + 1) / 2)')
  result[$mode]="$rps $(field "$max" p50_ms) $(field "$max" p99_ms) $(field "$max" non2xx) \
$((rps / 2)) $(field "$half" p50_ms) $(field "$half" p99_ms) $(field "$half" non2xx) \
$(awk -v a="$fsyncs_before" -v b="$fsyncs_after" -v s="$seconds" 'BEGIN { printf "%.0f", (b - a) / s }') \
${backlog%.*} $drain"
done

echo
echo "waba-gateway ack modes: $(nproc) cores, $connections connections, ${seconds}s per run, brokers=$brokers"
printf '%-6s %9s %9s %9s %7s | %9s %9s %9s %7s | %9s %8s %8s\n' mode "max rps" "p50 ms" "p99 ms" non2xx \
  "half rps" "p50 ms" "p99 ms" non2xx "fsyncs/s" backlog "drain s"
for mode in kafka spool; do
  # shellcheck disable=SC2086
  printf '%-6s %9s %9s %9s %7s | %9s %9s %9s %7s | %9s %8s %8s\n' $mode ${result[$mode]}
done
read -r kafka_rps _ <<<"${result[kafka]}"
# Like for like: spool at the load the kafka mode was measured at (half its maximum).
start spool
same=$("$loadgen" "$url" $secret "$connections" "$seconds" $((kafka_rps / 2)) "${fixtures[@]}")
stop
echo "spool at half the kafka mode's maximum ($((kafka_rps / 2)) rps): p50 $(field "$same" p50_ms) ms, p99 $(field "$same" p99_ms) ms, non2xx $(field "$same" non2xx)"
read -r spool_rps _ _ _ _ _ spool_half_p99 _ spool_fsyncs <<<"${result[spool]}"
awk -v s="$spool_rps" -v k="$kafka_rps" -v f="$spool_fsyncs" -v p="$spool_half_p99" 'BEGIN {
  printf "spool/kafka throughput: %.2fx (target >= 0.8)\n", s / k
  printf "spool requests per fsync: %.1f (group commit)\n", s / (f > 0 ? f : 1)
  printf "spool p99 at half the maximum rate: %s ms (target <= 10)\n", p
}'
