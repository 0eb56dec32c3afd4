"""Baseline (b): the naive per-event consumer. A plain confluent_kafka consumer loop that, for each
scan, does one synchronous write per store: a Cassandra INSERT (tracking_events), a PostgreSQL
UPDATE (shipments, autocommit), and a Kafka produce + flush of a small event to an output topic.
No batching, no state machine, no ETA, at-least-once (auto-commit every second). Producer
linger.ms=0 so the flush is not a 5 ms sleep: the fairest naive loop, not the worst one.

It writes the bench's own shipments only (fresh ids); its rows overwrite the columns it sets.

    python -m bench.naive --group G --output bench-naive-out
"""

from __future__ import annotations

import argparse
import logging
import signal
import uuid
from datetime import UTC, datetime

import orjson
import psycopg
from confluent_kafka import Consumer, Producer

from config.settings import get_settings
from models.domain import TARGET_STATUS, EventType
from sinks.stores import cassandra_cluster, kafka_producer_config

log = logging.getLogger("bench.naive")

INSERT = (
    "INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status, facility_id, "
    "scan_device_id, lat, lng, reason_code, driver_id, route_id, raw_scan_data, ingested_at, "
    "source_partition, source_offset) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
UPDATE = (
    "UPDATE shipments SET status = %s::shipment_status, last_event_at = %s, last_event_id = %s, label_fresh = false, "
    "updated_at = now() WHERE shipment_id = %s AND (last_event_at IS NULL OR last_event_at <= %s)"
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", required=True)
    ap.add_argument("--output", default="bench-naive-out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    s = get_settings()
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    cluster = cassandra_cluster(s)
    session = cluster.connect(s.cassandra.keyspace)
    insert = session.prepare(INSERT)
    pg = psycopg.connect(s.postgres.dsn, autocommit=True)
    producer = Producer(kafka_producer_config(s.kafka.bootstrap_servers,
                                              {"enable.idempotence": True, "acks": "all", "linger.ms": 0}))
    consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": args.group,
                         "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    consumer.subscribe([s.kafka.topics["scan_events"]])
    done = skipped = 0
    try:
        while not stop:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                v = orjson.loads(msg.value())
                event_type = EventType(v["event_type"])
                status = TARGET_STATUS[event_type].value
                created = datetime.fromisoformat(v["created_at"])
                if created.tzinfo is None:
                    raise ValueError("zone-less created_at")
                shipment_id = uuid.UUID(v["shipment_id"])
                event_id = uuid.UUID(v["event_id"])
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
                skipped += 1
                continue
            loc = v.get("location") or {}
            raw = v.get("raw_scan_data")
            try:
                bound = insert.bind((
                    shipment_id, created, event_id, event_type.value, status, v.get("facility_id"),
                    v.get("scan_device_id"), loc.get("lat"), loc.get("lng"), v.get("reason_code"),
                    v.get("driver_id"), v.get("route_id"), None if raw is None else orjson.dumps(raw).decode(),
                    datetime.now(UTC), msg.partition(), msg.offset()))
            except (TypeError, AttributeError, ValueError):  # a field of the wrong type: garbage, skip it
                skipped += 1
                continue
            session.execute(bound)
            pg.execute(UPDATE, (status, created, event_id, shipment_id, created))
            producer.produce(args.output, key=msg.key(), value=orjson.dumps({
                "event_id": str(event_id), "shipment_id": str(shipment_id), "event_type": event_type.value,
                "status": status, "created_at": v["created_at"], "facility_id": v.get("facility_id")}))
            producer.flush()
            done += 1
    finally:
        log.info("naive consumer: %d events written, %d skipped", done, skipped)
        consumer.close()
        producer.flush(10)
        pg.close()
        cluster.shutdown()


if __name__ == "__main__":
    main()
