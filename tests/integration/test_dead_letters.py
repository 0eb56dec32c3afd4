"""Dead letters of a topology with sinks ride the checkpoint: a rejected record is produced with the
checkpoint's outputs when it flushes, and forgotten with a checkpoint that is dropped (the replay
rejects it again). Real broker, real producer; the FlushTail under test is the one the builder makes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings
from operators.registry import MessageMeta
from sinks.stores import kafka_producer_config
from topologies.build import FlushTail
from topologies.runtime import DeadLetterRecord


@pytest.fixture
def dlq(stack: Settings) -> Iterator[str]:
    topic = f"test-dlq-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        fut.result(timeout=30)
    yield topic
    for fut in admin.delete_topics([topic], operation_timeout=30).values():
        fut.result(timeout=60)


def _read(stack: Settings, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    c = Consumer({"bootstrap.servers": stack.kafka.bootstrap_servers, "group.id": f"t-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        out = []
        while len(out) < high - low:
            msg = c.poll(5.0)
            assert msg is not None, f"{topic}: {high - low} records announced, {len(out)} read"
            assert msg.error() is None, msg.error()
            out.append((msg.key(), orjson.loads(msg.value())))
        return out
    finally:
        c.close()


def _record(reason: str) -> DeadLetterRecord:
    return DeadLetterRecord(step="validate", reason=reason, envelope={"reason": reason, "step": "validate"})


def _meta(key: bytes, offset: int) -> MessageMeta:
    return MessageMeta(topic="scan-events", partition=0, offset=offset, key=key, timestamp_ms=0)


def test_dead_letters_are_produced_at_the_flush_and_dropped_with_their_checkpoint(stack: Settings,
                                                                                 dlq: str) -> None:
    producer = Producer(kafka_producer_config(stack.kafka.bootstrap_servers))
    app: Any = SimpleNamespace(_producer=producer)  # FlushTail produces through the app's producer
    tail = FlushTail("t", [], SimpleNamespace(outputs=[]), app, {}, SimpleNamespace(name=dlq))

    tail.add_dead_letter(_record("malformed_json"), _meta(b"k1", 1))
    tail.add_dead_letter(_record("time_in_future"), _meta(b"k2", 2))
    assert producer.flush(10) == 0
    assert _read(stack, dlq) == []  # rejected, not yet produced: the checkpoint has not flushed

    tail.flush()
    assert producer.flush(10) == 0
    assert [(k, e["reason"]) for k, e in _read(stack, dlq)] == [(b"k1", "malformed_json"),
                                                                (b"k2", "time_in_future")]

    tail.add_dead_letter(_record("unknown_facility"), _meta(b"k3", 3))
    tail.on_paused()  # backpressure: the checkpoint is dropped and its records replayed
    tail.flush()
    assert producer.flush(10) == 0
    assert len(_read(stack, dlq)) == 2
