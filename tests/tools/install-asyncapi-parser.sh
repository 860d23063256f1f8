#!/usr/bin/env bash
# Installs the AsyncAPI project's own parser (@asyncapi/parser, from npm) for
# tests/schemas.sh, idempotently and cached under ~/.cache/waba-gateway/tools. Prints the
# node_modules folder on its last line.
set -euo pipefail
version=3.6.6
bash "$(dirname "$0")/install-npm-package.sh" @asyncapi/parser "$version" "asyncapi-parser-$version"
