"""Dead letters of a topology with sinks ride the checkpoint: a rejected record is produced with the
checkpoint's outputs when it flushes, and forgotten with a checkpoint that is dropped (the replay
rejects it again). Real broker, real producer, the builder's FlushTail class (wired here by hand, with no steps)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Producer

from config.settings import Settings
from operators.registry import MessageMeta
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import read_topic, throwaway_topic
from topologies.build import FlushTail
from topologies.runtime import DeadLetterRecord


@pytest.fixture
def dlq(stack: Settings) -> Iterator[str]:
    with throwaway_topic(stack, 1, "test-dlq") as topic:
        yield topic


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
    assert read_topic(stack, dlq) == []  # rejected, not yet produced: the checkpoint has not flushed

    tail.flush()
    assert producer.flush(10) == 0
    assert [(k, e["reason"]) for k, e in read_topic(stack, dlq)] == [(b"k1", "malformed_json"),
                                                                (b"k2", "time_in_future")]

    tail.add_dead_letter(_record("unknown_facility"), _meta(b"k3", 3))
    tail.on_paused()  # backpressure: the checkpoint is dropped and its records replayed
    tail.flush()
    assert producer.flush(10) == 0
    assert len(read_topic(stack, dlq)) == 2
