"""Finds every notification wrk saw answered 200 in Kafka (benches/load.sh).

verify.py READBACK BROKERS MANIFEST REPORT... : lists the changes of
every request answered 200 (each record carries its request's id as entry_id, and each
change its own event_id) and has READBACK (examples/readback.rs) read every topic of the
gateway from the beginning, headers only, until they are all there or VERIFY_SECONDS (300)
pass. Prints `expected=N found=M missing=K`.

With VERIFY_POOL=P the threads sent pools of P pre-signed notifications in turn (id
`bench-<run>-<thread>-<k>-<template>`), several connections each (VERIFY_CONNECTIONS per
thread), and reported `sent=N failed=F`. When no answer failed, every entry a thread sent
and saw answered is expected: entries 1..min(P, N - connections) (the last requests may
still have been in flight at the end). When some failed, which ones cannot be told:
`missing=n/a` is printed. Records are told apart by event_id, so a
broker that serves a record twice (tansu's in-memory engine does) does not make up for one
that is missing.
"""
import json
import os
import subprocess
import sys
import tempfile

readback, brokers, manifest, *reports = sys.argv[1:]
changes = [int(line.split()[0]) for line in open(manifest)]
templates = len(changes)
pool = int(os.environ.get("VERIFY_POOL", "0"))

connections = int(os.environ.get("VERIFY_CONNECTIONS", "1"))

expected = {}
for report in reports:
    for line in open(report):
        run, thread, answered, *counts = line.split()
        if pool:
            sent = int(answered.removeprefix("sent="))
            if int(counts[0].removeprefix("failed=")) > 0:
                print("expected=n/a found=n/a missing=n/a")
                sys.exit(0)
            for k in range(1, min(pool, sent - connections) + 1):
                template = (k + int(thread)) % templates + 1
                expected[f"bench-{run}-{thread}-{k}-{template}"] = changes[template - 1]
            continue
        if answered == "-":
            continue
        for first, last in (r.split("-") for r in answered.split(",")):
            for sequence in range(int(first), int(last) + 1):
                template = (sequence + int(thread)) % templates + 1
                uid = f"bench-{run}-{thread}-{sequence}-{template}"
                expected[uid] = changes[template - 1]

with tempfile.NamedTemporaryFile("w", suffix=".expected", delete=False) as listing:
    for uid, count in expected.items():
        listing.write(f"{uid} {count}\n")
try:
    result = subprocess.run(
        [readback, brokers, listing.name, os.environ.get("VERIFY_SECONDS", "300")],
        stdout=subprocess.PIPE, text=True, check=True)
finally:
    os.unlink(listing.name)
print(result.stdout.strip())
