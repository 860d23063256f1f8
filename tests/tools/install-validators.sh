#!/usr/bin/env bash
# Installs the Python validators (helm-python-sdk, kubernetes-validate, check-jsonschema,
# dockerfile-parse) into a cached virtualenv, for deploy/validate.sh and tests/schemas.sh.
# Idempotent: a second run finds them and does nothing. Prints the virtualenv's path on
# its last line.
set -euo pipefail
venv="${WABA_GATEWAY_TOOLS:-$HOME/.cache/waba-gateway/tools}/validate-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ] \
   || ! "$venv/bin/python" -c 'import helm_python, dockerfile_parse' 2>/dev/null; then
  echo "installing the Python validators into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q helm-python-sdk kubernetes-validate check-jsonschema dockerfile-parse >&2
fi
echo "$venv"
