#!/usr/bin/env bash
# The JSON Schemas and the AsyncAPI document under schemas/ against what they describe:
#   - every schema is a valid JSON Schema 2020-12, and every documented field has one;
#   - every body of the project's fixtures and of Meta's payloads
#     (../shared/fixtures/meta-payloads) that the gateway reads as a notification matches
#     notification.schema.json, and every one it keeps as a dead letter does not;
#   - the rule consumers build on: for every body that matches notification.schema.json,
#     every record the gateway makes of it, in change mode and in item mode with
#     CloudEvents (examples/records.rs), matches envelope.schema.json, and so its value
#     matches its field's schema. Checked over the fixtures, Meta's payloads and bodies at
#     the edge of the contract (tests/fixtures/schema-rule/);
#   - records broken on purpose are refused: the check can fail;
#   - schemas/asyncapi.json, and the document of a configuration with item mode,
#     CloudEvents, overrides and brokers, parse without error or warning with the AsyncAPI
#     project's parser (@asyncapi/parser), and a broken document does not.
#
#   bash tests/schemas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash tests/tools/install-validators.sh | tail -n 1)
asyncapi_modules=$(bash tests/tools/install-asyncapi-parser.sh | tail -n 1)
check() { "$venv/bin/check-jsonschema" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== the schemas are valid JSON Schema 2020-12, one for every documented field"
check --check-metaschema schemas/*.schema.json schemas/fields/*.schema.json
fields=$(sed -n '/^pub const KNOWN_FIELDS/,/^];/p' src/routing.rs | grep -o '"[a-z_]*"' | tr -d '"')
for field in $fields; do
  [ -f "schemas/fields/$field.schema.json" ] || { echo "FAIL: no schemas/fields/$field.schema.json" >&2; exit 1; }
  for schema in envelope notification; do
    grep -q "\"fields/$field.schema.json\"" "schemas/$schema.schema.json" \
      || { echo "FAIL: schemas/$schema.schema.json does not refer to $field's schema" >&2; exit 1; }
  done
done
echo "$(wc -w <<<"$fields") fields, each with its schema, referred to by the envelope and notification schemas"
python3 - <<'PY'
import json
entry = json.load(open("schemas/notification.schema.json"))["$defs"]["notification"]["properties"]["entry"]["items"]
envelope = json.load(open("schemas/envelope.schema.json"))["properties"]
for member, copied in (("id", "entry_id"), ("time", "entry_time")):
    wanted = sorted([entry["properties"][member]["type"], "null"])
    assert sorted(envelope[copied]["type"]) == wanted, (copied, envelope[copied]["type"], wanted)
print("the envelope's entry_id and entry_time have the types of the notification's entry id and time, or null")
PY

fixtures=()
for file in tests/fixtures/*.json ../shared/fixtures/meta-payloads/*.json; do
  [ -f "$file" ] || continue
  [ "$(basename "$file")" = expected.json ] && continue
  fixtures+=("$file")
done
edges=(tests/fixtures/schema-rule/*.json)
bodies=("${fixtures[@]}" "${edges[@]}")
cargo run --quiet --locked --example records -- "$work/records" "${bodies[@]}" >"$work/split"
tail -n 1 "$work/split"
grep '^deadletter ' "$work/split" | cut -d' ' -f2- | sort >"$work/dead"

echo "== every notification of the fixtures matches schemas/notification.schema.json"
notifications=()
for file in "${fixtures[@]}"; do
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

echo "== every record of a body that matches notification.schema.json matches schemas/envelope.schema.json"
records=()
outside=0
for i in "${!bodies[@]}"; do
  body=${bodies[$i]}
  grep -qxF "$body" "$work/dead" && continue
  # Every fixture that is not a dead letter matches (checked above); the edge bodies are
  # checked one by one.
  if [ "$i" -lt "${#fixtures[@]}" ] \
     || check --schemafile schemas/notification.schema.json "$body" >/dev/null 2>&1; then
    records+=("$work/records/$i"/*.json)
  else
    # Routed unchanged, as every authentic body is: the schemas describe Meta's contract.
    outside=$((outside + 1))
    echo "outside Meta's contract, routed unchanged: $body"
  fi
done
check --schemafile schemas/envelope.schema.json "${records[@]}"
echo "${#records[@]} records of $((${#bodies[@]} - $(wc -l <"$work/dead") - outside)) bodies match"
[ "$outside" -ge 3 ] || { echo "FAIL: the edge bodies outside the contract were not told apart" >&2; exit 1; }

echo "== records broken on purpose are refused"
python3 - "$work" <<'PY'
import json, sys, glob
work = sys.argv[1]
records = [json.load(open(f)) for f in glob.glob(f"{work}/records/*/*.json")]
status = next(r for r in records if r.get("item_kind") == "status")
review = next(r for r in records if r.get("field") == "account_review_update")
broken = {
    "two-statuses-in-an-item": dict(status, value=dict(status["value"], statuses=status["value"]["statuses"] * 2)),
    "messages-without-metadata": dict(status, value={k: v for k, v in status["value"].items() if k != "metadata"}),
    "status-without-id": dict(status, value=dict(status["value"], statuses=[{k: v for k, v in status["value"]["statuses"][0].items() if k != "id"}])),
    "event-id-not-hex": dict(status, event_id="not-an-id"),
    "entry-id-a-number": dict(status, entry_id=310987654321001),
    "review-decision-not-documented": dict(review, value={"decision": "MAYBE"}),
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

echo "== the AsyncAPI documents parse with @asyncapi/parser"
variant="$work/variant"
mkdir -p "$variant/fields"
cp schemas/*.schema.json "$variant/"
cp schemas/fields/*.schema.json "$variant/fields/"
cat >"$work/variant.toml" <<'TOML'
[kafka]
brokers = "kafka-0.kafka:9092,kafka-1.kafka:9092"
cloudevents = true
[kafka.topics]
"messages.status" = "whatsapp.statuses"
flows = "whatsapp.flows.v2"
[routing]
split = "item"
[apps.shop]
secret = "s"
verify_token = "t"
TOML
cargo run --quiet --locked --bin waba-gateway -- topics asyncapi --config "$work/variant.toml" \
  --partitions 12 >"$variant/asyncapi.json"
python3 - "$variant/asyncapi.json" "$work/broken-asyncapi.json" <<'PY'
import json, sys
document = json.load(open(sys.argv[1]))
assert "whatsapp_statuses" in document["channels"] and "broker1" in document["servers"], document.keys()
document["channels"]["whatsapp_statuses"]["address"] = 5
document["operations"]["publish_whatsapp_flows_v2"]["action"] = "publish"
json.dump(document, open(sys.argv[2], "w"))
PY
cp "$work/broken-asyncapi.json" "$variant/broken-asyncapi.json"
NODE_PATH=$asyncapi_modules node tests/tools/asyncapi-check.cjs schemas/asyncapi.json "$variant/asyncapi.json"
if NODE_PATH=$asyncapi_modules node tests/tools/asyncapi-check.cjs "$variant/broken-asyncapi.json" >"$work/why" 2>&1; then
  echo "FAIL: a broken AsyncAPI document parsed" >&2
  exit 1
fi
echo "refused: broken-asyncapi: $(grep -c ': error ' "$work/why") errors, e.g. $(grep -m1 ': error ' "$work/why" | cut -c1-120)"
echo "schemas: all checks passed"
