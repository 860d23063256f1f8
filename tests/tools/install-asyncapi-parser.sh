#!/usr/bin/env bash
# Installs the AsyncAPI project's own parser (@asyncapi/parser, from npm) for
# tests/schemas.sh, idempotently and cached under ~/.cache/waba-gateway/tools (Node.js from
# apt when missing). Prints the node_modules folder on its last line.
set -euo pipefail
tools="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}"
version=3.6.6
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
fi
dir="$tools/asyncapi-parser-$version"
if [ ! -f "$dir/node_modules/@asyncapi/parser/package.json" ]; then
  echo "installing @asyncapi/parser $version into $dir" >&2
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "@asyncapi/parser@$version" >&2
fi
echo "$dir/node_modules"
