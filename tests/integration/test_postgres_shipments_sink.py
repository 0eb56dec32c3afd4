"""The PostgreSQL shipments sink on the real server: one checkpoint's batch (one transaction) moves
rows forward, never backwards, and records the error of the ETA it had promised before a delivery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from config.settings import Settings
from models.domain import ScanEvent, ShipmentInfo, Status
from models.eta.base import Eta
from operators.metrics import PipelineMetrics
from operators.registry import BuildContext, Resources
from operators.transition import AcceptedScan
from sinks.postgres_shipments import UPDATE, PostgresShipmentsConfig, PostgresShipmentsSink, update_rows
from topologies.testing import scan_payload

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def shipments(stack: Settings):  # type: ignore[no-untyped-def]
    ids = [uuid.uuid4() for _ in range(3)]
    with psycopg.connect(stack.postgres.dsn) as conn:
        for sid in ids:
            conn.execute("INSERT INTO shipments (shipment_id, tracking_number, service_level, status, created_at, "
                         "last_event_at, eta, eta_source) VALUES (%s, %s, 'STANDARD', 'OUT_FOR_DELIVERY', %s, %s, %s, "
                         "'rule')", (sid, f"PTPGS{uuid.uuid4().hex[:12].upper()}", T0 - timedelta(days=2), T0,
                                     T0 + timedelta(hours=9)))
    yield ids
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("DELETE FROM shipments WHERE shipment_id = ANY(%s)", (ids,))


def accepted(sid: uuid.UUID, event_type: str, status: Status, at: datetime) -> AcceptedScan:
    ev = ScanEvent.model_validate(scan_payload(event_type, sid, created_at=at))  # type: ignore[arg-type]
    info = ShipmentInfo(shipment_id=sid, tracking_number="PTPGS", created_at=T0 - timedelta(days=2))
    eta = None if status is Status.DELIVERED else Eta(at=at + timedelta(hours=5), source="rule",
                                                      low=at + timedelta(hours=4), high=at + timedelta(hours=8))
    return AcceptedScan(event=ev, shipment=info, previous_status=Status.OUT_FOR_DELIVERY, scan_status=status,
                        status=status, attempt_count=0, attempt_counted=False, last_event_at=at, eta=eta)


def test_one_checkpoint_moves_rows_forward_and_measures_the_promise(stack: Settings, shipments) -> None:  # type: ignore[no-untyped-def]
    reg = CollectorRegistry()
    metrics = PipelineMetrics(reg, "scan-pipeline")
    ctx = BuildContext("scan-pipeline", "persist_shipment", "postgres_shipments",
                       Resources(settings=stack, metrics=metrics))
    sink = PostgresShipmentsSink(ctx, PostgresShipmentsConfig())
    sink.setup()
    delivered, attempted, stale = shipments
    sink.write_records([
        accepted(delivered, "DELIVERED", Status.DELIVERED, T0 + timedelta(hours=7)),  # 2 h before the promise
        accepted(attempted, "DELIVERY_ATTEMPTED", Status.DELIVERY_ATTEMPTED, T0 + timedelta(hours=1)),
        accepted(stale, "DELIVERY_ATTEMPTED", Status.DELIVERY_ATTEMPTED, T0 - timedelta(hours=1)),  # older: ignored
    ], None)
    with psycopg.connect(stack.postgres.dsn) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT shipment_id, status::text, eta, last_event_at FROM shipments WHERE shipment_id = ANY(%s)",
            (shipments,))}
    assert rows[delivered] == ("DELIVERED", None, T0 + timedelta(hours=7))
    assert rows[attempted] == ("DELIVERY_ATTEMPTED", T0 + timedelta(hours=6), T0 + timedelta(hours=1))
    assert rows[stale] == ("OUT_FOR_DELIVERY", T0 + timedelta(hours=9), T0)  # never moved backwards
    # the ETA promised before the delivery (read in the same transaction, before the UPDATE): 2 h early
    assert reg.get_sample_value("parcel_eta_error_hours_count", {"topology": "scan-pipeline", "source": "rule"}) == 1
    labels = {"topology": "scan-pipeline", "source": "rule"}
    assert reg.get_sample_value("parcel_eta_error_hours_bucket", {**labels, "le": "-2.0"}) == 1
    assert reg.get_sample_value("parcel_eta_error_hours_bucket", {**labels, "le": "-6.0"}) == 0


def test_the_pipeline_update_is_a_heap_only_update_after_the_first(stack: Settings) -> None:
    """Migration 0007: no column the pipeline's UPDATE changes is indexed (the fresh-label flag only
    on the first update), so PostgreSQL writes later updates into the row's page without touching
    an index (HOT). Counted by the server for the current transaction."""
    sid = uuid.uuid4()
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("INSERT INTO shipments (shipment_id, tracking_number, service_level, status, created_at) "
                     "VALUES (%s, %s, 'STANDARD', 'LABEL_CREATED', %s)",
                     (sid, f"PTPGS{uuid.uuid4().hex[:12].upper()}", T0 - timedelta(days=2)))
    counts = "SELECT pg_stat_get_xact_tuples_updated(%s::regclass), pg_stat_get_xact_tuples_hot_updated(%s::regclass)"
    try:
        moves = [("PICKUP", Status.PICKED_UP, T0), ("ARRIVAL", Status.IN_TRANSIT, T0 + timedelta(hours=3)),
                 ("DEPARTURE", Status.IN_TRANSIT, T0 + timedelta(hours=5))]
        seen = []
        for event_type, status, at in moves:
            with psycopg.connect(stack.postgres.dsn) as conn:  # one transaction per checkpoint
                conn.execute(UPDATE, (update_rows([accepted(sid, event_type, status, at)]).decode(),))
                seen.append(conn.execute(counts, ("shipments", "shipments")).fetchone())
            with psycopg.connect(stack.postgres.dsn) as conn:
                fresh, last = conn.execute("SELECT label_fresh, last_event_at FROM shipments WHERE shipment_id = %s",
                                           (sid,)).fetchone()
            assert (fresh, last) == (False, at)
        assert seen == [(1, 0), (1, 1), (1, 1)]  # the first leaves the fresh-labels index; the rest are HOT
    finally:
        with psycopg.connect(stack.postgres.dsn) as conn:
            conn.execute("DELETE FROM shipments WHERE shipment_id = %s", (sid,))
