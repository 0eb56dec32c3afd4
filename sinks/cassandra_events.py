"""cassandra_tracking_events: AcceptedScan batches in → `tracking_events` rows out (one per accepted scan).

The row key is (shipment_id, created_at, event_id), so a replayed checkpoint rewrites the same rows.
As the first sink of the scan pipeline, each accepted scan's insert starts asynchronously when the
scan arrives (`begin`), so Cassandra works while the next scans are processed; the checkpoint
flush waits for them (`write_records`). Any failure raises backpressure: quixstreams pauses, seeks
back to the last committed offset and replays, nothing is skipped. Rows written for a checkpoint
that never committed carry their source offsets, so a state rebuild ignores them (directories.py).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from cassandra.query import UNSET_VALUE
from pydantic import Field
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from operators.registry import BuildContext, StepConfig, sink
from operators.transition import RETURN_NAMESPACE, AcceptedScan
from sinks.cql_values import RowEncoder, add_rows
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
    # Inserts started ahead of the checkpoint and not yet confirmed; past this the oldest is awaited.
    max_in_flight: int = Field(default=4096, ge=1, le=65536)
    # Rows per unlogged batch (one request). Keep batches under Cassandra's
    # batch_size_warn_threshold (stack/cassandra/cassandra.yaml sets 64 KiB; rows are ~0.55 KiB).
    # Measured on one node: 64 rows per batch cost Cassandra ~35% less CPU per row than 16, and the
    # driver a quarter of the requests; 128 cost more again.
    batch_rows: int = Field(default=64, ge=1, le=256)


U = UNSET_VALUE


def _v(value: Any) -> Any:
    return U if value is None else value


def event_rows(scan: AcceptedScan, now: datetime, partition: int | None = None,
               offset: int | None = None) -> list[tuple[Any, ...]]:
    """The rows one accepted scan writes: its own, plus LABEL_CREATED of a return it started.
    Each row records the scan-events (partition, offset) it came from (see 0002 migration)."""
    # Absent values are bound as UNSET, not NULL: a NULL in an INSERT writes a tombstone cell that
    # Cassandra stores, compacts and reads past; an unset column writes nothing and reads back as
    # null all the same. Every write of a row carries the same values (a replay rewrites them).
    src = (U if partition is None else partition, U if offset is None else offset)
    ev = scan.event
    raw = ev.raw_scan_data
    loc = ev.location
    prev = scan.previous_status
    reason = ev.reason_code
    rows: list[tuple[Any, ...]] = [(
        ev.shipment_id, ev.created_at, ev.event_id, ev.event_type.value, scan.status.value,
        U if prev is None else prev.value, _v(ev.facility_id), _v(ev.scan_device_id),
        U if loc is None else loc.lat, U if loc is None else loc.lng,
        U if reason is None else reason.value, _v(ev.driver_id), _v(ev.route_id), scan.attempt_count,
        U if raw is None else raw if isinstance(raw, str) else orjson.dumps(raw).decode(), now, *src,
    )]
    ret = scan.return_shipment
    if ret is not None:
        if ret.event_id is not None:  # automatic return: the pipeline's own RETURN_TO_SENDER event
            rows.append((
                ev.shipment_id, ev.created_at, ret.event_id, "RETURN_TO_SENDER", "RETURN_TO_SENDER",
                scan.scan_status.value, _v(ev.facility_id), "pipeline", U, U,
                U if ret.reason_code is None else ret.reason_code.value, U, U, scan.attempt_count,
                json.dumps({"return_shipment": ret.tracking_number}), now, *src,
            ))
        rows.append((
            ret.shipment_id, ev.created_at, return_label_event_id(ret.shipment_id), "LABEL_CREATED",
            "LABEL_CREATED", U, _v(ev.facility_id), "pipeline", U, U, U, U, U, 0,
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
        self.abandon()

    _pending: deque[tuple[list[tuple[Any, ...]], Any]]
    _open: dict[Any, list[tuple[Any, ...]]]
    _begun: int
    _rows: int

    def setup(self) -> None:
        self.abandon()
        settings = self._ctx.require("settings")
        self._keyspace = settings.cassandra.keyspace
        self._cluster = cassandra_cluster(settings)
        self._session = self._cluster.connect(self._keyspace)
        self._session.default_timeout = self._config.request_timeout_s
        self._insert = self._session.prepare(INSERT)
        self._encode = RowEncoder.for_statement(self._insert, self._cluster.protocol_version)
        self._refresh_topology()

    def _refresh_topology(self) -> None:
        """Once per checkpoint, not per row: with a single node every row shares one replica set."""
        self._multi_node = len(self._cluster.metadata.all_hosts()) > 1

    # Rows go out as UNLOGGED batches of up to `batch_rows` rows that share a replica set (token-aware
    # grouping): one request and one future per batch instead of per row, which is most of the
    # driver's Python cost. Rows of different shipments in one batch are independent upserts; an
    # unlogged batch gives no atomicity, which a replayable idempotent write does not need.

    def _replica(self, row: tuple[Any, ...]) -> Any:
        if not self._multi_node:
            return None
        # Grouped by replica set, as the Spark Cassandra Connector's batch.grouping.key=replica_set.
        return frozenset(self._cluster.metadata.get_replicas(self._keyspace, self._insert.bind(row).routing_key))

    def _send(self, rows: list[tuple[Any, ...]]) -> Any:
        from cassandra.query import BatchStatement, BatchType

        try:
            if len(rows) == 1:
                return self._session.execute_async(self._insert, rows[0])
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            add_rows(batch, self._insert, self._encode, rows)
            return self._session.execute_async(batch)
        except Exception:  # noqa: BLE001 - the store is away: retried, then backpressure, at the checkpoint
            return None

    def begin(self, scan: AcceptedScan, meta: Any) -> None:
        """Start this scan's inserts (in replica-grouped batches); `write_records` waits for them."""
        for row in event_rows(scan, datetime.now(UTC), meta.partition, meta.offset):
            group = self._replica(row)
            rows = self._open.setdefault(group, [])
            rows.append(row)
            self._rows += 1
            if len(rows) >= self._config.batch_rows:
                del self._open[group]
                self._start(rows)
        self._begun += 1

    def _start(self, rows: list[tuple[Any, ...]]) -> None:
        if len(self._pending) * self._config.batch_rows >= self._config.max_in_flight:
            self._settle_oldest()
        self._pending.append((rows, self._send(rows)))

    def abandon(self) -> None:
        """The checkpoint is dropped (backpressure or error): forget the started writes; the replay
        writes the same rows again."""
        self._pending, self._open, self._begun, self._rows = deque(), {}, 0, 0

    def _settle_oldest(self) -> None:
        """Wait for the oldest started batch (bounds the writes in flight); keep a failure to retry."""
        rows, future = self._pending.popleft()
        try:
            if future is None:
                raise RuntimeError("not started")
            future.result()
        except Exception:  # noqa: BLE001 - retried (then backpressure) at the checkpoint
            self._pending.append((rows, None))

    def write_records(self, scans: list[AcceptedScan], metas: list[Any]) -> None:
        """The checkpoint's scans (all partitions). Started ones are awaited; failed inserts get one
        more concurrent try, then backpressure."""
        t0 = time.perf_counter()
        self._refresh_topology()
        if self._begun == len(scans):
            for rows in self._open.values():
                self._start(rows)
            pending, n = self._pending, self._rows
            self.abandon()
            retry: list[tuple[Any, ...]] = []
            for rows, future in pending:
                try:
                    if future is None:
                        raise RuntimeError("not started")
                    future.result()
                except Exception:  # noqa: BLE001 - one more try below, then backpressure
                    retry.extend(rows)
            if retry:
                self._execute(retry)
        else:  # not started as they came (the sink is not first in the tail): write them now
            self.abandon()
            now = datetime.now(UTC)
            rows = [row for scan, m in zip(scans, metas, strict=True)
                    for row in event_rows(scan, now, m.partition, m.offset)]
            n = len(rows)
            if rows:
                self._execute(rows)
        metrics = self._ctx.resources.metrics
        if metrics is not None and n:
            metrics.sink_flush(self._ctx.step_id, time.perf_counter() - t0, n)

    def write(self, batch: SinkBatch) -> None:
        now = datetime.now(UTC)
        rows = [row for item in batch for row in event_rows(item.value, now, batch.partition, item.offset)]
        t0 = time.perf_counter()
        if rows:
            self._execute(rows)
            metrics = self._ctx.resources.metrics
            if metrics is not None:
                metrics.sink_flush(self._ctx.step_id, time.perf_counter() - t0, len(rows))

    def _execute(self, rows: list[tuple[Any, ...]]) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

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
