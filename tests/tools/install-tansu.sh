#!/usr/bin/env bash
# Installs tansu 0.6.0, a Kafka-compatible broker written in Rust, for the end-to-end
# tests. Idempotent and cached: a second run finds the binary and does nothing.
# Prints the binary's path on its last line.
set -euo pipefail
version=0.6.0
root="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}/tansu-$version"
bin="$root/bin/tansu"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
echo "installing tansu $version into $root (about 12 minutes the first time)" >&2
# The memory:// storage engine needs the dynostore feature.
cargo install tansu --version "$version" --features dynostore,libsql --locked --root "$root" >&2
echo "$bin"
