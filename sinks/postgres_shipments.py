"""postgres_shipments: AcceptedScan batches in → the Shipment rows' status, ETA, attempt count and
last_event_at out, in one guarded UPDATE per checkpoint (plus inserts for shipments the pipeline
itself starts: linked returns, and shipments a scanner's LABEL_CREATED introduced).

The guard `last_event_at <= EXCLUDED.last_event_at` means a replayed (older) checkpoint never moves a
row backwards. An unreachable PostgreSQL raises backpressure: pause, seek back, retry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import psycopg
from pydantic import Field
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from operators.registry import BuildContext, StepConfig, sink
from operators.transition import AcceptedScan

log = logging.getLogger(__name__)

# The rows travel as one JSON array (built by orjson in C) that PostgreSQL unpacks with
# json_to_recordset: ten typed arrays cost psycopg's Python array dumpers ~4x more per checkpoint.
UPDATE = """
UPDATE shipments AS s SET
    status = v.status::shipment_status,
    attempt_count = v.attempt_count,
    last_event_at = v.last_event_at,
    last_event_id = v.last_event_id,
    eta = v.eta,
    eta_source = v.eta_source,
    eta_interval = CASE WHEN v.eta_low IS NULL OR v.eta_high IS NULL THEN NULL
                        ELSE tstzrange(LEAST(v.eta_low, v.eta_high), GREATEST(v.eta_low, v.eta_high), '[]') END,
    model_version = v.model_version,
    label_fresh = false,
    updated_at = now()
FROM json_to_recordset(%s::json)
     AS v(shipment_id uuid, status text, attempt_count int, last_event_at timestamptz, last_event_id uuid,
          eta timestamptz, eta_source text, eta_low timestamptz, eta_high timestamptz, model_version text)
WHERE s.shipment_id = v.shipment_id
  AND (s.last_event_at IS NULL OR s.last_event_at <= v.last_event_at)
"""

# A scanner's LABEL_CREATED for a shipment no label call created: the row holds what the scan knew.
INSERT_SCANNED = """
INSERT INTO shipments (shipment_id, tracking_number, service_level, status, created_at)
SELECT * FROM unnest(%s::uuid[], %s::text[], %s::service_level[], %s::shipment_status[], %s::timestamptz[])
ON CONFLICT (shipment_id) DO NOTHING
"""

# The linked return: back from the destination to the original's origin facility, sender and
# recipient swapped. Derived ids make the insert idempotent.
INSERT_RETURN = """
INSERT INTO shipments (shipment_id, tracking_number, sender_id, recipient_id, recipient_address, dest_lat,
                       dest_lng, weight_grams, dimensions, service_level, status, origin_facility_id,
                       destination_facility_id, created_at, return_of, last_event_at)
SELECT v.shipment_id, v.tracking_number, o.recipient_id, o.sender_id,
       jsonb_build_object('facility_id', o.origin_facility_id, 'return_of', o.tracking_number),
       f.lat, f.lng, o.weight_grams, o.dimensions, o.service_level, 'LABEL_CREATED', o.destination_facility_id,
       o.origin_facility_id, v.created_at, o.shipment_id, v.created_at
FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::timestamptz[]) AS v(shipment_id, tracking_number, return_of,
                                                                       created_at)
JOIN shipments o ON o.shipment_id = v.return_of
LEFT JOIN facilities f ON f.facility_id = o.origin_facility_id
ON CONFLICT (shipment_id) DO NOTHING
"""


class PostgresShipmentsConfig(StepConfig):
    retry_after_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: int = Field(default=5, ge=1)


def latest_per_shipment(scans: list[AcceptedScan]) -> list[AcceptedScan]:
    """The last accepted scan of each shipment in the batch (arrival order is state order)."""
    last: dict[Any, AcceptedScan] = {}
    for scan in scans:
        last[scan.shipment_id] = scan
    return list(last.values())


def update_rows(scans: list[AcceptedScan]) -> bytes:
    """The UPDATE's parameter: the last scan of each shipment as a JSON array of row objects."""
    rows = []
    for scan in latest_per_shipment(scans):
        eta = scan.eta
        rows.append({
            "shipment_id": scan.shipment_id, "status": scan.status.value, "attempt_count": scan.attempt_count,
            "last_event_at": scan.last_event_at, "last_event_id": scan.event.event_id,
            "eta": eta.at if eta else None, "eta_source": eta.source if eta and eta.at else None,
            "eta_low": eta.low if eta else None, "eta_high": eta.high if eta else None,
            "model_version": eta.model_version if eta else None,
        })
    return orjson.dumps(rows)


@sink("postgres_shipments", config=PostgresShipmentsConfig)
class PostgresShipmentsSink(BatchingSink):
    """Update each Shipment's status, ETA, attempts and last_event_at in one guarded statement per batch."""

    def __init__(self, ctx: BuildContext, config: PostgresShipmentsConfig) -> None:
        super().__init__()
        self._ctx = ctx
        self._config = config
        self._conn: psycopg.Connection[Any] | None = None

    def setup(self) -> None:
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            settings = self._ctx.require("settings")
            self._conn = psycopg.connect(settings.postgres.dsn, connect_timeout=self._config.connect_timeout_s)
        return self._conn

    def write(self, batch: SinkBatch) -> None:
        self.write_records([item.value for item in batch], None)

    def write_records(self, scans: list[AcceptedScan], metas: Any) -> None:
        """One checkpoint's scans of every partition: one transaction, one guarded UPDATE."""
        if not scans:
            return
        t0 = time.perf_counter()
        scanned = [s for s in scans if s.created_by_scan]
        returns = [s.return_shipment for s in scans if s.return_shipment is not None]
        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cur:
                if scanned:
                    cur.execute(INSERT_SCANNED, (
                        [s.shipment_id for s in scanned], [s.shipment.tracking_number for s in scanned],
                        [s.shipment.service_level.value for s in scanned], [s.status.value for s in scanned],
                        [s.shipment.created_at for s in scanned]))
                delivered = [s for s in latest_per_shipment(scans) if s.status.value == "DELIVERED"]
                promised = {}
                if delivered:  # the ETA we last promised, to record its error (drift on the dashboard)
                    cur.execute("SELECT shipment_id, eta, eta_source FROM shipments WHERE shipment_id = ANY(%s) "
                                "AND status <> 'DELIVERED' AND eta IS NOT NULL", ([s.shipment_id for s in delivered],))
                    promised = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
                cur.execute(UPDATE, (update_rows(scans).decode(),))
                if returns:
                    cur.execute(INSERT_RETURN, (
                        [r.shipment_id for r in returns], [r.tracking_number for r in returns],
                        [r.return_of for r in returns], [r.created_at for r in returns]))
        except psycopg.OperationalError as exc:
            log.warning("postgres write failed (%s); backing off %.1fs", exc, self._config.retry_after_s)
            if self._conn is not None:
                self._conn.close()
            raise SinkBackpressureError(retry_after=self._config.retry_after_s) from exc
        metrics = self._ctx.resources.metrics
        if metrics is not None:
            metrics.sink_flush(self._ctx.step_id, time.perf_counter() - t0, len(scans))
            for scan in delivered:
                if scan.shipment_id in promised:
                    eta, source = promised[scan.shipment_id]
                    metrics.eta_error(source, (scan.event.created_at - eta).total_seconds() / 3600)
