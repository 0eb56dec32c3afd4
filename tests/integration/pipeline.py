"""Harness for end-to-end runs of the scan pipeline on the real stack: start/stop/kill the job as a
separate process, and read back what it wrote to Kafka, Cassandra and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from api.testing import Process, start_at_end, topology_process
from config.settings import Settings
from stack.migrations import cassandra_session
from topologies.lag import group_lag as lag_of_group

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topologies" / "scan_pipeline.yaml"


class PipelineProcess(Process):
    """`parcel run topologies/scan_pipeline.yaml` in its own process group."""

    def __init__(self, group: str, state_dir: Path, log: Path, instance_id: str | None = "1") -> None:
        self.group, self.state_dir, self.instance_id = group, state_dir, instance_id
        p = topology_process(TOPOLOGY, group, state_dir, log, instance_id=instance_id)
        super().__init__(p.cmd, log)


def start_group_at_end(settings: Settings, group: str, topic: str = "scan-events") -> None:
    """Commit the topic's current end offsets for a new consumer group, so a test's pipeline reads
    only what the test produces (not every earlier run's history)."""
    start_at_end(settings, group, topic)


def group_lag(settings: Settings, group: str, topic: str = "scan-events") -> int:
    """Records of `topic` the group has not committed yet (0: the job has finished its input)."""
    return lag_of_group(settings.kafka.bootstrap_servers, group, topic)


def committed_offsets(settings: Settings, group: str, topic: str = "scan-events") -> dict[int, int]:
    """The group's committed offset per partition of `topic` (-1: none). Under exactly-once the
    offsets commit in the same transaction as the job's output, so everything the job produced
    from records below them is readable (read_committed)."""
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group,
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
    finally:
        c.close()


@contextmanager
def throwaway_topic(settings: Settings, partitions: int, prefix: str = "test-topic") -> Iterator[str]:
    """A fresh topic for one test, deleted at its end."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(timeout=30)
    try:
        yield topic
    finally:
        for fut in admin.delete_topics([topic], operation_timeout=30).values():
            fut.result(timeout=60)


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": f"wm-{uuid.uuid4()}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def read_topic(settings: Settings, topic: str, start: dict[int, int] | None = None) -> list[tuple[bytes | None, Any]]:
    """Every committed record of `topic` (read_committed) from `start` offsets to the current end."""
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": f"read-{uuid.uuid4()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        begin = {p: (start or {}).get(p, 0) for p in parts}
        todo = {p for p in parts if ends[p] > begin[p]}
        c.assign([TopicPartition(topic, p, begin[p]) for p in parts])
        out: list[tuple[bytes | None, Any]] = []
        tps = [TopicPartition(topic, p) for p in todo]
        deadline = time.monotonic() + 90
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                try:
                    value = json.loads(msg.value())
                except (ValueError, TypeError):
                    value = msg.value()
                out.append((msg.key(), value))
            # caught up when the position passed the end offset seen at the start (transaction
            # markers included: the consumer steps over them)
            for tp in c.position(tps):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        assert not todo, f"could not read {topic} partitions {sorted(todo)} to their end"
        return out
    finally:
        c.close()


def shipment_rows(settings: Settings, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    with psycopg.connect(settings.postgres.dsn) as conn:
        rows = conn.execute(
            "SELECT shipment_id::text AS id, status::text AS status, attempt_count, eta, eta_source, "
            "eta_interval, last_event_at, return_of::text AS return_of, tracking_number "
            "FROM shipments WHERE shipment_id = ANY(%s::uuid[])", (list(ids),)).fetchall()
    cols = ["id", "status", "attempt_count", "eta", "eta_source", "eta_interval", "last_event_at", "return_of",
            "tracking_number"]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}


def returns_of(settings: Settings, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    with psycopg.connect(settings.postgres.dsn) as conn:
        rows = conn.execute(
            "SELECT return_of::text, shipment_id::text, tracking_number, status::text FROM shipments "
            "WHERE return_of = ANY(%s::uuid[])", (list(ids),)).fetchall()
    return {r[0]: {"shipment_id": r[1], "tracking_number": r[2], "status": r[3]} for r in rows}


def tracking_events(settings: Settings, ids: Iterable[str]) -> dict[str, list[Any]]:
    cluster, session = cassandra_session(settings, settings.cassandra.keyspace)
    try:
        stmt = session.prepare("SELECT event_id, event_type, status, created_at, previous_status, reason_code, "
                               "driver_id FROM tracking_events WHERE shipment_id = ?")
        return {i: list(session.execute(stmt, (uuid.UUID(i),))) for i in ids}
    finally:
        cluster.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, proc: Process | None = None,
             interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.assert_alive()
        if condition():
            return
        time.sleep(interval)
    tail = ""
    if proc is not None:
        lines = [ln for ln in proc.log.read_text(errors="replace").splitlines()
                 if "dead letter" not in ln and "invalid transition" not in ln]
        tail = "\n".join(lines[-40:])
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; log:\n{tail}")
