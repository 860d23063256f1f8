#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: FUZZ_SECONDS each (default 60).
#
#   bash fuzz/run.sh                  # one minute per target
#   FUZZ_SECONDS=600 bash fuzz/run.sh # longer
#
# cargo fuzz drives libFuzzer with compiler flags that are nightly-only. The machines
# this project is built on have the stable toolchain only, so RUSTC_BOOTSTRAP=1 lets
# stable accept them. The sanitizer is off (-s none): the gateway's own code has no
# `unsafe`, and AddressSanitizer cannot link the C libraries librdkafka vendors.
# Coverage-guided fuzzing still runs in full. Findings go to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1

mkdir -p corpus/signature_header corpus/split
cargo fuzz build -s none
# The split starts from the project's own notification fixtures.
cargo fuzz run -s none signature_header corpus/signature_header -- -max_total_time="$seconds"
cargo fuzz run -s none split corpus/split ../tests/fixtures -- -max_total_time="$seconds"
echo "fuzzing: no failure in ${seconds} s per target"
