"""Finds every notification wrk saw answered 200 in Kafka (benches/load.sh).

verify.py [--expected-only] GATEWAY BROKERS MANIFEST REPORT... : reads every topic of the gateway from the
beginning with `waba-gateway tail` until each answered request's changes are all there
(each record carries its request's id as entry_id, and each change its own event_id), or
until VERIFY_SECONDS (300) pass. Prints `expected=N found=M missing=K`. Records are told apart by
event_id, so a broker that serves a record twice (tansu's in-memory engine does) does not
make up for one that is missing.
"""
import json
import os
import subprocess
import sys
import time

# With --expected-only: print the number of changes answered 200, read nothing.
expected_only = sys.argv[1] == "--expected-only"
gateway, brokers, manifest, *reports = sys.argv[2:] if expected_only else sys.argv[1:]
changes = [int(line.split()[0]) for line in open(manifest)]
templates = len(changes)

expected = {}
for report in reports:
    for line in open(report):
        run, thread, answered = line.split()
        if answered == "-":
            continue
        for first, last in (r.split("-") for r in answered.split(",")):
            for sequence in range(int(first), int(last) + 1):
                template = (sequence + int(thread)) % templates + 1
                uid = f"bench-{run}-{thread}-{sequence}-{template}"
                expected[uid] = changes[template - 1]

wanted = sum(expected.values())
if expected_only:
    print(f"expected={wanted}")
    sys.exit(0)
seen = {}
found = 0
tail = subprocess.Popen(
    [gateway, "tail", "--brokers", brokers, "--from", "beginning"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
deadline = time.monotonic() + int(os.environ.get("VERIFY_SECONDS", "300"))
try:
    for line in tail.stdout:
        record = json.loads(line)
        envelope = json.loads(record["value"]) if isinstance(record["value"], str) else record["value"]
        uid = envelope.get("entry_id")
        if uid not in expected:
            continue
        events = seen.setdefault(uid, set())
        if envelope["event_id"] not in events and len(events) < expected[uid]:
            events.add(envelope["event_id"])
            found += 1
        if found == wanted or time.monotonic() > deadline:
            break
finally:
    tail.kill()
short = [uid for uid, n in expected.items() if len(seen.get(uid, ())) < n]
if short:
    print("missing changes of: " + " ".join(sorted(short)[:10]), file=sys.stderr)
print(f"expected={wanted} found={found} missing={wanted - found}")
