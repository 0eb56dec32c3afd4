"""RowEncoder and add_rows give the driver's own bytes: checked against `bind()` and `BatchStatement.add`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cassandra import cqltypes
from cassandra.protocol import ColumnMetadata
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, PreparedStatement

from sinks.cassandra_events import INSERT, event_rows
from sinks.cql_values import RowEncoder, add_rows

V5 = 5
COLUMNS = [  # tracking_events, in INSERT's order (stack/cql)
    ("shipment_id", cqltypes.UUIDType), ("created_at", cqltypes.DateType), ("event_id", cqltypes.UUIDType),
    ("event_type", cqltypes.VarcharType), ("status", cqltypes.VarcharType),
    ("previous_status", cqltypes.VarcharType), ("facility_id", cqltypes.VarcharType),
    ("scan_device_id", cqltypes.VarcharType), ("lat", cqltypes.DoubleType), ("lng", cqltypes.DoubleType),
    ("reason_code", cqltypes.VarcharType), ("driver_id", cqltypes.VarcharType), ("route_id", cqltypes.VarcharType),
    ("attempt_count", cqltypes.Int32Type), ("raw_scan_data", cqltypes.VarcharType),
    ("ingested_at", cqltypes.DateType), ("source_partition", cqltypes.Int32Type), ("source_offset", cqltypes.LongType),
]


def prepared() -> PreparedStatement:
    meta = [ColumnMetadata("tracking", "tracking_events", name, typ) for name, typ in COLUMNS]
    return PreparedStatement(meta, b"qid", [0], INSERT, "tracking", V5, [], None)


def driver_values(row: tuple[Any, ...]) -> list[Any]:
    return list(prepared().bind(row).values)


NOW = datetime(2026, 12, 5, 15, 4, 5, 678_901, tzinfo=UTC)
ROWS = [
    (uuid.uuid4(), NOW, uuid.uuid4(), "ARRIVAL", "IN_TRANSIT", "PICKED_UP", "HUB-ATL", "dev-1", 33.75, -84.39,
     UNSET_VALUE, UNSET_VALUE, UNSET_VALUE, 0, UNSET_VALUE, NOW, 3, 12_345_678_901),
    (uuid.uuid4(), NOW.astimezone(timezone(timedelta(hours=-5))), uuid.uuid4(), "EXCEPTION", "EXCEPTION", None,
     "STN-Ünïcode", "dev-2", None, None, "refused", "drv-7", "route-1", 2, '{"k": "v"}', NOW, 0, 0),
    # what the fast paths leave to the driver: naive times, ints for doubles, floats as times
    (uuid.uuid4(), NOW.replace(tzinfo=None), uuid.uuid4(), "PICKUP", "PICKED_UP", "LABEL_CREATED", "F",
     "d", 33, -84, UNSET_VALUE, UNSET_VALUE, UNSET_VALUE, 1, UNSET_VALUE, 1_796_485_526_826.0, 7, 2**40),
    (uuid.uuid4(), datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC), uuid.uuid4(), "A", "B", "C", "D",
     "E", 0.1, 0.2, "r", "x", "y", -1, "z", datetime(2100, 1, 1, tzinfo=UTC), -2, -(2**62)),
]


@pytest.mark.parametrize("row", ROWS)
def test_rows_serialise_to_the_drivers_bytes(row: tuple[Any, ...]) -> None:
    assert RowEncoder.for_statement(prepared(), V5)(row) == driver_values(row)


def test_millisecond_edges_of_zoned_times() -> None:
    enc = RowEncoder([cqltypes.DateType], V5)
    for micro in (0, 1, 499, 500, 999, 999_499, 999_500, 999_999):
        t = NOW.replace(microsecond=micro)
        assert enc((t,)) == [cqltypes.DateType.serialize(t, V5)], micro


def test_bad_values_fail_as_in_the_driver() -> None:
    enc = RowEncoder.for_statement(prepared(), V5)
    bad = list(ROWS[0])
    bad[0] = "not-a-uuid"
    with pytest.raises(TypeError):
        driver_values(tuple(bad))
    with pytest.raises(TypeError):
        enc(tuple(bad))
    with pytest.raises(ValueError, match="17 values for 18 columns"):
        enc(ROWS[0][:-1])


def test_other_types_go_through_the_drivers_serialiser() -> None:
    enc = RowEncoder([cqltypes.AsciiType, cqltypes.BooleanType], V5)
    assert enc(("abc", True)) == [cqltypes.AsciiType.serialize("abc", V5), cqltypes.BooleanType.serialize(True, V5)]
    with pytest.raises(UnicodeEncodeError):  # ascii refuses what varchar would encode
        enc(("é", True))


def test_unset_needs_protocol_v4() -> None:
    with pytest.raises(ValueError, match="v4"):
        RowEncoder([cqltypes.UUIDType], 3)


def test_add_rows_builds_the_batch_add_would() -> None:
    ps, enc = prepared(), RowEncoder.for_statement(prepared(), V5)
    ours, theirs = BatchStatement(batch_type=BatchType.UNLOGGED), BatchStatement(batch_type=BatchType.UNLOGGED)
    add_rows(ours, ps, enc, ROWS)
    for r in ROWS:
        theirs.add(ps, r)
    assert ours._statements_and_parameters == theirs._statements_and_parameters  # noqa: SLF001
    assert (ours.routing_key, ours.keyspace) == (theirs.routing_key, theirs.keyspace) != (None, None)


def test_the_sinks_own_rows_encode_as_the_driver_binds_them() -> None:
    from models.domain import ReasonCode, Status
    from tests.unit.test_cassandra_rows import accepted

    scans = [accepted("ARRIVAL", Status.IN_TRANSIT),
             accepted("EXCEPTION", Status.EXCEPTION, reason_code=ReasonCode.WEATHER_DELAY,
                      location={"lat": 33.7, "lng": -84.4}, raw_scan_data={"dev": 1})]
    enc = RowEncoder.for_statement(prepared(), V5)
    for scan in scans:
        for part in ((5, 99), (None, None)):
            for r in event_rows(scan, NOW, *part):
                assert enc(r) == driver_values(r)
