"""validate_heartbeat and the pure parts of the GEO sink and the simulated driver."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from api.tracking import haversine_km as haversine
from operators.driver_location import (
    REJECT_REASONS,
    Heartbeat,
    ValidateHeartbeatConfig,
    ValidateHeartbeatStep,
    coordinate_problem,
    parse_heartbeat,
)
from operators.registry import Emit, MessageMeta, Reject, StepContext
from simulator.driver import approach, offset_point
from sinks.redis_geo import driver_key, fleet_key, live_message, newest_per_driver

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def body(**kw: Any) -> dict[str, Any]:
    return {"driver_id": "drv-1", "lat": 40.7, "lng": -74.0, "recorded_at": NOW.isoformat(), **kw}


def test_a_good_heartbeat_parses() -> None:
    hb = parse_heartbeat(orjson.dumps(body(speed_mps=8.5)), key="drv-1", now=NOW)
    assert isinstance(hb, Heartbeat) and hb.lat == 40.7 and hb.speed_mps == 8.5
    assert hb.recorded_at.tzinfo is not None


@pytest.mark.parametrize(("lat", "lng", "why"), [
    (91, 0.5, "outside"), (86, 0.5, "outside"), (-85.1, 3, "outside"), (10, 180.5, "outside"),
    ("40", -74, "number"), (True, -74, "number"), (None, -74, "number"), (float("nan"), 1, "finite"),
    (float("inf"), 1, "finite"), (0, 0, "null island"),
])
def test_bad_coordinates_have_a_reason(lat: Any, lng: Any, why: str) -> None:
    problem = coordinate_problem(lat, lng)
    assert problem is not None and why in problem


def test_edges_of_the_valid_range() -> None:
    assert coordinate_problem(85.05, 180) is None and coordinate_problem(-85.05, -180) is None


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{nope", "malformed_json"),
    (b"[1, 2]", "invalid_payload"),
    (orjson.dumps(body(lat=120)), "invalid_coordinates"),
    (orjson.dumps(body(lat="12")), "invalid_coordinates"),
    (orjson.dumps(body(recorded_at="2026-03-02T12:00:00")), "invalid_payload"),  # no zone
    (orjson.dumps(body(recorded_at=1772452800)), "invalid_payload"),
    (orjson.dumps(body(driver_id="bad id with spaces")), "invalid_payload"),
    (orjson.dumps(body(extra_field=1)), "invalid_payload"),
    (orjson.dumps(body(driver_id="drv-2")), "key_mismatch"),
    (orjson.dumps(body(recorded_at=(NOW + timedelta(hours=1)).isoformat())), "time_in_future"),
])
def test_bad_heartbeats_are_rejected_with_a_documented_reason(raw: bytes, reason: str) -> None:
    out = parse_heartbeat(raw, key="drv-1", now=NOW)
    assert isinstance(out, Reject) and out.reason == reason
    assert reason in REJECT_REASONS


def test_the_step_judges_time_by_the_record_timestamp_and_needs_a_key() -> None:
    step = ValidateHeartbeatStep(ValidateHeartbeatConfig())
    ts = int(NOW.timestamp() * 1000)
    ok = step(orjson.dumps(body()), StepContext(MessageMeta("driver-locations", 0, 1, b"drv-1", ts)))
    assert isinstance(ok, Emit) and ok.value.driver_id == "drv-1"
    nokey = step(orjson.dumps(body()), StepContext(MessageMeta("driver-locations", 0, 2, None, ts)))
    assert isinstance(nokey, Reject) and nokey.reason == "key_mismatch"
    # the record timestamp is the reference (a replay decides the same): a fix a day after it is "future"
    old = step(orjson.dumps(body()), StepContext(MessageMeta("driver-locations", 0, 3, b"drv-1", ts - 86_400_000)))
    assert isinstance(old, Reject) and old.reason == "time_in_future"


def test_only_each_drivers_newest_fix_of_a_batch_is_written() -> None:
    a1 = Heartbeat(driver_id="a", lat=1, lng=1, recorded_at=NOW)
    a2 = Heartbeat(driver_id="a", lat=2, lng=2, recorded_at=NOW + timedelta(seconds=30))
    a_late = Heartbeat(driver_id="a", lat=9, lng=9, recorded_at=NOW)  # arrives last, recorded earlier
    b = Heartbeat(driver_id="b", lat=3, lng=3, recorded_at=NOW)
    got = {h.driver_id: h for h in newest_per_driver([a1, a2, b, a_late])}
    assert got["a"] == a2 and got["b"] == b


def test_keys_and_live_message() -> None:
    hb = Heartbeat(driver_id="drv-9", lat=40.5, lng=-74.25, recorded_at=NOW)
    assert fleet_key(hb.recorded_at) == "fleet:2026-03-02" and driver_key("drv-9") == "driver:drv-9:location"
    assert orjson.loads(live_message(hb)) == {"driver_id": "drv-9", "lat": 40.5, "lng": -74.25,
                                              "recorded_at": NOW.isoformat()}


def test_the_simulated_driver_approaches_the_address() -> None:
    dest = (44.98, -93.27)
    start = offset_point(*dest, 3.0, 315.0)
    assert haversine(*start, *dest) == pytest.approx(3.0, rel=0.02)
    pts = approach(start, dest, 12)
    assert pts[0] == pytest.approx(start) and pts[-1] == pytest.approx(dest)
    dists = [haversine(*p, *dest) for p in pts]
    assert all(later < earlier for earlier, later in zip(dists, dists[1:], strict=False))
    with pytest.raises(ValueError):
        approach(start, dest, 1)
    assert not any(math.isnan(c) for p in pts for c in p)
