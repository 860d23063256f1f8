#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run) and as the README shows it.
# Installs what the build and the tests need when it is missing (idempotent, cached), then
# checks format and lints and runs every test, the end-to-end suite on tansu included.
set -euo pipefail
cd "$(dirname "$0")/.."

# librdkafka is compiled from source by the rdkafka crate: it needs a C toolchain, make,
# pkg-config, and the OpenSSL and zlib headers.
missing=()
# haproxy: the load balancer of the replicas-under-faults test (tests/e2e.rs).
for package in build-essential pkg-config libssl-dev zlib1g-dev haproxy; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing build dependencies: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"
  fi
fi

if [ -d ../shared/fixtures/meta-payloads ]; then
  echo "Meta payloads found in ../shared/fixtures/meta-payloads: the sweep over them runs"
else
  echo "NOTE: ../shared/fixtures/meta-payloads not found: the tests over Meta's payloads are listed as ignored (under CI=true they fail)"
fi

# The end-to-end suite runs against tansu, a Kafka-compatible broker: installed once
# (about 12 minutes), then cached.
WABA_GATEWAY_TANSU=$(bash tests/tools/install-tansu.sh | tail -n 1)
export WABA_GATEWAY_TANSU

# The consumer kit's tests read the gateway's records with kafkajs (Node) and with the
# Python consumer (confluent-kafka): both installed once, then cached.
kit=$(bash tests/tools/install-consumer-kit.sh)
WABA_GATEWAY_KAFKAJS=$(sed -n 's/^kafkajs=//p' <<<"$kit")
WABA_GATEWAY_PYTHON=$(sed -n 's/^python=//p' <<<"$kit")
export WABA_GATEWAY_KAFKAJS WABA_GATEWAY_PYTHON

# The edge and allowlist tests hold a few thousand connections at once.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
# The black-box and end-to-end tests run the release binary, the one that ships, and the
# consumer kit's Rust consumer.
cargo build --locked --release --bin waba-gateway --example consumer
export WABA_GATEWAY_CONSUMER=$PWD/target/release/examples/consumer
WABA_GATEWAY_BINARY=$PWD/target/release/waba-gateway cargo test --locked

# The JSON Schemas of the records against every record of the fixtures and Meta's
# payloads (check-jsonschema, installed into a cached virtualenv).
bash tests/schemas.sh

# The fuzz targets, briefly: they build, and a short run finds nothing (see fuzz/run.sh
# for longer runs).
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash fuzz/run.sh

# Offline validation of the Dockerfile, docker-compose.yml, the Helm chart, the alert
# rules and the dashboard (no Docker engine or cluster needed).
bash deploy/validate.sh target/release/waba-gateway
