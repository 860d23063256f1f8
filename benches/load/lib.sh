# Sourced by the benchmarks (benches/load.sh, benches/profile.sh): a work folder cleaned up
# on exit, the notifications they send, signed beforehand, and the gateway they measure.

# Makes $work, a temporary folder, and $pids, the processes started, both cleaned up when
# the script exits.
bench_work() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# The six notifications both benchmarks send (0.5-2 KB, some with several changes).
BENCH_FIXTURES=(tests/fixtures/messages_text.json tests/fixtures/messages_status_delivered.json
  tests/fixtures/messages_interactive_button_reply.json tests/fixtures/message_template_status_update.json
  tests/fixtures/messages_two_changes_one_entry.json tests/fixtures/messages_order.json)

#   write_templates DIR SPLIT
#
# Writes each of BENCH_FIXTURES as a template, DIR/template-<i>.json, whose entry ids are
# the placeholder @UID@, and DIR/manifest, a line "<records> <template>" each (records by
# routing.split SPLIT: one per change, or per item of a messages change in item mode).
write_templates() {
  python3 - "$1" "$2" "${BENCH_FIXTURES[@]}" <<'PY'
import json, sys
work, split, fixtures = sys.argv[1], sys.argv[2], sys.argv[3:]
def records(body):
    count = 0
    for entry in body["entry"]:
        for change in entry["changes"]:
            items = 0
            if split == "item" and change.get("field") == "messages":
                items = sum(len(change["value"].get(a) or []) for a in ("messages", "statuses", "errors"))
            count += max(items, 1)
    return count
with open(f"{work}/manifest", "w") as manifest:
    for i, path in enumerate(fixtures):
        body = json.load(open(path))
        for entry in body["entry"]:
            entry["id"] = "@UID@"
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        open(f"{work}/template-{i}.json", "w").write(text)
        manifest.write(f"{records(body)} {work}/template-{i}.json\n")
PY
}

#   sign_pool MANIFEST OUT RUN THREADS SIZE SECRET
#
# Writes, for each of THREADS wrk threads, SIZE notifications of MANIFEST's templates
# signed with SECRET to OUT/<thread>.txt (see benches/load/notify.lua): entry k of thread t
# is template (k + t) % templates + 1 with the id bench-RUN-t-k-<template>.
sign_pool() {
  python3 - "$@" <<'PY'
import hashlib, hmac, os, sys
manifest, out, run, threads, size, secret = sys.argv[1:]
templates = [open(line.split()[1], "rb").read() for line in open(manifest)]
os.makedirs(out, exist_ok=True)
for thread in range(1, int(threads) + 1):
    with open(f"{out}/{thread}.txt", "wb") as pool:
        for k in range(1, int(size) + 1):
            template = (k + thread) % len(templates) + 1
            body = templates[template - 1].replace(b"@UID@", f"bench-{run}-{thread}-{k}-{template}".encode())
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            pool.write(b"sha256=" + signature.encode() + b" " + body + b"\n")
PY
}

#   serve_gateway BINARY MODE SPOOL_DIR BROKERS PORT ADMIN_PORT LOG [VAR=VALUE...]
#
# runs `BINARY serve` in ack mode MODE on a fresh SPOOL_DIR, producing to BROKERS (topics
# of 3 partitions), listening on loopback PORT and ADMIN_PORT, its standard error appended
# to LOG, with any further settings given; sets $server to its pid and waits until it is
# ready (exit 1 with its log if it never is).
serve_gateway() {
  local binary=$1 mode=$2 spool=$3 brokers=$4 port=$5 admin=$6 log=$7
  shift 7
  rm -rf "$spool"
  env "$@" \
    WABA_GATEWAY__DELIVERY__ACK="$mode" \
    WABA_GATEWAY__DELIVERY__SPOOL_DIR="$spool" \
    WABA_GATEWAY__KAFKA__BROKERS="$brokers" \
    WABA_GATEWAY__KAFKA__TOPIC_PARTITIONS=3 \
    WABA_GATEWAY__APPS__DEFAULT__SECRET=bench-secret \
    WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN=bench \
    WABA_GATEWAY__SERVER__LISTEN="127.0.0.1:$port" \
    WABA_GATEWAY__ADMIN__LISTEN="127.0.0.1:$admin" \
    WABA_GATEWAY__LOG__LEVEL=warn \
    WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS=0 \
    "$binary" serve 2>>"$log" &
  server=$!
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "the gateway never became ready; its log:" >&2
  cat "$log" >&2
  return 1
}

# Stops the processes started ($pids) and waits for each.
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}

# Starts $tansu with memory storage on $brokers (port $broker_port), logging to
# $work/tansu.log, and waits until it listens.
start_broker() {
  "$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  pids+=($!)
  wait_port "$broker_port"
}

#   missing_changes MANIFEST POOL RUN...
#
# How many changes of the requests answered 200 in runs RUN... (their wrk reports in
# $work/report-RUN, notifications of MANIFEST, POOL pre-signed ones per wrk thread, 0 if
# signed in wrk) are not in Kafka ($brokers), read back by event_id (examples/readback.rs,
# benches/load/verify.py) once the gateway's spool (admin port $admin_port) is empty, out
# of how many: "missing/expected".
missing_changes() {
  local manifest=$1 presigned=$2 reports=() entries verified
  shift 2
  for run in "$@"; do reports+=("$work/report-$run"); done
  for _ in $(seq 600); do
    entries=$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "waba_gateway_spool_entries" { print $2 }')
    [ "${entries:-0}" = 0 ] && break
    sleep 0.5
  done
  verified=$(VERIFY_POOL=$presigned VERIFY_CONNECTIONS=$(( connections / threads + 1 )) \
    python3 benches/load/verify.py target/release/examples/readback "$brokers" "$manifest" "${reports[@]}")
  echo "$(field "$verified" missing)/$(field "$verified" expected)"
}

# A field "name=value" of a line of such pairs: `field "$line" requests`.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# CPU time of process $1 so far, in clock ticks (user + system).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Waits until something listens on loopback port $1 (10 s at most).
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Installs wrk (Debian's package) when it is missing.
need_wrk() {
  if ! command -v wrk >/dev/null; then
    echo "installing wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk; else sudo apt-get install -y -qq wrk; fi
  fi
}
