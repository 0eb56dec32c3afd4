"""Consumer lag of a topology's group on its input topic, as a Prometheus gauge: a background
thread compares the group's committed offsets with the topic's end offsets every `interval_s`."""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from operators.metrics import PipelineMetrics

log = logging.getLogger(__name__)


class LagReporter(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str, metrics: PipelineMetrics,
                 interval_s: float = 10.0) -> None:
        super().__init__(name=f"lag-{group}", daemon=True)
        self._conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "client.id": f"lag-reporter-{uuid.uuid4().hex[:6]}"}
        self._topic, self._metrics, self._interval = topic, metrics, interval_s
        self._stop_event = threading.Event()

    def measure(self, consumer: Consumer) -> dict[int, int]:
        parts = consumer.list_topics(self._topic, timeout=10).topics[self._topic].partitions
        tps = [TopicPartition(self._topic, p) for p in parts]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        lag = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = high - (done if done >= 0 else low)
            self._metrics.lag(self._topic, tp.partition, lag[tp.partition])
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
