"""Store clients built from settings, in one place: every Cassandra session of the project is made
here (protocol v5, DC-aware policy on the configured contact points, no driver warnings), and every
Kafka producer's configuration starts here (one partitioner for all)."""

from __future__ import annotations

import socket
from typing import Any

from config.settings import Settings

# One partitioner for every producer of the project: murmur2, as the Java client and quixstreams
# (the jobs' own producers) place keys. librdkafka's default (CRC32) puts a key on another partition
# number, so a simulator- or API-produced scan of partition 3 had its normalized event written to
# any of the 8 partitions of `notifications`. With murmur2 everywhere, the topics keyed by
# shipment_id are co-partitioned: each pipeline process's transaction touches its own partitions
# only (six interleaved pairs at 5,000 scans/s: Kafka 0.23 vs 0.25 cores, mean p50 0.49 vs 0.57 s,
# docs/bench/pipeline.md), and a shipment's label, scans and events keep one partition number.
# Changing the partitioner of a live topic's producers moves keys: drain `scan-events` first
# (a scan that lands on a new partition has its state rebuilt from PostgreSQL, never guessed).
KAFKA_PARTITIONER = "murmur2_random"  # murmur2 for keyed records; null keys spread at random


def kafka_producer_config(bootstrap_servers: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A confluent_kafka Producer's configuration: the servers, the shared partitioner, `config`."""
    return {"bootstrap.servers": bootstrap_servers, "partitioner": KAFKA_PARTITIONER, **(config or {})}


def cassandra_cluster(settings: Settings, *, connect_timeout: float | None = None) -> Any:
    from cassandra import ProtocolVersion
    from cassandra.cluster import Cluster
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    c = settings.cassandra
    return Cluster(
        c.contact_points, port=c.port, protocol_version=ProtocolVersion.V5,
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=c.local_dc)),
        connect_timeout=connect_timeout or c.connect_timeout_s,
        # Nagle off: a batch request larger than one TCP segment otherwise waits for the server's
        # delayed ACK (~40 ms on Linux) before its last segment leaves. Measured on one node: a
        # 64-row batch took 42.6 ms one at a time with Nagle on, 2-3 ms with it off
        # (docs/bench/pipeline.md). The driver leaves sockets at the OS default.
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
