"""Prometheus metrics of a topology, built on a registry passed in (faust style) so tests and
several topologies in one process stay isolated. Records in, outcomes/transitions/dead letters out.

Counters are incremented while processing, so a replay after a crash counts its records again:
they measure work done, not unique scans.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Per-record step latencies are sub-millisecond to a few hundred ms (a directory lookup).
STEP_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PipelineMetrics:
    """All metrics of one topology; every series carries the `topology` label."""

    def __init__(self, registry: CollectorRegistry, topology: str) -> None:
        self.registry = registry
        self.topology = topology
        self._record_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.step_records = Counter(
            "parcel_step_records_total",
            "Records handled by a topology step, by outcome (emit, drop, reject).",
            ["topology", "step", "outcome"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "parcel_step_seconds",
            "Time spent in one step for one record.",
            ["topology", "step"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.drops = Counter(
            "parcel_dropped_records_total",
            "Records a step dropped on purpose, by reason.",
            ["topology", "step", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "parcel_dead_letters_total",
            "Records sent to the dead-letter topic, by step and reason.",
            ["topology", "step", "reason"],
            registry=registry,
        )
        self.transitions = Counter(
            "parcel_transitions_total",
            "Accepted status transitions (from_status 'NONE' when the scan created the shipment).",
            ["topology", "from_status", "to_status"],
            registry=registry,
        )
        self.duplicates = Counter(
            "parcel_duplicate_scans_total",
            "Scans dropped because their event_id was already accepted.",
            ["topology", "step"],
            registry=registry,
        )
        self.returns = Counter(
            "parcel_returns_to_sender_total",
            "Shipments turned RETURN_TO_SENDER, by trigger (max_attempts, scan).",
            ["topology", "trigger"],
            registry=registry,
        )
        self.out_of_order = Counter(
            "parcel_out_of_order_scans_total",
            "Accepted scans whose created_at is older than the shipment's last event.",
            ["topology", "step"],
            registry=registry,
        )
        self.state_rebuilds = Counter(
            "parcel_state_rebuilds_total",
            "Missing per-shipment state looked up in the shipment directory, by result.",
            ["topology", "step", "result"],
            registry=registry,
        )
        self.sink_records = Counter(
            "parcel_sink_records_total",
            "Records written by a sink (for sinks to report from write()).",
            ["topology", "sink"],
            registry=registry,
        )
        self.sink_flush_seconds = Histogram(
            "parcel_sink_flush_seconds",
            "Time one sink takes to write one checkpoint batch.",
            ["topology", "sink"],
            registry=registry,
        )

        self.persist_latency = Histogram(
            "parcel_scan_to_persist_seconds",
            "From a scan's Kafka record timestamp (when the device/label API sent it) to the end of "
            "the checkpoint write that persisted it.",
            ["topology"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "parcel_consumer_lag",
            "Records of the input topic not yet committed by the topology's consumer group.",
            ["topology", "topic", "partition"],
            registry=registry,
        )
        self.eta_errors = Histogram(
            "parcel_eta_error_hours",
            "At delivery: delivered time minus the ETA last stored (positive: late), by ETA source.",
            ["topology", "source"],
            buckets=(-72, -48, -24, -12, -6, -2, 0, 2, 6, 12, 24, 48, 72),
            registry=registry,
        )

    # Small helpers so call sites stay one line and always carry the topology label.

    def record(self, step: str, outcome: str, seconds: float) -> None:
        # Called for every record of every step: the labelled children are looked up once.
        key = (step, outcome)
        children = self._record_children.get(key)
        if children is None:
            children = (self.step_records.labels(self.topology, step, outcome),
                        self.step_seconds.labels(self.topology, step))
            self._record_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def dropped(self, step: str, reason: str) -> None:
        self.drops.labels(self.topology, step, reason).inc()

    def dead_letter(self, step: str, reason: str) -> None:
        self.dead_letters.labels(self.topology, step, reason).inc()

    def transition(self, from_status: str | None, to_status: str) -> None:
        self.transitions.labels(self.topology, from_status or "NONE", to_status).inc()

    def duplicate(self, step: str) -> None:
        self.duplicates.labels(self.topology, step).inc()

    def returned(self, trigger: str) -> None:
        self.returns.labels(self.topology, trigger).inc()

    def out_of_order_scan(self, step: str) -> None:
        self.out_of_order.labels(self.topology, step).inc()

    def state_rebuild(self, step: str, result: str) -> None:
        self.state_rebuilds.labels(self.topology, step, result).inc()

    def sink_flush(self, sink: str, seconds: float, records: int) -> None:
        """For sinks, from `write()`: one checkpoint batch of `records` written in `seconds`."""
        self.sink_records.labels(self.topology, sink).inc(records)
        self.sink_flush_seconds.labels(self.topology, sink).observe(seconds)

    def persisted(self, seconds: float) -> None:
        self.persist_latency.labels(self.topology).observe(max(seconds, 0.0))

    def persisted_many(self, seconds: list[float]) -> None:
        child = self.persist_latency.labels(self.topology)
        for s in seconds:
            child.observe(max(s, 0.0))

    def lag(self, topic: str, partition: int, records: int) -> None:
        self.consumer_lag.labels(self.topology, topic, str(partition)).set(records)

    def eta_error(self, source: str, hours: float) -> None:
        self.eta_errors.labels(self.topology, source).observe(hours)
