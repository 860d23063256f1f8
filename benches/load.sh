#!/usr/bin/env bash
# The load benchmark: the gateway against a bare-hyper ceiling (examples/ceiling.rs, which
# reads the body and answers 200), side by side in one run on this machine, driven by wrk
# with the same connections and duration, on a real Kafka-protocol broker (tansu, as in
# the end-to-end suite, fresh for each run).
#
#   bash benches/load.sh
#
# For the ceiling and for the gateway in `kafka` and `spool` mode it prints requests/s,
# p50/p99/p99.9 latency, CPU microseconds per request of the server process (from
# /proc/<pid>/stat) and its peak RSS (VmHWM), each with its ratio to the ceiling; then the
# gateway's latency at half its maximum rate (open loop, examples/loadgen.rs, latency from
# each request's scheduled start); its latency against rate at seven fractions of its
# maximum, up to twice it, plotted as an SVG (PLOT, default target/bench/latency-vs-rate.svg); then 3 MB
# bodies of 1000 changes at 50 connections, in both modes. After each run, benches/load/verify.py reads the
# topics back (examples/readback.rs) and counts the changes of requests answered 200 that
# are not in Kafka.
#
# COMPRESSION sets the producer's compression.type (default: the gateway's own);
# SPLIT (change) sets `routing.split` ("item": one record per message, status and error);
# QUICK=1 runs only the ceiling and the two modes under wrk (no open loop, no curve, no
# 3 MB run), for comparisons such as benches/item-mode.sh.
#
# Small bodies are signed before each run, not while it is measured (POOL, default 2000
# distinct notifications per connection, sent in turn): signing in wrk's Lua takes the CPU
# the servers need, and halves the ceiling on a 2-core machine. POOL=0 signs every request
# in wrk instead (every request then a different notification). The 3 MB bodies are
# always signed in wrk: there are few of them.
#
# CONNECTIONS (32), THREADS (2), SECONDS_PER_RUN (8), BIG_SECONDS (3) set the load: by
# default the method of docs/PERFORMANCE.md (wrk with 2 threads, 32 connections, 8 s,
# bodies signed beforehand). With POOL=0, wrk runs one connection per thread (-t = -c),
# so each answer is counted against the body it answers. Only loopback addresses are used;
# every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/load/lib.sh
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
seconds=${SECONDS_PER_RUN:-8}
big_seconds=${BIG_SECONDS:-3}
big_connections=50
curve_seconds=${CURVE_SECONDS:-4}
plot=${PLOT:-target/bench/latency-vs-rate.svg}
split=${SPLIT:-change}
compression=${COMPRESSION:-}
quick=${QUICK:-0}
pool=${POOL:-2000}
secret=bench-secret
gateway_port=18080
admin_port=19090
ceiling_port=18081
broker_port=19092
brokers=127.0.0.1:$broker_port

need_wrk
cargo build --release --quiet --bin waba-gateway --example ceiling --example loadgen --example readback
gateway=target/release/waba-gateway
tansu=$(bash tests/tools/install-tansu.sh | tail -n 1)

bench_work

# The payloads: six of the project's own notifications (0.5-2 KB, some with several
# changes) and one 3 MB body of 1000 changes, as templates whose entry ids wrk replaces
# with each request's own id, and with their numbers of changes.
fixtures=("${BENCH_FIXTURES[@]}")
write_templates "$work" "$split"
python3 - "$work" "${fixtures[0]}" <<'PY'
import json, sys
work, first = sys.argv[1], sys.argv[2]
change = json.load(open(first))["entry"][0]["changes"][0]
changes = []
for i in range(1000):
    c = json.loads(json.dumps(change))
    message = c["value"]["messages"][0]
    message["id"] = f"wamid.BIG{i:06d}"
    message["text"]["body"] = ("Bestellung %d " % i) * 190
    changes.append(c)
big = {"object": "whatsapp_business_account", "entry": [{"id": "@UID@", "time": 1763770001, "changes": changes}]}
open(f"{work}/big.json", "w").write(json.dumps(big, ensure_ascii=False, separators=(",", ":")))
open(f"{work}/manifest-big", "w").write(f"1000 {work}/big.json\n")
PY
big_kb=$(( $(stat -c %s "$work/big.json") / 1024 ))

# Starts the gateway in ack mode $1 on a fresh spool; sets $server.
start_gateway() {
  local codec=()
  [ -z "$compression" ] || codec=("WABA_GATEWAY__KAFKA__LIBRDKAFKA__COMPRESSION_TYPE=$compression")
  serve_gateway "$gateway" "$1" "$work/spool" "$brokers" $gateway_port $admin_port "$work/gateway.log" \
    WABA_GATEWAY__ROUTING__SPLIT="$split" "${codec[@]}"
  pids+=("$server")
}
start_ceiling() {
  target/release/examples/ceiling 127.0.0.1:$ceiling_port &
  server=$!
  pids+=("$server")
  wait_port $ceiling_port
}

