"""validate: raw record in, ScanEvent or a Reject with the documented reason out."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest

from models.domain import EventType, Facility, ScanEvent
from operators.ports import InMemoryFacilities
from operators.registry import BuildContext, Emit, MessageMeta, Reject, Resources, StepContext
from operators.validate import REJECT_REASONS, ValidateConfig, build_validate, validate_scan
from topologies.testing import DEFAULT_NOW, FrozenClock, scan_payload

SHIPMENT = uuid.UUID("7a0c5a3e-9a43-4c1e-8f3a-0d2b6c1e4f55")
FACILITIES = InMemoryFacilities([Facility(facility_id="HUB-1"), Facility(facility_id="DS-9")])


def meta(key: Any = str(SHIPMENT), timestamp_ms: int | None = None) -> MessageMeta:
    ts = int(DEFAULT_NOW.timestamp() * 1000) if timestamp_ms is None else timestamp_ms
    k = key.encode() if isinstance(key, str) else key
    return MessageMeta(topic="scan-events", partition=3, offset=42, key=k, timestamp_ms=ts)


def run(
    value: Any,
    *,
    config: ValidateConfig | None = None,
    m: MessageMeta | None = None,
    clock: FrozenClock | None = None,
) -> Emit[ScanEvent] | Reject:
    return validate_scan(
        value,
        m or meta(),
        config=config or ValidateConfig(),
        clock=clock or FrozenClock(),
        facilities=FACILITIES,
    )


def raw(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def payload(event_type: str = "ARRIVAL", **kw: Any) -> dict[str, Any]:
    return scan_payload(event_type, SHIPMENT, **kw)


def reject_of(outcome: Any) -> Reject:
    assert isinstance(outcome, Reject), outcome
    return outcome


# --- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", [e.value for e in EventType])
def test_every_event_type_with_its_required_fields_is_accepted(event_type: str) -> None:
    out = run(orjson.dumps(payload(event_type)))
    assert isinstance(out, Emit)
    assert out.value.event_type == EventType(event_type)
    assert out.value.shipment_id == SHIPMENT


@pytest.mark.parametrize("shape", ["bytes", "str", "dict", "bytearray"])
def test_accepts_bytes_str_and_dict(shape: str) -> None:
    body = payload()
    value: Any = {
        "bytes": orjson.dumps(body),
        "str": orjson.dumps(body).decode(),
        "dict": body,
        "bytearray": bytearray(orjson.dumps(body)),
    }[shape]
    assert isinstance(run(value), Emit)


def test_optional_fields_and_raw_scan_data_pass_verbatim() -> None:
    body = payload(
        "OUT_FOR_DELIVERY",
        location={"lat": 45.76, "lng": 4.84},
        driver_id="drv-1",
        route_id="r-9",
        raw_scan_data={"barcode": "1Z999", "symbology": "code128"},
    )
    out = run(orjson.dumps(body))
    assert isinstance(out, Emit)
    assert out.value.raw_scan_data == {"barcode": "1Z999", "symbology": "code128"}
    assert out.value.location is not None and out.value.location.lat == 45.76


# --- size and JSON ------------------------------------------------------------------------------


def test_oversized_payload_is_rejected_before_parsing() -> None:
    body = payload(raw_scan_data="x" * 5000)
    r = reject_of(run(orjson.dumps(body), config=ValidateConfig(max_payload_bytes=1024)))
    assert r.reason == "oversized_payload"
    assert r.detail["max_payload_bytes"] == 1024
    assert r.detail["size_bytes"] > 1024


@pytest.mark.parametrize("value", [b"{not json", b"\xff\xfe\x00garbage", b"", b"   ", None, "{'a': 1}"])
def test_malformed_json(value: Any) -> None:
    assert reject_of(run(value)).reason == "malformed_json"


@pytest.mark.parametrize("value", [b"[1, 2]", b'"a string"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_invalid_payload(value: bytes) -> None:
    r = reject_of(run(value))
    assert r.reason == "invalid_payload"
    assert "expected a JSON object" in r.detail["error"]


def test_unsupported_python_type_is_invalid_payload() -> None:
    assert reject_of(run(12345)).reason == "invalid_payload"


# --- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"shipment_id": 12}, "shipment_id"),
        ({"event_type": "TELEPORTED"}, "event_type"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2026-03-02T11:00:00"}, "created_at"),  # no zone
        ({"location": {"lat": 95, "lng": 0}}, "location.lat"),
        ({"reason_code": "aliens"}, "reason_code"),
        ({"unexpected": 1}, "unexpected"),
        ({"scan_device_id": ""}, "scan_device_id"),
    ],
)
def test_schema_errors_are_invalid_payload_with_a_field_summary(change: dict[str, Any], field: str) -> None:
    body = {**payload(), **change}
    r = reject_of(run(orjson.dumps(body)))
    assert r.reason == "invalid_payload"
    fields = [e["field"] for e in r.detail["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert r.detail["error_count"] >= 1


def test_missing_required_field_is_invalid_payload() -> None:
    body = payload()
    del body["scan_device_id"]
    r = reject_of(run(orjson.dumps(body)))
    assert r.reason == "invalid_payload"
    assert {"field": "scan_device_id", "error": "Field required"} in r.detail["errors"]


def test_epoch_number_created_at_is_not_read_as_a_timestamp() -> None:
    body = {**payload(), "created_at": int(DEFAULT_NOW.timestamp())}
    r = reject_of(run(orjson.dumps(body)))
    assert r.reason == "invalid_payload"
    assert r.detail["errors"][0]["field"] == "created_at"


def test_detail_never_echoes_input_values() -> None:
    body = {**payload(), "event_id": "secret-personal-data"}
    r = reject_of(run(orjson.dumps(body)))
    assert "secret-personal-data" not in orjson.dumps(r.detail).decode()


@pytest.mark.parametrize("event_type", ["EXCEPTION", "DELIVERY_ATTEMPTED"])
@pytest.mark.parametrize("missing", ["absent", None, ""])
def test_missing_reason_code(event_type: str, missing: Any) -> None:
    body = payload(event_type)
    if missing == "absent":
        del body["reason_code"]
    else:
        body["reason_code"] = missing
    r = reject_of(run(orjson.dumps(body)))
    assert r.reason == "missing_reason_code"
    assert r.detail == {"event_type": event_type}


@pytest.mark.parametrize("event_type", ["PICKUP", "ARRIVAL", "DEPARTURE", "OUT_FOR_DELIVERY"])
@pytest.mark.parametrize("missing", ["absent", None, ""])
def test_missing_facility(event_type: str, missing: Any) -> None:
    body = payload(event_type)
    if missing == "absent":
        del body["facility_id"]
    else:
        body["facility_id"] = missing
    r = reject_of(run(orjson.dumps(body)))
    assert r.reason == "missing_facility"


def test_facility_is_optional_for_delivered() -> None:
    body = payload("DELIVERED")
    del body["facility_id"]
    assert isinstance(run(orjson.dumps(body)), Emit)


# --- times ----------------------------------------------------------------------------------------


def test_time_in_future_beyond_skew() -> None:
    cfg = ValidateConfig(max_future_skew_s=300)
    ok = payload(created_at=DEFAULT_NOW + timedelta(seconds=299))
    late = payload(created_at=DEFAULT_NOW + timedelta(seconds=301))
    assert isinstance(run(orjson.dumps(ok), config=cfg), Emit)
    r = reject_of(run(orjson.dumps(late), config=cfg))
    assert r.reason == "time_in_future"
    assert r.detail["max_future_skew_s"] == 300


def test_time_too_old() -> None:
    cfg = ValidateConfig(max_past_age_days=30)
    ok = payload(created_at=DEFAULT_NOW - timedelta(days=29, hours=23))
    old = payload(created_at=DEFAULT_NOW - timedelta(days=30, seconds=1))
    assert isinstance(run(orjson.dumps(ok), config=cfg), Emit)
    assert reject_of(run(orjson.dumps(old), config=cfg)).reason == "time_too_old"


def test_times_are_judged_against_the_record_timestamp_so_replays_agree() -> None:
    # Replayed 60 days later: the wall clock moved, the record's timestamp did not.
    clock = FrozenClock(DEFAULT_NOW + timedelta(days=60))
    body = orjson.dumps(payload(created_at=DEFAULT_NOW - timedelta(minutes=5)))
    assert isinstance(run(body, clock=clock), Emit)
    by_clock = run(body, clock=clock, config=ValidateConfig(reference_time="clock"))
    assert reject_of(by_clock).reason == "time_too_old"


def test_clock_is_the_reference_when_the_record_has_no_timestamp() -> None:
    clock = FrozenClock(DEFAULT_NOW)
    future = orjson.dumps(payload(created_at=DEFAULT_NOW + timedelta(hours=1)))
    r = reject_of(run(future, clock=clock, m=meta(timestamp_ms=0)))
    assert r.reason == "time_in_future"
    assert r.detail["reference_time"] == DEFAULT_NOW.isoformat()


def test_zone_offsets_are_compared_as_instants() -> None:
    # 13:00+01:00 is 12:00Z, i.e. exactly the reference time.
    body = {**payload(), "created_at": "2026-03-02T13:00:00+01:00"}
    assert isinstance(run(orjson.dumps(body), config=ValidateConfig(max_future_skew_s=0)), Emit)


# --- key --------------------------------------------------------------------------------------------


def test_key_must_equal_the_shipment_id() -> None:
    other = str(uuid.uuid4())
    r = reject_of(run(orjson.dumps(payload()), m=meta(key=other)))
    assert r.reason == "key_mismatch"
    assert r.detail == {"key": other, "shipment_id": str(SHIPMENT)}


@pytest.mark.parametrize("key", [None, str(SHIPMENT).upper(), str(SHIPMENT).replace("-", ""), b"\xff\xfe"])
def test_missing_or_non_canonical_key_is_a_mismatch(key: Any) -> None:
    # Upper case or hyphen-less ids would split one shipment's state across keys.
    assert reject_of(run(orjson.dumps(payload()), m=meta(key=key))).reason == "key_mismatch"


def test_keyless_records_pass_when_the_key_is_not_required() -> None:
    cfg = ValidateConfig(require_key=False)
    assert isinstance(run(orjson.dumps(payload()), m=meta(key=None), config=cfg), Emit)
    other = str(uuid.uuid4())
    assert reject_of(run(orjson.dumps(payload()), m=meta(key=other), config=cfg)).reason == "key_mismatch"


# --- facility ---------------------------------------------------------------------------------------


def test_unknown_facility() -> None:
    r = reject_of(run(orjson.dumps(payload(facility_id="NOWHERE"))))
    assert r.reason == "unknown_facility"
    assert r.detail == {"facility_id": "NOWHERE", "event_type": "ARRIVAL"}


def test_facility_check_can_be_turned_off() -> None:
    cfg = ValidateConfig(check_facility=False)
    out = validate_scan(
        orjson.dumps(payload(facility_id="NOWHERE")), meta(), config=cfg, clock=FrozenClock(), facilities=None
    )
    assert isinstance(out, Emit)


def test_factory_accepts_a_plain_callable_as_facility_directory() -> None:
    calls: list[str] = []

    def exists(facility_id: str) -> bool:
        calls.append(facility_id)
        return facility_id == "DS-9"

    ctx = BuildContext(
        "scan-pipeline", "validate", "validate", Resources(clock=FrozenClock(), facilities=exists)
    )
    step = build_validate(ctx, ValidateConfig())
    assert isinstance(step(orjson.dumps(payload(facility_id="DS-9")), StepContext(meta())), Emit)
    assert (
        reject_of(step(orjson.dumps(payload(facility_id="X")), StepContext(meta()))).reason
        == "unknown_facility"
    )
    assert calls == ["DS-9", "X"]


def test_checks_run_cheapest_first_and_the_directory_is_asked_last() -> None:
    asked: list[str] = []

    def exists(facility_id: str) -> bool:
        asked.append(facility_id)
        return False

    bad_key = meta(key=str(uuid.uuid4()))
    out = validate_scan(
        orjson.dumps(payload(facility_id="NOWHERE")),
        bad_key,
        config=ValidateConfig(),
        clock=FrozenClock(),
        facilities=InMemoryFacilitiesProxy(exists),
    )
    assert reject_of(out).reason == "key_mismatch"
    assert asked == []


class InMemoryFacilitiesProxy:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def exists(self, facility_id: str) -> bool:
        return bool(self.fn(facility_id))


def test_every_declared_reason_is_snake_case_and_documented() -> None:
    assert set(REJECT_REASONS) == {
        "oversized_payload",
        "malformed_json",
        "invalid_payload",
        "missing_reason_code",
        "missing_facility",
        "time_in_future",
        "time_too_old",
        "unknown_facility",
        "key_mismatch",
    }


def test_config_forbids_unknown_knobs() -> None:
    with pytest.raises(ValueError):
        ValidateConfig.model_validate({"max_payload_byte": 10})
