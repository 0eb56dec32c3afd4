"""The pure parts of the API: progress steps, ETA wording, the public view (no personal data, the
driver only while out for delivery), SSE event bodies, credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from psycopg.types.range import Range

from api.auth import role_of
from api.tracking import (
    DriverView,
    Shipment,
    driver_move_view,
    eta_view,
    haversine_km,
    progress_steps,
    public_view,
    status_event_view,
)
from config.settings import ApiSettings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def row(status: str = "IN_TRANSIT", **kw: Any) -> dict[str, Any]:
    return {"shipment_id": uuid.uuid4(), "tracking_number": "PT0123456789ABCDEFG", "status": status,
            "service_level": "STANDARD", "eta": NOW + timedelta(days=1), "eta_source": "model",
            "eta_interval": Range(NOW + timedelta(hours=20), NOW + timedelta(hours=30)), "model_version": "v3",
            "attempt_count": 0, "last_event_at": NOW, "dest_lat": 44.977812, "dest_lng": -93.265011,
            "dest_city": "Minneapolis", "dest_state": "MN", **kw}


def event(event_type: str, status: str, facility: str | None, driver: str | None = None) -> Any:
    return SimpleNamespace(created_at=NOW.replace(tzinfo=None), event_type=event_type, status=status,
                           facility_id=facility, reason_code=None, driver_id=driver)


FACILITIES = {"DS-1": {"facility_id": "DS-1", "name": "Minneapolis Delivery Station 01", "city": "Minneapolis",
                       "state": "MN"}}


def current(steps: list[dict[str, Any]]) -> str:
    return next(s["key"] for s in steps if s["current"])


@pytest.mark.parametrize(("status", "want"), [
    ("LABEL_CREATED", "LABEL_CREATED"), ("PICKED_UP", "PICKED_UP"), ("IN_TRANSIT", "IN_TRANSIT"),
    ("OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY"), ("DELIVERED", "DELIVERED"),
    ("DELIVERY_ATTEMPTED", "OUT_FOR_DELIVERY"), ("RETURN_TO_SENDER", "IN_TRANSIT"),
])
def test_progress_steps(status: str, want: str) -> None:
    steps = progress_steps(status)
    assert current(steps) == want and len(steps) == 5
    idx = [s["key"] for s in steps].index(want)
    assert all(s["done"] for s in steps[:idx])


def test_an_exception_stays_where_the_shipment_was() -> None:
    assert current(progress_steps("EXCEPTION", ["LABEL_CREATED", "PICKED_UP"])) == "PICKED_UP"
    assert all(s["done"] for s in progress_steps("DELIVERED"))


def test_eta_says_estimated_for_the_rule_fallback() -> None:
    assert eta_view(row())["estimated"] is False  # type: ignore[index]
    rule = eta_view(row(eta_source="rule"))
    assert rule is not None and rule["estimated"] is True and rule["source"] == "rule"
    assert rule["interval"]["from"].startswith("2026-03-03T08:00")
    assert eta_view(row(eta=None)) is None
    route = eta_view(row(eta_source="route", model_version="route-v1"))
    assert route is not None and route["source"] == "route" and route["estimated"] is False


def test_public_view_has_no_personal_data_and_rounds_the_destination() -> None:
    s = Shipment(row=row(recipient_address={"name": "Ana Silva"}, phone="+15551234567"),
                 events=[event("ARRIVAL", "IN_TRANSIT", "DS-1")], facilities=FACILITIES)
    view = public_view(s)
    text = repr(view)
    for secret in ("Ana Silva", "+15551234567", "44.977812", "-93.265011", "recipient"):
        assert secret not in text
    assert view["destination"] == {"city": "Minneapolis", "state": "MN", "approx": {"lat": 44.978, "lng": -93.265}}
    assert view["events"][0]["facility"] == {"name": "Minneapolis Delivery Station 01", "city": "Minneapolis",
                                             "state": "MN"}
    assert view["events"][0]["at"].endswith("Z")


def test_the_driver_shows_only_while_out_for_delivery() -> None:
    driver = DriverView("drv-1", lat=44.99, lng=-93.27, distance_km=1.456,
                        progress={"stop_number": 7, "total_stops": 23, "stops_remaining": 6, "planned_arrival": None})
    ofd = Shipment(row=row("OUT_FOR_DELIVERY"), driver=driver)
    got = public_view(ofd)["driver"]
    assert got == {"position": {"lat": 44.99, "lng": -93.27}, "distance_km": 1.46, "stop_number": 7,
                   "total_stops": 23, "stops_remaining": 6, "planned_arrival": None}
    for status in ("IN_TRANSIT", "DELIVERED", "DELIVERY_ATTEMPTED", "EXCEPTION"):
        assert public_view(Shipment(row=row(status), driver=driver))["driver"] is None
    assert public_view(Shipment(row=row("DELIVERED")))["eta"] is None


def test_the_driver_id_comes_from_the_last_out_for_delivery_scan() -> None:
    s = Shipment(row=row("OUT_FOR_DELIVERY"), events=[event("OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", "DS-1", "d1"),
                                                      event("EXCEPTION", "EXCEPTION", None),
                                                      event("OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", "DS-1", "d2")])
    assert s.driver_id_from_events() == "d2"


def test_sse_bodies_carry_no_internal_ids() -> None:
    move = driver_move_view({"driver_id": "drv-1", "lat": 44.987812, "lng": -93.265011, "recorded_at": "t"},
                            (44.977812, -93.265011))
    assert set(move) == {"position", "recorded_at", "distance_km"}
    assert move["distance_km"] == pytest.approx(1.11, abs=0.01)
    note = {"shipment_id": "x", "tracking_number": "PT", "driver_id": "drv-1", "route_id": "r", "event_type":
            "OUT_FOR_DELIVERY", "status": "OUT_FOR_DELIVERY", "facility": {"id": "DS-1", "name": "N", "city": "C"},
            "created_at": "t", "eta": None}
    ev = status_event_view(note)
    assert "driver_id" not in ev and "shipment_id" not in ev and "route_id" not in ev
    assert ev["facility"] == {"name": "N", "city": "C"} and current(ev["steps"]) == "OUT_FOR_DELIVERY"


def test_haversine_matches_redis_geo_distances() -> None:
    # Redis: GEODIST of (13.361389 38.115556) and (15.087269 37.502669) is 166274.1516 m
    assert haversine_km(38.115556, 13.361389, 37.502669, 15.087269) == pytest.approx(166.2742, abs=0.001)


def test_roles() -> None:
    api = ApiSettings(driver_keys=["d-key"], operations_keys=["o-key"])
    assert role_of("d-key", api) == "driver" and role_of("o-key", api) == "operations"
    assert role_of("nope", api) is None and role_of(None, api) is None and role_of("", api) is None