# wrk against $1 (URL) with manifest $2, $3 connections for $4 seconds, as run $5 (its
# answers go to $work/report-$5); measures process $server. Prints wrk's figures plus
# cpu_us_per_request and peak_rss_mb.
measure() {
  local before after line presigned=() wrk_threads=$3
  if [ "$2" = "$work/manifest" ] && [ "$pool" != 0 ]; then
    wrk_threads=$threads
    sign_pool "$work/manifest" "$work/pool-$5" "$5" "$wrk_threads" "$pool" "$secret"
    presigned=("WRK_POOL=$work/pool-$5")
  fi
  before=$(cpu_ticks "$server")
  line=$(env "${presigned[@]}" WRK_MANIFEST=$2 WRK_SECRET=$secret WRK_RUN=$5 WRK_REPORT=$work/report-$5 \
    wrk -t "$wrk_threads" -c "$3" -d "${4}s" --timeout 10s -s benches/load/notify.lua "$1" | tail -n 1)
  rm -rf "$work/pool-$5"
  after=$(cpu_ticks "$server")
  local hwm
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$server/status")
  echo "$line $(awk -v b="$before" -v a="$after" -v r="$(field "$line" requests)" -v t="$(getconf CLK_TCK)" -v h="$hwm" \
    'BEGIN { printf "cpu_us_per_request=%.1f peak_rss_mb=%.1f", (a - b) * 1e6 / t / (r > 0 ? r : 1), h / 1024 }')"
}
# How many changes of the requests answered 200 in runs $2... (manifest $1) are not in
# Kafka: "missing/expected" (missing_changes, benches/load/lib.sh).
missing() {
  local manifest=$1 presigned=0
  shift
  [ "$manifest" = "$work/manifest" ] && presigned=$pool
  missing_changes "$manifest" "$presigned" "$@"
}

# Latency against rate for the server at URL $1 whose maximum under wrk is $2 requests/s:
# the open-loop generator at fractions of that maximum, CURVE_SECONDS each, up to twice it
# (the generator signs in Rust, cheaper than wrk's Lua: the knee is past wrk's maximum;
# past the knee requests queue and the latency climbs steeply). Appends
# `name fraction rate p50_ms p99_ms non2xx` lines to $work/curve for server name $3.
curve() {
  local fraction rate line
  for fraction in 0.25 0.5 0.75 1.0 1.25 1.5 2.0; do
    rate=$(awk -v m="$2" -v f="$fraction" 'BEGIN { printf "%d", m * f }')
    line=$(target/release/examples/loadgen "$1" $secret "$connections" "$curve_seconds" "$rate" "${fixtures[@]}")
    echo "$3 $fraction $rate $(field "$line" p50_ms) $(field "$line" p99_ms) $(field "$line" non2xx)" >>"$work/curve"
  done
}

declare -A row
# The ceiling.
start_ceiling
measure "http://127.0.0.1:$ceiling_port/webhook" "$work/manifest" "$connections" 2 ceiling-warm >/dev/null
row[ceiling]=$(measure "http://127.0.0.1:$ceiling_port/webhook" "$work/manifest" "$connections" "$seconds" ceiling)
row[ceiling_big]=$(measure "http://127.0.0.1:$ceiling_port/webhook" "$work/manifest-big" $big_connections "$big_seconds" ceiling-big)
ceiling_rps=$(awk -v r="$(field "${row[ceiling]}" requests)" -v s="$(field "${row[ceiling]}" seconds)" 'BEGIN { printf "%d", r / s }')
[ "$quick" = 1 ] || curve "http://127.0.0.1:$ceiling_port/webhook" "$ceiling_rps" ceiling
stop_all

declare -A half missing_records
for mode in kafka spool; do
  start_broker
  start_gateway $mode
  measure "http://127.0.0.1:$gateway_port/webhook" "$work/manifest" "$connections" 2 $mode-warm >/dev/null
  row[$mode]=$(measure "http://127.0.0.1:$gateway_port/webhook" "$work/manifest" "$connections" "$seconds" $mode)
  missing_records[$mode]=$(missing "$work/manifest" $mode-warm $mode)
  if [ "$quick" = 1 ]; then stop_all; continue; fi
  rps=$(awk -v r="$(field "${row[$mode]}" requests)" -v s="$(field "${row[$mode]}" seconds)" 'BEGIN { printf "%d", r / s }')
  half[$mode]="$((rps / 2)) $(target/release/examples/loadgen "http://127.0.0.1:$gateway_port/webhook" $secret "$connections" "$seconds" $((rps / 2)) "${fixtures[@]}")"
  curve "http://127.0.0.1:$gateway_port/webhook" "$rps" "gateway-$mode"
  stop_all
  # 3 MB bodies, on a fresh broker.
  start_broker
  start_gateway $mode
  row[${mode}_big]=$(measure "http://127.0.0.1:$gateway_port/webhook" "$work/manifest-big" $big_connections "$big_seconds" $mode-big)
  missing_records[${mode}_big]=$(missing "$work/manifest-big" $mode-big)
  stop_all
