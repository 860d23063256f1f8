#!/usr/bin/env bash
# Installs what the consumer-kit tests need, idempotently and cached under
# ~/.cache/waba-gateway/tools: Node.js with kafkajs (from npm, no codec packages: the
# library as a Node team installs it), and a Python virtualenv with confluent-kafka and
# the OpenTelemetry SDK with its OTLP/HTTP exporter (the Python kit's traces), whose
# opentelemetry-proto also decodes what the suite's OTLP receiver gets
# (tests/tools/otlp-receiver.py).
# Prints `kafkajs=<dir holding node_modules>` and `python=<interpreter>` on its last two
# lines.
set -euo pipefail
tools="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}"
kafkajs_version=2.2.4
confluent_version=2.16.1
otel_version=1.45.2

kafkajs=$(bash "$(dirname "$0")/install-npm-package.sh" kafkajs "$kafkajs_version" \
  "kafkajs-$kafkajs_version" | tail -n 1)

venv="$tools/consumer-venv"
if ! "$venv/bin/python" -c "
import sys, confluent_kafka
from importlib.metadata import version
import opentelemetry.proto, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http
sys.exit(confluent_kafka.__version__ != '$confluent_version' or version('opentelemetry-sdk') != '$otel_version')" 2>/dev/null; then
  echo "installing confluent-kafka $confluent_version and opentelemetry $otel_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "confluent-kafka==$confluent_version" \
    "opentelemetry-sdk==$otel_version" "opentelemetry-proto==$otel_version" \
    "opentelemetry-exporter-otlp-proto-http==$otel_version" >&2
fi
echo "kafkajs=$kafkajs"
echo "python=$venv/bin/python"
