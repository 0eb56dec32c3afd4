"""Kafka helpers of the benchmark: end offsets, a group's committed offsets (one long-lived
client, polled twice a second), starting a fresh group at given offsets, and the baselines'
output topics."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def _consumer(bootstrap: str, group: str | None = None, **extra: object) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group or f"bench-wm-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, **extra})


class Offsets:
    """End offsets of topics and committed offsets of groups, through one consumer that never joins
    a group (committed() and get_watermark_offsets() are plain requests)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._c = _consumer(bootstrap)
        self._parts: dict[str, list[int]] = {}
        self._group_clients: dict[str, Consumer] = {}

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._parts:
            md = self._c.list_topics(topic, timeout=10).topics[topic]
            if md.error is not None:
                raise KafkaException(md.error)
            self._parts[topic] = sorted(md.partitions)
        return self._parts[topic]

    def ends(self, topic: str) -> dict[int, int]:
        return {p: self._c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in self.partitions(topic)}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        c = self._group_clients.get(group)
        if c is None:
            c = self._group_clients[group] = _consumer(self._bootstrap, group)
        tps = c.committed([TopicPartition(topic, p) for p in self.partitions(topic)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}

    def close(self) -> None:
        for c in self._group_clients.values():
            c.close()
        self._c.close()


def start_group_at(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commit `offsets` for a fresh consumer group (like tests' start_group_at_end, any offsets)."""
    c = _consumer(bootstrap, group)
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def ensure_topics(bootstrap: str, topics: list[str], partitions: int, replication: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in topics
           if t not in existing]
    if not new:
        return
    for topic, fut in admin.create_topics(new).items():
        try:
            fut.result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc
