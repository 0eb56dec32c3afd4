"""Consumer lag of a topology's group on its input topic, as a Prometheus gauge: a background
thread compares the group's committed offsets with the topic's end offsets every `interval_s`.

A topic written in Kafka transactions (`notifications`, by the exactly-once scan pipeline) ends each
transaction with a commit marker: an offset that holds no record. A consumer that has read
everything commits the offset of the last marker, one short of the end, so "end minus committed"
shows one record per partition that nobody will ever read. A partition a few offsets short of the
end is therefore probed: read from the committed offset (read_committed, no commit); if the read
position reaches the end without a record, nothing is left and its lag is 0."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from operators.metrics import PipelineMetrics

log = logging.getLogger(__name__)


# Probe partitions at most this many offsets short of the end (a few transactions' markers).
MARKERS_PROBED = 4


def partition_lag(consumer: Consumer, topic: str, *, probe_s: float = 2.0) -> dict[int, int]:
    """Per partition: records the group has still to read, i.e. end offset minus the committed
    offset of `consumer`'s group, and 0 where only transaction markers lie in between (probed with
    `consumer` itself for up to `probe_s`; 0 turns the probe off)."""
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    tps = [TopicPartition(topic, p) for p in parts]
    committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    lag, ends, starts = {}, {}, {}
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        start = committed.get(tp.partition, -1)
        starts[tp.partition], ends[tp.partition] = (start if start >= 0 else low), high
        lag[tp.partition] = high - starts[tp.partition]
    small = [p for p, n in lag.items() if 0 < n <= MARKERS_PROBED]
    if small and probe_s > 0:
        for p in _only_markers(consumer, topic, {p: (starts[p], ends[p]) for p in small}, probe_s):
            lag[p] = 0
    return lag


def _only_markers(consumer: Consumer, topic: str, spans: dict[int, tuple[int, int]], timeout_s: float) -> set[int]:
    """The partitions whose offsets [start, end) hold no record a read_committed consumer gets."""
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in spans.items()])
    empty: set[int] = set()
    open_ = set(spans)
    try:
        deadline = time.monotonic() + timeout_s
        while open_ and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None and msg.partition() in open_:
                open_.discard(msg.partition())  # a record: the lag is real
            for tp in consumer.position([TopicPartition(topic, p) for p in open_]):
                if tp.offset >= spans[tp.partition][1]:
                    open_.discard(tp.partition)
                    empty.add(tp.partition)
    finally:
        consumer.unassign()
    return empty


def group_lag(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
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
                      "isolation.level": "read_committed", "client.id": f"lag-reporter-{uuid.uuid4().hex[:6]}"}
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
