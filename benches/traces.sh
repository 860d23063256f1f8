#!/usr/bin/env bash
# What traces cost: the gateway's throughput and CPU per request with tracing off, on at
# 100% sampling and on at 10% (parentbased_traceidratio 0.1), in both ack modes, all in one
# run on this machine, as ratios to tracing off. The collector is a local OTLP/HTTP
# endpoint that reads each export and answers 200 (the load benchmark's ceiling server),
# so that what is measured is the gateway's cost of making, batching, encoding and
# sending spans.
#
# Method as benches/load.sh: wrk, 2 threads x 32 connections, notifications signed
# beforehand (2000 per thread); tansu (memory storage) as the broker, fresh for every run.
# Each setting runs ROUNDS times (default 3), the settings interleaved so that drift hits
# them alike; the table gives medians.
#
#   bash benches/traces.sh        # ~5 minutes
#   ROUNDS=1 SECONDS_PER_RUN=4 bash benches/traces.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/load/lib.sh

connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
seconds=${SECONDS_PER_RUN:-8}
rounds=${ROUNDS:-3}
modes=${MODES:-"kafka spool"}
pool=${POOL:-2000}
secret=bench-secret
gateway_port=18080
admin_port=19090
collector_port=18083
broker_port=19092
brokers=127.0.0.1:$broker_port

need_wrk
cargo build --release --quiet --bin waba-gateway --example ceiling
gateway=target/release/waba-gateway
tansu=$(bash tests/tools/install-tansu.sh | tail -n 1)

bench_work
write_templates "$work" change
target/release/examples/ceiling 127.0.0.1:$collector_port &
collector=$!
pids+=($collector)
wait_port $collector_port

tracing_env() {
  case $1 in
    off) ;;
    full) echo "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$collector_port OTEL_TRACES_SAMPLER=always_on" ;;
    tenth) echo "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$collector_port OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1" ;;
  esac
}

metric() { curl -s "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m { s += $2 } END { printf "%d", s }'; }

# One run: prints "rps cpu_us_per_request exported dropped non2xx collector_cpu_us_per_request"
# (the CPU of the gateway, and of the collector, over the measured seconds).
run() {
  local mode=$1 tracing=$2 tag=$3 broker line before after requests cbefore cafter
  "$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  broker=$!
  wait_port $broker_port
  # shellcheck disable=SC2046
  serve_gateway "$gateway" "$mode" "$work/spool" "$brokers" $gateway_port $admin_port "$work/gateway.log" \
    OTEL_BSP_SCHEDULE_DELAY=1000 $(tracing_env "$tracing")
  for phase in warm measured; do
    sign_pool "$work/manifest" "$work/pool" "$tag-$phase" "$threads" "$pool" "$secret"
    [ $phase = warm ] && duration=2 || duration=$seconds
    before=$(cpu_ticks "$server")
    cbefore=$(cpu_ticks "$collector")
    line=$(WRK_POOL=$work/pool WRK_MANIFEST=$work/manifest WRK_SECRET=$secret WRK_RUN=$tag-$phase \
      WRK_REPORT=$work/report wrk -t "$threads" -c "$connections" -d "${duration}s" --timeout 10s \
      -s benches/load/notify.lua "http://127.0.0.1:$gateway_port/webhook" | tail -n 1)
    after=$(cpu_ticks "$server")
    cafter=$(cpu_ticks "$collector")
    rm -rf "$work/pool"
  done
  requests=$(field "$line" requests)
  sleep 1.5 # the last batch of spans
  echo "$(awk -v r="$requests" -v s="$(field "$line" seconds)" -v b="$before" -v a="$after" -v t="$(getconf CLK_TCK)" \
    'BEGIN { printf "%d %.1f", r / s, (a - b) * 1e6 / t / (r > 0 ? r : 1) }') \
$(metric waba_gateway_trace_spans_exported_total) $(metric waba_gateway_trace_spans_dropped_total) $(field "$line" non2xx) \
$(awk -v r="$requests" -v b="$cbefore" -v a="$cafter" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (a - b) * 1e6 / t / (r > 0 ? r : 1) }')"
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  kill -TERM "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
}

declare -A results
for mode in $modes; do
  for round in $(seq "$rounds"); do
    for tracing in off full tenth; do
      result=$(run $mode $tracing "$mode-$tracing-$round")
      echo "  $mode $tracing round $round: $result" >&2
      results[$mode-$tracing]+="$result"$'\n'
    done
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "waba-gateway traces: $(nproc) cores, wrk $threads threads $connections connections x ${seconds}s, bodies signed beforehand, tansu, $rounds rounds (medians), $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-6s %-22s %8s %9s %8s %8s %10s %9s %7s %12s\n' mode tracing rps "cpu us/r" "rps/off" "cpu/off" "spans/req" dropped non2xx "collector us/r"
for mode in $modes; do
  off_rps=$(cut -d' ' -f1 <<<"${results[$mode-off]}" | grep . | median)
  off_cpu=$(cut -d' ' -f2 <<<"${results[$mode-off]}" | grep . | median)
  for tracing in off full tenth; do
    rows=$(grep . <<<"${results[$mode-$tracing]}")
    rps=$(cut -d' ' -f1 <<<"$rows" | median)
    cpu=$(cut -d' ' -f2 <<<"$rows" | median)
    # Spans per request over all rounds (exported and dropped, warm-up included in both).
    spans=$(awk '{ s += $3 + $4 } END { printf "%d", s }' <<<"$rows")
    dropped=$(awk '{ s += $4 } END { printf "%d", s }' <<<"$rows")
    non2xx=$(awk '{ s += $5 } END { printf "%d", s }' <<<"$rows")
    collector_cpu=$(cut -d' ' -f6 <<<"$rows" | median)
    label=$tracing
    [ "$tracing" = full ] && label="on, 100% sampled"
    [ "$tracing" = tenth ] && label="on, 10% sampled"
    awk -v m="$mode" -v l="$label" -v r="$rps" -v c="$cpu" -v orps="$off_rps" -v ocpu="$off_cpu" -v s="$spans" \
      -v d="$dropped" -v n="$non2xx" -v rounds="$rounds" -v secs="$seconds" -v cc="$collector_cpu" 'BEGIN {
        printf "%-6s %-22s %8d %9.1f %7.0f%% %7.2fx %10s %9d %7d %12.1f\n", m, l, r, c, 100 * r / orps, c / ocpu,
          (s > 0 ? sprintf("%.1f", s / (r * (secs + 2) * rounds)) : "-"), d, n, cc }'
  done
done
echo
echo "rps/off: throughput as a share of tracing off (targets: >= 85% at 100%, >= 95% at 10%)."
echo "spans/req: spans exported or dropped per request (approximate: over all runs, warm-up included)."
echo "collector us/r: the local collector's CPU per request, taken from the same two cores."
