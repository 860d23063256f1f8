#!/usr/bin/env bash
# The gateway of two revisions side by side, in one run on this machine: the ceiling
# (examples/ceiling.rs, bare hyper reading the body and answering 200), the BEFORE
# revision and the working tree, in each ack mode, measured the way of docs/PERFORMANCE.md
# (wrk, 2 threads x 32 connections, 8 s, notifications signed beforehand, tansu with
# memory storage, fresh for every run). Each round runs the ceiling, then each mode with
# both binaries, their order alternating from round to round, so that drift hits them
# alike; the table gives medians over ROUNDS (default 3) of requests/s, CPU µs per request
# of the server process (/proc/<pid>/stat) and its ratio to the ceiling of the same round,
# wrk's p99, and after every gateway run, the changes of the requests answered 200 that
# are not in Kafka (read back by event_id, benches/load/verify.py), out of how many. Then
# each binary's p99 at half its median maximum rate (open loop, examples/loadgen.rs).
#
#   BEFORE=ce44bde bash benches/before-after.sh          # ~8 minutes, plus the first build
#   BEFORE=HEAD AFTER_ENV="WABA_GATEWAY__KAFKA__LIBRDKAFKA__COMPRESSION_TYPE=none" \
#     bash benches/before-after.sh                      # one binary, two settings
#   PEER=1 BEFORE=ce44bde bash benches/before-after.sh  # and the Express peer each round
#
# FLOOR=1 adds to every round examples/floor.rs in each mode: the least a receiver does
# per notification to keep the gateway's promise (signature, one JSON scan, a synced
# append or Kafka's acknowledgement, one record per body), on the same broker; its
# records carry no event_id and are not read back. Its half-rate runs go at the after
# side's rate, so that its p99 and the gateway's are at the same load.
#
# PEER=1 adds to every round benches/peer/express.js, a receiver written the usual Node
# way (Express, kafkajs, 200 once Kafka has the records), measured the same way (its
# records are not read back: they carry no event_id). Express and kafkajs are installed
# from npm into the tools cache when missing.
#
# BEFORE is built once per commit into target/before/<commit> (a git worktree, removed
# after the build). BEFORE_ENV and AFTER_ENV add gateway settings (VAR=VALUE, space
# separated) to one side. MODES (spool kafka), ROUNDS, SECONDS_PER_RUN (8), HALF_SECONDS
# (8; 0 skips the half-rate runs), HALF_ROUNDS (2: the half-rate runs of the two binaries
# in an order that alternates from round to round, medians). Only loopback addresses are
# used; every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/load/lib.sh

before_rev=${BEFORE:?set BEFORE to the revision to compare with, e.g. BEFORE=HEAD~3}
connections=32
threads=2
seconds=${SECONDS_PER_RUN:-8}
half_seconds=${HALF_SECONDS:-8}
half_rounds=${HALF_ROUNDS:-2}
rounds=${ROUNDS:-3}
modes=${MODES:-"spool kafka"}
pool=2000
secret=bench-secret
gateway_port=18080
admin_port=19090
ceiling_port=18081
broker_port=19092
brokers=127.0.0.1:$broker_port
peer=${PEER:-0}
peer_port=18082
floor=${FLOOR:-0}
floor_port=18083
read -r -a before_env <<<"${BEFORE_ENV:-}"
read -r -a after_env <<<"${AFTER_ENV:-}"

need_wrk
commit=$(git rev-parse --verify "$before_rev^{commit}")
before_bin=target/before/$commit/waba-gateway
if [ ! -x "$before_bin" ]; then
  tree=$(mktemp -d)
  git worktree add --quiet --detach "$tree" "$commit"
  (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target/before-build" cargo build --release --quiet --bin waba-gateway) ||
    { git worktree remove --force "$tree"; exit 1; }
  mkdir -p "$(dirname "$before_bin")"
  cp target/before-build/release/waba-gateway "$before_bin"
  git worktree remove --force "$tree"
fi
cargo build --release --quiet --bin waba-gateway --example ceiling --example floor --example loadgen --example readback
after_bin=target/release/waba-gateway
tansu=$(bash tests/tools/install-tansu.sh | tail -n 1)
if [ "$peer" = 1 ]; then
  node_path="$(bash tests/tools/install-npm-package.sh express 4.21.2 express-4.21.2 | tail -n 1)"
  node_path+=":$(bash tests/tools/install-npm-package.sh kafkajs 2.2.4 kafkajs-2.2.4 | tail -n 1)"
fi

bench_work
write_templates "$work" change

# Context switches of process $1 so far, voluntary and not, over all its threads.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }

# wrk against URL $1 as run $2 for $3 seconds, measuring process $server: prints
# "rps cpu_us_per_request p99_us non2xx switches_per_request".
measure() {
  local url=$1 run=$2 duration=$3 before after line switched
  sign_pool "$work/manifest" "$work/pool" "$run" $threads $pool "$secret"
  switched=$(switches "$server")
  before=$(cpu_ticks "$server")
  line=$(WRK_POOL=$work/pool WRK_MANIFEST=$work/manifest WRK_SECRET=$secret WRK_RUN=$run \
    WRK_REPORT=$work/report-$run wrk -t $threads -c $connections -d "${duration}s" --timeout 10s \
    -s benches/load/notify.lua "$url" | tail -n 1)
  after=$(cpu_ticks "$server")
  switched=$(( $(switches "$server") - switched ))
  rm -rf "$work/pool"
  awk -v r="$(field "$line" requests)" -v s="$(field "$line" seconds)" -v b="$before" -v a="$after" \
    -v t="$(getconf CLK_TCK)" -v p="$(field "$line" p99_us)" -v n="$(field "$line" non2xx)" -v w="$switched" \
    'BEGIN { r = (r > 0 ? r : 1); printf "%d %.1f %d %d %.2f", r / s, (a - b) * 1e6 / t / r, p, n, w / r }'
}

# A run against the server on loopback port $1, as run $2: 2 s of warm-up, then
# measured (see measure).
measured() {
  measure "http://127.0.0.1:$1/webhook" "$2-warm" 2 >/dev/null
  measure "http://127.0.0.1:$1/webhook" "$2" "$seconds"
}

# Starts a fresh broker and side $1's gateway (before|after) in ack mode $2, with that
# side's extra settings; sets $server.
start_side() {
  local binary=$after_bin extra=("${after_env[@]}")
  [ "$1" = before ] && binary=$before_bin extra=("${before_env[@]}")
  start_broker
  serve_gateway "$binary" "$2" "$work/spool" "$brokers" $gateway_port $admin_port "$work/gateway.log" "${extra[@]}"
  pids+=("$server")
}

# One gateway run: side $1 (before|after), mode $2, tag $3. Prints "rps cpu p99 non2xx
# switches missing".
gateway_run() {
  local side=$1 mode=$2 tag=$3 result
  start_side "$side" "$mode"
  result=$(measured $gateway_port "$tag")
  echo "$result $(missing_changes "$work/manifest" $pool "$tag-warm" "$tag")"
  stop_all
}

# The Express peer, on a fresh broker: prints "rps cpu p99 non2xx switches -".
peer_run() {
  local result
  start_broker
  NODE_PATH=$node_path node benches/peer/express.js $peer_port "$brokers" "$secret" 2>>"$work/peer.log" &
  server=$!
  pids+=("$server")
  wait_port $peer_port || { echo "the Express peer did not start; its log:" >&2; cat "$work/peer.log" >&2; exit 1; }
  echo "$(measured $peer_port "$1") -"
  stop_all
}

# Starts a fresh broker and the floor in ack mode $1; sets $server.
start_floor() {
  start_broker
  rm -f "$work/floor.spool"
  target/release/examples/floor 127.0.0.1:$floor_port "$brokers" "$1" "$secret" "$work/floor.spool" 2>>"$work/floor.log" &
  server=$!
  pids+=("$server")
  wait_port $floor_port || { echo "the floor did not start; its log:" >&2; cat "$work/floor.log" >&2; exit 1; }
}

# The floor in ack mode $1, as run $2: prints "rps cpu p99 non2xx switches -".
floor_run() {
  start_floor "$1"
  echo "$(measured $floor_port "$2") -"
  stop_all
}

# Keeps run $3 of this round as one of results[$1], with the ratio of its CPU per request
# to this round's ceiling's, and shows it as $2.
keep() {
  echo "  round $round $2: $3" >&2
  results[$1]+="$3 $(awk -v c="$3" -v k="$ceiling" 'BEGIN { split(c, a, " "); split(k, b, " "); printf "%.2f", a[2] / b[2] }')"$'\n'
}

declare -A results
for round in $(seq "$rounds"); do
  target/release/examples/ceiling 127.0.0.1:$ceiling_port &
  server=$!
  pids+=("$server")
  wait_port $ceiling_port
  ceiling=$(measured $ceiling_port "ceiling-$round")
  stop_all
  echo "  round $round ceiling: $ceiling" >&2
  results[ceiling]+="$ceiling - -"$'\n'
  sides="before after"
  [ $((round % 2)) = 0 ] && sides="after before"
  for mode in $modes; do
    if [ "$floor" = 1 ]; then
      keep "floor-$mode" "floor $mode" "$(floor_run "$mode" "floor-$mode-$round")"
    fi
    for side in $sides; do
      keep "$side-$mode" "$side $mode" "$(gateway_run "$side" "$mode" "$side-$mode-$round")"
    done
  done
  if [ "$peer" = 1 ]; then
    keep express express "$(peer_run "express-$round")"
  fi
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
column_median() { grep . <<<"$1" | cut -d' ' -f"$2" | median; }

# Each binary at half its median maximum, open loop, in an order that alternates from
# round to round as above, so that neither always runs second. Per side and mode: "rate
# p99 non2xx cpu", the medians of the rounds (non2xx summed).
declare -A half
if [ "$half_seconds" != 0 ]; then
  declare -A half_runs half_rate
  for mode in $modes; do
    for side in before after; do
      half_rate[$side-$mode]=$(( $(column_median "${results[$side-$mode]}" 1) / 2 ))
    done
    half_rate[floor-$mode]=${half_rate[after-$mode]}
  done
  for round in $(seq "$half_rounds"); do
    sides="before after"
    [ "$floor" = 1 ] && sides="floor before after"
    [ $((round % 2)) = 0 ] && sides=$(tr ' ' '\n' <<<"$sides" | tac | tr '\n' ' ')
    for mode in $modes; do
      for side in $sides; do
        rate=${half_rate[$side-$mode]}
        if [ "$side" = floor ]; then
          start_floor "$mode"
          port=$floor_port
        else
          start_side "$side" "$mode"
          port=$gateway_port
        fi
        ticks=$(cpu_ticks "$server")
        line=$(target/release/examples/loadgen "http://127.0.0.1:$port/webhook" $secret $connections "$half_seconds" "$rate" "${BENCH_FIXTURES[@]}")
        cpu=$(awk -v a="$(cpu_ticks "$server")" -v b="$ticks" -v t="$(getconf CLK_TCK)" -v r="$(field "$line" requests)" \
          'BEGIN { printf "%.1f", (a - b) * 1e6 / t / (r > 0 ? r : 1) }')
        echo "  half rate round $round $side $mode: $rate $(field "$line" p99_ms) $(field "$line" non2xx) $cpu" >&2
        half_runs[$side-$mode]+="$(field "$line" p99_ms) $(field "$line" non2xx) $cpu"$'\n'
        stop_all
      done
    done
  done
  for key in "${!half_runs[@]}"; do
    runs=${half_runs[$key]}
    half[$key]="${half_rate[$key]} $(column_median "$runs" 1) $(grep . <<<"$runs" | awk '{ s += $2 } END { print s + 0 }') $(column_median "$runs" 3)"
  done
fi

echo
echo "waba-gateway before ($commit${BEFORE_ENV:+, $BEFORE_ENV}) and after ($(git describe --always --dirty)${AFTER_ENV:+, $AFTER_ENV}): $(nproc) cores, wrk $threads threads x $connections connections x ${seconds}s, bodies signed beforehand, tansu (memory), $rounds rounds, medians, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-8s %-7s %9s %10s %9s %10s %9s %7s %-14s %s\n' server mode "req/s" "cpu us/r" "÷ceiling" "switches/r" "p99 ms" non2xx missing "half rate: req/s p99 ms non2xx cpu us/r"
row() { # name mode rows
  local rows=$3 missing
  missing=$(grep . <<<"$rows" | awk '{ split($6, m, "/"); if (m[1] == "-" ) next; if (m[1] == "n/a") na = 1; a += m[1]; b += m[2] } END { print (na ? "n/a" : a) "/" b }')
  [ "$1" = ceiling ] || [ "$1" = express ] || [ "$1" = floor ] && missing=-
  printf '%-8s %-7s %9d %10.1f %9s %10.2f %9.2f %7d %-14s %s\n' "$1" "$2" "$(column_median "$rows" 1)" "$(column_median "$rows" 2)" \
    "$([ "$1" = ceiling ] && echo 1.00x || echo "$(column_median "$rows" 7)x")" "$(column_median "$rows" 5)" \
    "$(awk -v p="$(column_median "$rows" 3)" 'BEGIN { print p / 1000 }')" \
    "$(grep . <<<"$rows" | awk '{ s += $4 } END { print s + 0 }')" "$missing" "${half[$1-$2]:--}"
}
row ceiling - "${results[ceiling]}"
for mode in $modes; do
  [ "$floor" = 1 ] && row floor "$mode" "${results[floor-$mode]}"
  for side in before after; do row "$side" "$mode" "${results[$side-$mode]}"; done
done
[ "$peer" = 1 ] && row express kafka "${results[express]}"
echo
echo "cpu us/r: the server's CPU per request; ÷ceiling: its ratio to the ceiling's of the same round (median of the rounds)."
echo "switches/r: context switches of all the server's threads per request (each a hand-off between threads or a wait)."
echo "missing: changes of requests answered 200 not found in Kafka by event_id, over all rounds, out of those expected."
[ "$peer" = 1 ] && echo "express: benches/peer/express.js (Express 4, kafkajs 2.2.4), 200 once Kafka has the records."
echo "half rate: the open-loop generator at half the median maximum, $half_rounds rounds in alternating order: its p99 and the server's CPU per request (medians), answers other than 200 (all rounds)."
