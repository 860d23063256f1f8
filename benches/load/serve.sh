# Sourced by the benchmarks: starts the gateway for a run.
#
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
