#!/usr/bin/env bash
# What the producer's compression costs and saves, to choose the default by measurement:
# first examples/compression.rs (every codec, the same records, in one process: CPU per
# record and bytes on the wire), then benches/load.sh's wrk runs (QUICK=1) with
# COMPRESSION set to each of CODECS ("none default gzip zstd"; "default" is the
# gateway's own, gzip at level 1; a codec named sets compression.type alone, so at
# librdkafka's default level), so that the gateway's own
# throughput and CPU per request are seen side by side. Prints a summary per codec.
#
#   bash benches/compression.sh
set -euo pipefail
cd "$(dirname "$0")/.."
codecs=${CODECS:-none default gzip zstd}
out=$(mktemp)
trap 'rm -f "$out" "$out.run"' EXIT
cargo run --release --quiet --example compression
for codec in $codecs; do
  echo "compression $codec" >&2
  COMPRESSION=${codec#default} QUICK=1 bash benches/load.sh >"$out.run"
  cat "$out.run"
  awk -v codec="$codec" '$1 == "gateway" { print codec, $2, $3, $7, $11 }' "$out.run" >>"$out"
done
echo
echo "the gateway under wrk (${CONNECTIONS:-16} connections x ${SECONDS_PER_RUN:-10}s) by producer compression:"
printf '  %-6s %-6s %10s %12s %8s\n' codec mode rps "cpu us/req" missing
awk '{ printf "  %-6s %-6s %10.0f %12.1f %8d\n", $1, $2, $3, $4, $5 }' "$out"
