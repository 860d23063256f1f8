#!/usr/bin/env python3
"""A consumer of waba-gateway's topics, as a team downstream would write it: a starting
point to copy (README, "Consuming the topics"). Needs confluent-kafka (pip install
confluent-kafka).

  python3 examples/consumer.py --bootstrap-servers kafka:9092 --group billing \\
      --topic whatsapp.messages [--topic ...] [--exit-after-idle SECONDS]

- Reads the topics in a consumer group: partitions are shared among the group's members,
  and each conversation (one record key) stays in order on one partition.
- Drops duplicates by event_id (the wa-event-id header) within a bounded window
  (--dedup-window, 100000 ids): Meta retries, and a replayed spool delivers again.
- Refuses a status downgrade for a message: sent < delivered < read, and failed wins over
  all (headers wa-message-id and wa-status, which the gateway sets with
  routing.split = "item"; in change mode, a record's one status).
- Commits offsets after processing, so a crash replays what was not processed (and the
  duplicate window drops what was).
- Prints one JSON line per event processed on standard output, and one per event dropped
  (a duplicate or a downgrade) on standard error.
- Continues each record's trace when OTEL_EXPORTER_OTLP_ENDPOINT (or
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: a CONSUMER span "process <topic>" whose
  parent is the gateway's PRODUCER span in the record's traceparent header, exported by
  the OpenTelemetry SDK (pip install opentelemetry-sdk
  opentelemetry-exporter-otlp-proto-http; the OTEL_* variables configure it).
"""
import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext

from confluent_kafka import Consumer, KafkaError, KafkaException

RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
STATUSES = {rank: status for status, rank in RANK.items()}


class Bounded:
    """A map that keeps its `capacity` most recently added keys."""

    def __init__(self, capacity):
        self.values = OrderedDict()
        self.capacity = max(capacity, 1)

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        new = key not in self.values
        self.values[key] = value
        if new and len(self.values) > self.capacity:
            self.values.popitem(last=False)


def event_of(message):
    """What a record says, from its headers (and its value for what they lack)."""
    headers = {key: (value or b"").decode("utf-8", "replace") for key, value in message.headers() or []}
    envelope = json.loads(message.value())
    message_id, status = headers.get("wa-message-id"), headers.get("wa-status")
    statuses = (envelope.get("value") or {}).get("statuses") if isinstance(envelope.get("value"), dict) else None
    if status is None and isinstance(statuses, list) and len(statuses) == 1:
        # Change mode: the record's one status.
        message_id, status = statuses[0].get("id"), statuses[0].get("status")
    return {
        "event_id": headers.get("wa-event-id") or envelope["event_id"],
        "field": headers.get("wa-field"),
        "item_kind": headers.get("wa-item-kind"),
        "message_id": message_id,
        "status": status,
    }


def downgrade(statuses, event):
    """The status a message already reached when `event` would take it back, else None
    (and the new status is remembered)."""
    if event["item_kind"] not in (None, "status"):
        return None
    rank = RANK.get(event["status"])
    if event["message_id"] is None or rank is None:
        return None
    known = statuses.get(event["message_id"])
    if known is not None and known >= rank:
        return STATUSES[known]
    statuses.set(event["message_id"], rank)
    return None


def tracing():
    """The OpenTelemetry tracer and W3C propagator when an OTLP endpoint is configured,
    else (None, None)."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None, None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "waba-gateway-consumer"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider, TraceContextTextMapPropagator()


def process_span(provider, propagator, message, group, event):
    """The processing span of one record: a child of the gateway's PRODUCER span."""
    if provider is None:
        return nullcontext()
    from opentelemetry.trace import SpanKind

    carrier = {key: (value or b"").decode("utf-8", "replace") for key, value in message.headers() or []}
    parent = propagator.extract(carrier)
    return provider.get_tracer("waba-gateway-consumer").start_as_current_span(
        f"process {message.topic()}", context=parent, kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": message.topic(),
            "messaging.consumer.group.name": group,
            "messaging.message.id": event["event_id"],
            "messaging.kafka.offset": message.offset(),
        })


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", action="append", required=True, dest="topics")
    parser.add_argument("--exit-after-idle", type=float, default=0,
                        help="exit after this many seconds without a record (0: run until killed)")
    parser.add_argument("--dedup-window", type=int, default=100_000)
    args = parser.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap_servers,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe(args.topics)
    seen, statuses = Bounded(args.dedup_window), Bounded(args.dedup_window)
    provider, propagator = tracing()
    last = time.monotonic()
    try:
        while True:
            message = consumer.poll(0.2)
            if message is None:
                if args.exit_after_idle and time.monotonic() - last >= args.exit_after_idle:
                    break
                continue
            if message.error():
                raise KafkaException(message.error())
            last = time.monotonic()
            event = event_of(message)
            at = {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
            with process_span(provider, propagator, message, args.group, event):
                if seen.get(event["event_id"]) is not None:
                    print(json.dumps({"dropped": "duplicate", "event_id": event["event_id"], "at": at}), file=sys.stderr)
                elif (after := downgrade(statuses, event)) is not None:
                    print(json.dumps({"dropped": "status_downgrade", "event_id": event["event_id"],
                                      "message_id": event["message_id"], "status": event["status"],
                                      "after": after, "at": at}), file=sys.stderr)
                else:
                    seen.set(event["event_id"], True)
                    # The team's own processing goes here; then the line that says it is done.
                    print(json.dumps(dict(event, at=at)), flush=True)
            # Processed (or dropped on purpose): its offset may be committed.
            consumer.commit(message=message, asynchronous=True)
    finally:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:  # nothing left to commit
                print(json.dumps({"warning": f"final commit: {error}"}), file=sys.stderr)
        consumer.close()
        if provider is not None:
            provider.shutdown()  # exports the last spans


if __name__ == "__main__":
    main()
