"""The TrackingEvent rows the Cassandra sink binds: absent values are UNSET, never NULL."""

from __future__ import annotations

import uuid
from datetime import timedelta

from cassandra.query import UNSET_VALUE

from models.domain import ReasonCode, ScanEvent, ShipmentInfo, Status
from operators.ports import InMemoryShipments
from operators.registry import DictState, PrefixedState
from operators.transition import AcceptedScan, ShipmentIdentity, TransitionConfig, apply_scan
from sinks.cassandra_events import INSERT, event_rows
from topologies.testing import DEFAULT_NOW, scan_payload

SHIPMENT = uuid.UUID("6a0c1f1e-0d44-4a55-9f0e-2a7c5b1d9e01")
COLUMNS = [c.strip() for c in INSERT.split("(", 1)[1].split(")", 1)[0].split(",")]


def accepted(event_type: str, status: Status, **scan: object) -> AcceptedScan:
    ev = ScanEvent.model_validate(scan_payload(event_type, SHIPMENT, **scan))  # type: ignore[arg-type]
    info = ShipmentInfo(shipment_id=SHIPMENT, tracking_number="PTROWS", created_at=DEFAULT_NOW - timedelta(days=1))
    return AcceptedScan(
        event=ev, shipment=info, previous_status=Status.PICKED_UP, scan_status=status, status=status,
        attempt_count=0, attempt_counted=False, last_event_at=ev.created_at,
    )


def as_dict(row: tuple[object, ...]) -> dict[str, object]:
    assert len(row) == len(COLUMNS)
    return dict(zip(COLUMNS, row, strict=True))


def test_absent_values_are_unset_so_no_tombstone_is_written() -> None:
    row = as_dict(event_rows(accepted("ARRIVAL", Status.IN_TRANSIT), DEFAULT_NOW, 3, 41)[0])
    assert None not in row.values()
    for column in ("lat", "lng", "reason_code", "driver_id", "route_id", "raw_scan_data"):
        assert row[column] is UNSET_VALUE, column
    assert row["facility_id"] == "HUB-1"
    assert row["previous_status"] == "PICKED_UP"
    assert (row["source_partition"], row["source_offset"]) == (3, 41)


def test_present_values_are_bound_as_they_are() -> None:
    scan = accepted(
        "EXCEPTION", Status.EXCEPTION, reason_code=ReasonCode.WEATHER_DELAY,
        location={"lat": 33.7, "lng": -84.4}, raw_scan_data={"dev": 1},
    )
    row = as_dict(event_rows(scan, DEFAULT_NOW)[0])
    assert (row["lat"], row["lng"]) == (33.7, -84.4)
    assert row["reason_code"] == "weather_delay"
    assert row["raw_scan_data"] == '{"dev":1}'
    # No scan-events position (the plain write path): unset too, not null.
    assert row["source_partition"] is UNSET_VALUE and row["source_offset"] is UNSET_VALUE


def test_an_automatic_return_writes_three_rows_without_nulls() -> None:
    state = PrefixedState(DictState(), "transition")
    identity = ShipmentIdentity(b"rows-secret-0123456789abcdef")
    directory = InMemoryShipments()
    config = TransitionConfig()
    out = None
    for at, et in enumerate(["LABEL_CREATED", "PICKUP", "ARRIVAL", "OUT_FOR_DELIVERY", "DELIVERY_ATTEMPTED",
                             "OUT_FOR_DELIVERY", "DELIVERY_ATTEMPTED", "OUT_FOR_DELIVERY",
                             "DELIVERY_ATTEMPTED"]):
        ev = ScanEvent.model_validate(scan_payload(et, SHIPMENT, created_at=DEFAULT_NOW + timedelta(hours=at)))
        out = apply_scan(state, ev, config=config, identity=identity, shipments=directory)
    scan = out.value  # type: ignore[union-attr]
    assert scan.status is Status.RETURN_TO_SENDER
    rows = [as_dict(r) for r in event_rows(scan, DEFAULT_NOW, 0, 9)]
    assert [r["event_type"] for r in rows] == ["DELIVERY_ATTEMPTED", "RETURN_TO_SENDER", "LABEL_CREATED"]
    assert all(None not in r.values() for r in rows)
    assert rows[2]["previous_status"] is UNSET_VALUE and rows[2]["lat"] is UNSET_VALUE
