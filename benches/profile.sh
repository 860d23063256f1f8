#!/usr/bin/env bash
# Profiles the gateway's whole request path under load: the method of benches/load.sh
# (wrk, 2 threads, 32 connections, bodies signed beforehand, tansu beside it), with
# `perf record` on the gateway process for the measured seconds, in each ack mode. Writes
# a flame graph per mode (LABEL-<mode>.svg under OUT, default docs/perf; the folded stacks
# in target/bench/LABEL-<mode>.folded) and prints the CPU by thread and the
# functions that take the most CPU, self time, each with its share.
#
#   bash benches/profile.sh                 # LABEL=now, both modes
#   LABEL=before MODES=spool bash benches/profile.sh
#
# The gateway is built with frame pointers (RUSTFLAGS, in target/profiling) so that perf
# can walk its stacks cheaply; librdkafka's C frames may show without their callers.
# perf's sampling costs the measured server a few percent: the figures of record are
# benches/load.sh's, without perf. Only loopback addresses are used; every run stops by
# itself. inferno (flame graphs) is installed into the tools cache when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/load/lib.sh
label=${LABEL:-now}
modes=${MODES:-"spool kafka"}
out=${OUT:-docs/perf}
seconds=${SECONDS_PER_RUN:-8}
frequency=${FREQUENCY:-499}
threads=2
connections=32
secret=bench-secret
gateway_port=18090
admin_port=19095
broker_port=19093
brokers=127.0.0.1:$broker_port
tools="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}"

for tool in perf wrk; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install linux-perf wrk)" >&2; exit 1; }
done
if [ ! -x "$tools/inferno/bin/inferno-flamegraph" ]; then
  cargo install --quiet inferno --version 0.12.3 --root "$tools/inferno"
fi
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/profiling \
  cargo build --release --quiet --bin waba-gateway
gateway=target/profiling/release/waba-gateway
tansu=$(bash tests/tools/install-tansu.sh | tail -n 1)
mkdir -p "$out"
bench_work

# The notifications of benches/load.sh, 2000 distinct signed ones per wrk thread.
write_templates "$work" change
sign_pool "$work/manifest" "$work/pool" profile $threads 2000 "$secret"

load() { # seconds, run name
  WRK_POOL=$work/pool WRK_MANIFEST=$work/manifest WRK_SECRET=$secret WRK_RUN=$2 \
    WRK_REPORT=$work/report-$2 wrk -t $threads -c $connections -d "${1}s" --timeout 10s \
    -s benches/load/notify.lua "http://127.0.0.1:$gateway_port/webhook" | tail -n 1
}

for mode in $modes; do
  "$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  broker=$!
  pids+=("$broker")
  sleep 1
  serve_gateway "$gateway" "$mode" "$work/spool" "$brokers" $gateway_port $admin_port "$work/gateway.log"
  pids+=("$server")
  load 2 "$mode-warm" >/dev/null
  perf record -q -F "$frequency" -g -p "$server" -o "$work/perf-$mode.data" -- sleep "$((seconds + 1))" \
    2>/dev/null &
  recorder=$!
  line=$(load "$seconds" "$mode")
  wait "$recorder" || true
  perf script -i "$work/perf-$mode.data" 2>/dev/null \
    | "$tools/inferno/bin/inferno-collapse-perf" >"$work/folded-$mode"
  "$tools/inferno/bin/inferno-flamegraph" --title "waba-gateway, ack = $mode ($label)" \
    <"$work/folded-$mode" >"$out/$label-$mode.svg"
  mkdir -p target/bench
  cp "$work/folded-$mode" "target/bench/$label-$mode.folded"
  echo
  echo "== ack = $mode ($label): $line"
  echo "flame graph: $out/$label-$mode.svg; most CPU, self time (share of all samples):"
  echo "by thread:"
  perf report -i "$work/perf-$mode.data" --no-children --sort comm --stdio 2>/dev/null \
    | grep -E "^ +[0-9.]+%" | head -n 12 || true
  echo "by function:"
  perf report -i "$work/perf-$mode.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -n "${TOP:-25}" || true
  kill "$server" "$broker" 2>/dev/null || true
  wait "$server" "$broker" 2>/dev/null || true
  pids=()
done
