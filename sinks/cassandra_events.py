"""cassandra_tracking_events: AcceptedScan batches in → `tracking_events` rows out (one per accepted scan).

The row key is (shipment_id, created_at, event_id), so a replayed checkpoint rewrites the same rows.
Each checkpoint's batch runs as concurrent prepared statements; any failure raises backpressure:
quixstreams pauses, seeks back to the last committed offset and retries, nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from operators.registry import BuildContext, StepConfig, sink
from operators.transition import RETURN_NAMESPACE, AcceptedScan
from sinks.stores import cassandra_cluster

log = logging.getLogger(__name__)

INSERT = (
    "INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status, previous_status, "
    "facility_id, scan_device_id, lat, lng, reason_code, driver_id, route_id, attempt_count, raw_scan_data, "
    "ingested_at, source_partition, source_offset) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class CassandraEventsConfig(StepConfig):
    concurrency: int = Field(default=64, ge=1, le=1024)
    retry_after_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)


def event_rows(scan: AcceptedScan, now: datetime, partition: int | None = None,
               offset: int | None = None) -> list[tuple[Any, ...]]:
    """The rows one accepted scan writes: its own, plus LABEL_CREATED of a return it started.
    Each row records the scan-events (partition, offset) it came from (see 0002 migration)."""
    src = (partition, offset)
    ev = scan.event
    raw = ev.raw_scan_data
    rows: list[tuple[Any, ...]] = [(
        ev.shipment_id, ev.created_at, ev.event_id, ev.event_type.value, scan.status.value,
        scan.previous_status.value if scan.previous_status else None, ev.facility_id, ev.scan_device_id,
        ev.location.lat if ev.location else None, ev.location.lng if ev.location else None,
        ev.reason_code.value if ev.reason_code else None, ev.driver_id, ev.route_id, scan.attempt_count,
        raw if isinstance(raw, str) or raw is None else json.dumps(raw, separators=(",", ":")), now, *src,
    )]
    ret = scan.return_shipment
    if ret is not None:
        if ret.event_id is not None:  # automatic return: the pipeline's own RETURN_TO_SENDER event
            rows.append((
                ev.shipment_id, ev.created_at, ret.event_id, "RETURN_TO_SENDER", "RETURN_TO_SENDER",
                scan.scan_status.value, ev.facility_id, "pipeline", None, None,
                ret.reason_code.value if ret.reason_code else None, None, None, scan.attempt_count,
                json.dumps({"return_shipment": ret.tracking_number}), now, *src,
            ))
        rows.append((
            ret.shipment_id, ev.created_at, return_label_event_id(ret.shipment_id), "LABEL_CREATED",
            "LABEL_CREATED", None, ev.facility_id, "pipeline", None, None, None, None, None, 0,
            json.dumps({"return_of": str(ev.shipment_id)}), now, *src,
        ))
    return rows


def return_label_event_id(return_shipment_id: uuid.UUID) -> uuid.UUID:
    """The LABEL_CREATED event of a return shipment: derived, so a replay rewrites the same row."""
    return uuid.uuid5(RETURN_NAMESPACE, f"label:{return_shipment_id}")


@sink("cassandra_tracking_events", config=CassandraEventsConfig)
class CassandraTrackingEventsSink(BatchingSink):
    """Write each accepted scan as an immutable TrackingEvent row in Cassandra (idempotent upsert)."""

    def __init__(self, ctx: BuildContext, config: CassandraEventsConfig) -> None:
        super().__init__()
        self._ctx = ctx
        self._config = config
        self._cluster: Any = None
        self._session: Any = None
        self._insert: Any = None

    def setup(self) -> None:
        settings = self._ctx.require("settings")
        self._cluster = cassandra_cluster(settings)
        self._session = self._cluster.connect(settings.cassandra.keyspace)
        self._session.default_timeout = self._config.request_timeout_s
        self._insert = self._session.prepare(INSERT)

    def write(self, batch: SinkBatch) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        now = datetime.now(UTC)
        rows = [row for item in batch for row in event_rows(item.value, now, batch.partition, item.offset)]
        if not rows:
            return
        t0 = time.perf_counter()
        try:
            results = execute_concurrent_with_args(
                self._session, self._insert, rows, concurrency=self._config.concurrency,
                raise_on_first_error=False,
            )
        except Exception as exc:  # noqa: BLE001 - NoHostAvailable and friends: the store is away
            log.warning("cassandra write failed (%s); backing off %.1fs", exc, self._config.retry_after_s)
            raise SinkBackpressureError(retry_after=self._config.retry_after_s) from exc
        failed = [r.result_or_exc for r in results if not r.success]
        if failed:
            log.warning("%d of %d cassandra writes failed (first: %s); backing off %.1fs",
                        len(failed), len(rows), failed[0], self._config.retry_after_s)
            raise SinkBackpressureError(retry_after=self._config.retry_after_s)
        metrics = self._ctx.resources.metrics
        if metrics is not None:
            metrics.sink_flush(self._ctx.step_id, time.perf_counter() - t0, len(rows))
