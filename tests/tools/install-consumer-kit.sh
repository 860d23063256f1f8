#!/usr/bin/env bash
# Installs what the consumer-kit tests need, idempotently and cached under
# ~/.cache/waba-gateway/tools: Node.js with kafkajs (from npm, no codec packages: the
# library as a Node team installs it), and a Python virtualenv with confluent-kafka.
# Prints `kafkajs=<dir holding node_modules>` and `python=<interpreter>` on its last two
# lines.
set -euo pipefail
tools="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}"
kafkajs_version=2.2.4
confluent_version=2.16.1

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
fi
kafkajs="$tools/kafkajs-$kafkajs_version"
if [ ! -f "$kafkajs/node_modules/kafkajs/package.json" ]; then
  echo "installing kafkajs $kafkajs_version into $kafkajs" >&2
  mkdir -p "$kafkajs"
  npm install --silent --no-audit --no-fund --prefix "$kafkajs" "kafkajs@$kafkajs_version" >&2
fi

venv="$tools/consumer-venv"
if ! "$venv/bin/python" -c "import confluent_kafka, sys; sys.exit(confluent_kafka.version()[0] != '$confluent_version')" 2>/dev/null; then
  echo "installing confluent-kafka $confluent_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "confluent-kafka==$confluent_version" >&2
fi
echo "kafkajs=$kafkajs/node_modules"
echo "python=$venv/bin/python"
