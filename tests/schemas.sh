#!/usr/bin/env bash
# The JSON Schemas under schemas/ against what they describe, with check-jsonschema:
#   - every schema is a valid JSON Schema 2020-12;
#   - every record the gateway makes of the project's fixtures and of Meta's payloads
#     (../shared/fixtures/meta-payloads, when beside the repository), in change mode and in
#     item mode with CloudEvents (examples/records.rs), matches envelope.schema.json, and
#     so its value matches its field's schema;
#   - every one of those bodies that the gateway reads as a notification matches
#     notification.schema.json, and every one it keeps as a dead letter does not;
#   - records broken on purpose (an item record holding two statuses, a messages value
#     without metadata, a status without id) are refused: the check can fail.
#
#   bash tests/schemas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash tests/tools/install-validators.sh | tail -n 1)
check() { "$venv/bin/check-jsonschema" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== the schemas are valid JSON Schema 2020-12"
check --check-metaschema schemas/*.schema.json schemas/fields/*.schema.json

bodies=()
for file in tests/fixtures/*.json ../shared/fixtures/meta-payloads/*.json; do
  [ -f "$file" ] || continue
  [ "$(basename "$file")" = expected.json ] && continue
  bodies+=("$file")
done
cargo run --quiet --locked --example records -- "$work/records" "${bodies[@]}" >"$work/split"
tail -n 1 "$work/split"

echo "== every record matches schemas/envelope.schema.json"
check --schemafile schemas/envelope.schema.json "$work"/records/*.json

echo "== every notification matches schemas/notification.schema.json"
grep '^deadletter ' "$work/split" | cut -d' ' -f2- | sort >"$work/dead"
notifications=()
for file in "${bodies[@]}"; do
  grep -qxF "$file" "$work/dead" || notifications+=("$file")
done
check --schemafile schemas/notification.schema.json "${notifications[@]}"
while read -r file; do
  if check --schemafile schemas/notification.schema.json "$file" >/dev/null 2>&1; then
    echo "FAIL: $file is kept as a dead letter by the gateway but matches notification.schema.json" >&2
    exit 1
  fi
done <"$work/dead"
echo "${#notifications[@]} notifications match; $(wc -l <"$work/dead") dead-lettered bodies do not"

echo "== records broken on purpose are refused"
python3 - "$work" <<'PY'
import json, sys, glob
work = sys.argv[1]
records = [json.load(open(f)) for f in glob.glob(f"{work}/records/*.json")]
status = next(r for r in records if r.get("item_kind") == "status")
broken = {
    "two-statuses-in-an-item": dict(status, value=dict(status["value"], statuses=status["value"]["statuses"] * 2)),
    "messages-without-metadata": dict(status, value={k: v for k, v in status["value"].items() if k != "metadata"}),
    "status-without-id": dict(status, value=dict(status["value"], statuses=[{k: v for k, v in status["value"]["statuses"][0].items() if k != "id"}])),
    "event-id-not-hex": dict(status, event_id="not-an-id"),
}
for name, record in broken.items():
    json.dump(record, open(f"{work}/broken-{name}.json", "w"))
PY
for file in "$work"/broken-*.json; do
  if check --schemafile schemas/envelope.schema.json "$file" >"$work/why" 2>&1; then
    echo "FAIL: $(basename "$file") matches envelope.schema.json" >&2
    exit 1
  fi
  echo "refused: $(basename "$file" .json): $(grep -m1 -E "^  [^ ]" "$work/why" | cut -c1-110)"
done
echo "schemas: all checks passed"
