#!/usr/bin/env bash
# Installs one npm package, idempotently and cached under ~/.cache/waba-gateway/tools/DIR
# (Node.js and npm from apt when missing), and prints its node_modules folder on its last
# line. Used by install-consumer-kit.sh (kafkajs) and install-asyncapi-parser.sh.
#
#   bash tests/tools/install-npm-package.sh PACKAGE VERSION DIR
set -euo pipefail
package=$1 version=$2
dir="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}/$3"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nodejs npm >&2
fi
if [ ! -f "$dir/node_modules/$package/package.json" ]; then
  echo "installing $package $version into $dir" >&2
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "$package@$version" >&2
fi
echo "$dir/node_modules"
