"""Consumer lag of a topology's group on its input topic, as a Prometheus gauge: a background
thread compares the group's committed offsets with the topic's end offsets every `interval_s`."""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from operators.metrics import PipelineMetrics

log = logging.getLogger(__name__)


def partition_lag(consumer: Consumer, topic: str) -> dict[int, int]:
    """Per partition: end offset minus the committed offset of `consumer`'s group."""
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    tps = [TopicPartition(topic, p) for p in parts]
    committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    lag = {}
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        done = committed.get(tp.partition, -1)
        lag[tp.partition] = high - (done if done >= 0 else low)
    return lag


def group_lag(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return sum(partition_lag(consumer, topic).values())
    finally:
        consumer.close()


def commit_end_offsets(bootstrap: str, group: str, topic: str) -> None:
    """Move `group` to the end of `topic` (it then reads only what comes next). For demos on a
    developer's machine, never for a job whose records matter."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in parts]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


class LagReporter(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str, metrics: PipelineMetrics,
                 interval_s: float = 10.0) -> None:
        super().__init__(name=f"lag-{group}", daemon=True)
        self._conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "client.id": f"lag-reporter-{uuid.uuid4().hex[:6]}"}
        self._topic, self._metrics, self._interval = topic, metrics, interval_s
        self._stop_event = threading.Event()

    def measure(self, consumer: Consumer) -> dict[int, int]:
        lag = partition_lag(consumer, self._topic)
        for partition, records in lag.items():
            self._metrics.lag(self._topic, partition, records)
        return lag

    def run(self) -> None:
        # Never subscribes, so it never joins the group: it only reads the group's commits.
        consumer = Consumer(self._conf)
        try:
            while not self._stop_event.wait(self._interval):
                try:
                    self.measure(consumer)
                except KafkaException as exc:
                    log.warning("consumer lag not measured: %s", exc)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
