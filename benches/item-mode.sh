#!/usr/bin/env bash
# Item mode against change mode: benches/load.sh's wrk runs (QUICK=1: the ceiling, then
# the gateway in `kafka` and `spool` mode on a fresh tansu), alternating SPLIT=change and
# SPLIT=item for ROUNDS rounds (2), so that both see the same machine. Prints each run's
# requests/s and CPU per request, then item mode's throughput as a ratio of change mode's,
# per ack mode, over all rounds. The payloads are load.sh's ordinary notifications: one
# message, one status, a button reply, a template update, two changes, an order.
#
#   bash benches/item-mode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-2}
out=$(mktemp)
trap 'rm -f "$out" "$out.run"' EXIT
for round in $(seq "$rounds"); do
  for split in change item; do
    echo "round $round, split $split" >&2
    SPLIT=$split QUICK=1 bash benches/load.sh >"$out.run"
    cat "$out.run"
    awk -v splitting="$split" '$1 == "gateway" { print splitting, $2, $3, $7, $11 }' "$out.run" >>"$out"
  done
done
echo
echo "item mode against change mode, $rounds rounds, wrk ${CONNECTIONS:-16} connections x ${SECONDS_PER_RUN:-10}s:"
awk '{ rps[$1 " " $2] += $3; cpu[$1 " " $2] += $4; missing[$1 " " $2] += $5; n[$1 " " $2]++ }
  END {
    printf "  %-6s %12s %12s %14s %14s %8s %8s\n", "mode", "change rps", "item rps", "change cpu us", "item cpu us", "item/change", "missing"
    for (m = 1; m <= 2; m++) {
      mode = (m == 1) ? "kafka" : "spool"
      c = "change " mode; i = "item " mode
      printf "  %-6s %12.0f %12.0f %14.1f %14.1f %8.3fx %8d\n", mode, rps[c] / n[c], rps[i] / n[i], cpu[c] / n[c], cpu[i] / n[i], rps[i] / rps[c], missing[c] + missing[i]
    }
  }' "$out"