done
if [ "$quick" != 1 ]; then
  mkdir -p "$(dirname "$plot")"
  python3 benches/load/plot.py "$work/curve" "$plot"
fi

report() { # name, row, ceiling row, missing
  local r=$2 c=$3
  awk -v name="$1" -v req="$(field "$r" requests)" -v s="$(field "$r" seconds)" \
    -v p50="$(field "$r" p50_us)" -v p99="$(field "$r" p99_us)" -v p999="$(field "$r" p999_us)" \
    -v cpu="$(field "$r" cpu_us_per_request)" -v rss="$(field "$r" peak_rss_mb)" \
    -v non2xx="$(field "$r" non2xx)" -v errs="$(field "$r" socket_errors)" -v missing="$4" \
    -v creq="$(field "$c" requests)" -v cs="$(field "$c" seconds)" -v ccpu="$(field "$c" cpu_us_per_request)" \
    -v crss="$(field "$c" peak_rss_mb)" 'BEGIN {
      rps = req / s; crps = creq / cs
      printf "%-14s %8.0f %8.2f %8.2f %8.2f %9.1f %9.1f %7d %7d %8s | %6.2fx %6.2fx %6.2fx\n",
        name, rps, p50 / 1000, p99 / 1000, p999 / 1000, cpu, rss, non2xx, errs, missing,
        rps / crps, cpu / ccpu, rss / crss }'
}
echo
echo "waba-gateway load: $(nproc) cores, wrk $threads threads $connections connections x ${seconds}s, bodies $( [ "$pool" = 0 ] && echo "signed in wrk" || echo "signed beforehand ($pool per thread)"), split $split, compression ${compression:-default}, broker tansu ($brokers), $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-14s %8s %8s %8s %8s %9s %9s %7s %7s %8s | %7s %7s %7s\n' server rps "p50 ms" "p99 ms" "p99.9 ms" \
  "cpu us/r" "rss MB" non2xx errors missing "rps/c" "cpu/c" "rss/c"
report ceiling "${row[ceiling]}" "${row[ceiling]}" -
report "gateway kafka" "${row[kafka]}" "${row[ceiling]}" "${missing_records[kafka]}"
report "gateway spool" "${row[spool]}" "${row[ceiling]}" "${missing_records[spool]}"
if [ "$quick" = 1 ]; then
  echo
  echo "missing: records of requests answered 200 not found in Kafka / records expected, read back by event_id."
  exit 0
fi
echo
echo "half the maximum rate, open loop ($connections connections, ${seconds}s):"
for mode in kafka spool; do
  read -r rate line <<<"${half[$mode]}"
  echo "  gateway $mode at $rate rps: p50 $(field "$line" p50_ms) ms, p99 $(field "$line" p99_ms) ms, non2xx $(field "$line" non2xx)"
done
echo
echo "${big_kb} KB bodies of 1000 changes, $big_connections connections x ${big_seconds}s:"
report ceiling "${row[ceiling_big]}" "${row[ceiling_big]}" -
report "gateway kafka" "${row[kafka_big]}" "${row[ceiling_big]}" "${missing_records[kafka_big]}"
report "gateway spool" "${row[spool_big]}" "${row[ceiling_big]}" "${missing_records[spool_big]}"
echo
echo "latency against rate, open loop ($connections connections, ${curve_seconds}s a point): $plot"
printf '  %-14s %8s %8s %8s %8s %7s\n' server fraction rps "p50 ms" "p99 ms" non2xx
awk '{ printf "  %-14s %8s %8s %8s %8s %7s\n", $1, $2, $3, $4, $5, $6 }' "$work/curve"
echo
echo "missing: changes of requests answered 200 not found in Kafka / changes expected, read"
echo "back from the broker by event_id once the spool (if any) was empty."
# Why any request was not answered 2xx, in the gateway's own words (its log, all runs).
if grep -q "not accepted" "$work/gateway.log"; then
  echo
  echo "notifications not accepted (503), by the gateway's reason:"
  grep "not accepted" "$work/gateway.log" | sed -e 's/.*error=//' -e 's/"//g' | cut -c1-120 | sort | uniq -c
fi
