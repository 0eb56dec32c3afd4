"""Consumer lag on a topic written in Kafka transactions (real broker): commit and abort markers
take offsets that hold no record, so a group that has read everything is not "behind"."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings
from sinks.stores import kafka_producer_config
from topologies.lag import group_lag, partition_lag


@pytest.fixture
def topic(stack: Settings) -> Iterator[str]:
    name = f"test-lag-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def _transaction(producer: Producer, topic: str, n: int, *, commit: bool = True) -> None:
    producer.begin_transaction()
    for i in range(n):
        producer.produce(topic, key=b"k", value=f"v{i}".encode())
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def _read_all_and_commit(bootstrap: str, group: str, topic: str, expect: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    got, deadline = [], time.monotonic() + 30
    while len(got) < expect and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg)
    assert len(got) == expect
    consumer.commit(offsets=[TopicPartition(topic, 0, got[-1].offset() + 1)], asynchronous=False)
    consumer.close()


def test_markers_are_not_lag_and_records_are(stack: Settings, topic: str) -> None:
    bootstrap = stack.kafka.bootstrap_servers
    group = f"test-lag-{uuid.uuid4().hex[:8]}"
    producer = Producer(kafka_producer_config(bootstrap, {"transactional.id": f"test-lag-{uuid.uuid4().hex[:8]}"}))
    producer.init_transactions(30)
    _transaction(producer, topic, 3)
    _read_all_and_commit(bootstrap, group, topic, 3)

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
    try:
        assert partition_lag(probe, topic, probe_s=0) == {0: 1}, "end minus committed counts the commit marker"
        assert partition_lag(probe, topic) == {0: 0}
        assert group_lag(bootstrap, group, topic) == 0

        _transaction(producer, topic, 2, commit=False)  # aborted: records nobody will read
        assert partition_lag(probe, topic, probe_s=0) == {0: 4}
        assert partition_lag(probe, topic) == {0: 0}

        _transaction(producer, topic, 2)  # two records to read: real lag (counted with the markers)
        assert partition_lag(probe, topic) == {0: 7}
        assert group_lag(bootstrap, group, topic) == 7

        _read_all_and_commit(bootstrap, group, topic, 2)
        assert partition_lag(probe, topic) == {0: 0}
        _transaction(producer, topic, 1)  # near the end, but a record: the probe finds it and keeps
        assert partition_lag(probe, topic) == {0: 3}  # marker, record, marker
    finally:
        probe.close()
