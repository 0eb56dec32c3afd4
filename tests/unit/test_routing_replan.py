"""The route-planner's pure parts: normalized events and reschedule requests into route events (or
drops and dead-letter reasons), and a stored route's state into a re-plan request and back into rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from operators.registry import Drop, Emit, MessageMeta, Reject, StepContext
from operators.route_plan import RescheduleEventStep, RouteEventStep
from routing.models import SpeedProfile
from routing.planner import plan
from routing.replan import NO_COORDINATES, PICKUP, RouteState, StopState, build_request, rows_from_plan

T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
CTX = StepContext(message=MessageMeta(topic="notifications", partition=3, offset=17, key=None,
                                      timestamp_ms=int(T0.timestamp() * 1000)))


def event(event_type: str, **kw) -> bytes:
    body = {"shipment_id": str(uuid.uuid4()), "event_type": event_type, "created_at": T0.isoformat(),
            "facility": {"id": "DS-1"}, "driver_id": "d1", "route_id": "r1"} | kw
    return json.dumps(body).encode()


@pytest.mark.parametrize(("event_type", "extra", "kind"), [
    ("OUT_FOR_DELIVERY", {}, "add"),
    ("DELIVERED", {}, "delivered"),
    ("DELIVERY_ATTEMPTED", {}, "attempted"),
    ("EXCEPTION", {"reason_code": "refused"}, "attempted"),
])
def test_route_events(event_type: str, extra: dict, kind: str) -> None:
    out = RouteEventStep("route_event")(event(event_type, **extra), CTX)
    assert isinstance(out, Emit) and out.value.kind == kind and out.value.source == "notifications:3:17"
    assert out.value.route_id == "r1" and out.value.facility_id == "DS-1"


@pytest.mark.parametrize(("value", "reason"), [
    (event("ARRIVAL"), "not_a_route_event"),
    (event("EXCEPTION", reason_code="weather_delay"), "not_a_route_event"),
    (event("OUT_FOR_DELIVERY", route_id=None), "no_route"),
])
def test_other_events_are_dropped(value: bytes, reason: str) -> None:
    out = RouteEventStep("route_event")(value, CTX)
    assert out == Drop(reason)


@pytest.mark.parametrize(("value", "reason", "detail"), [
    (b"{not json", "malformed_json", "not JSON"),
    (event("DELIVERED", shipment_id="x"), "invalid_event", "shipment_id"),
    (event("OUT_FOR_DELIVERY", facility=None), "missing_facility", "depot"),
])
def test_bad_events_are_rejected_with_the_reason(value: bytes, reason: str, detail: str) -> None:
    out = RouteEventStep("route_event")(value, CTX)
    assert isinstance(out, Reject) and out.reason == reason and detail in out.detail


def resched(**kw) -> bytes:
    return json.dumps({"shipment_id": str(uuid.uuid4())} | kw).encode()


def test_reschedules() -> None:
    step = RescheduleEventStep("reschedule_event")
    w = step(resched(kind="window", window_start=T0.isoformat(), window_end=(T0 + timedelta(hours=1)).isoformat()),
             CTX)
    assert isinstance(w, Emit) and w.value.kind == "window" and w.value.window_end - w.value.window_start == \
        timedelta(hours=1) and w.value.at == T0
    p = step(resched(kind="pickup", pickup_facility_id="DS-2"), CTX)
    assert isinstance(p, Emit) and p.value.kind == "pickup" and p.value.pickup_facility_id == "DS-2"


@pytest.mark.parametrize(("body", "detail"), [
    ({"kind": "window", "window_start": T0.isoformat(), "window_end": (T0 - timedelta(hours=1)).isoformat()},
     "is not after window_start"),
    ({"kind": "window", "window_start": T0.isoformat()}, "needs window_start and window_end"),
    ({"kind": "pickup"}, "needs pickup_facility_id"),
    ({"kind": "teleport"}, "kind must be"),
    ({"kind": "window", "window_start": "2024-06-03T12:00:00", "window_end": "2024-06-03T13:00:00"},
     "time zone"),
])
def test_bad_reschedules_are_rejected_with_the_reason(body: dict, detail: str) -> None:
    out = RescheduleEventStep("reschedule_event")(resched(**body), CTX)
    assert isinstance(out, Reject) and out.reason == "invalid_reschedule" and detail in out.detail


def stop(i: int, status: str = "planned", **kw) -> StopState:
    base = dict(shipment_id=uuid.UUID(int=i + 1), lat=40.60 + 0.004 * i, lng=-75.49 + 0.003 * (i % 3),
                status=status, unserved_reason=None, window_start=None, window_end=None, visited_at=None,
                seq=None, planned_arrival=None)
    return StopState(**(base | kw))


def route(stops: list[StopState]) -> RouteState:
    return RouteState("r1", "d1", 40.6084, -75.4902, T0, T0 + timedelta(hours=10), stops)


def replan(state: RouteState, now: datetime):
    request, kept = build_request(state, now, service_s=60, speed=SpeedProfile(), time_limit_s=0.3)
    assert request is not None
    return request, kept, rows_from_plan(state, plan(request))


def test_first_plan_orders_every_stop() -> None:
    state = route([stop(i) for i in range(6)])
    request, kept, rows = replan(state, T0)
    assert kept == [] and request.drivers[0].position is None
    assert sorted(r.seq for r in rows) == list(range(1, 7)) and all(r.status == "planned" for r in rows)
    assert all(r.planned_arrival >= T0 for r in rows)


def test_replan_keeps_visited_stops_in_visit_order_and_starts_after_the_last_visit() -> None:
    now = T0 + timedelta(hours=1)
    stops = [stop(i) for i in range(6)]
    stops[4] = stop(4, "done", visited_at=T0 + timedelta(minutes=20), seq=5, planned_arrival=T0)
    stops[2] = stop(2, "attempted", visited_at=T0 + timedelta(minutes=40), seq=1)
    request, _, rows = replan(route(stops), now)
    assert request.drivers[0].visited == [str(uuid.UUID(int=5)), str(uuid.UUID(int=3))]
    by_id = {r.shipment_id: r for r in rows}
    assert (by_id[uuid.UUID(int=5)].seq, by_id[uuid.UUID(int=5)].status) == (1, "done")
    assert by_id[uuid.UUID(int=5)].planned_arrival == T0  # a visited stop keeps its times
    assert (by_id[uuid.UUID(int=3)].seq, by_id[uuid.UUID(int=3)].status) == (2, "attempted")
    rest = [r for r in rows if r.status == "planned"]
    assert sorted(r.seq for r in rest) == [3, 4, 5, 6] and all(r.planned_arrival >= now for r in rest)


def test_pickup_and_missing_coordinates_stay_out_and_windows_are_used() -> None:
    w = (T0 + timedelta(hours=3), T0 + timedelta(hours=4))
    stops = [stop(0), stop(1, "unserved", unserved_reason=PICKUP), stop(2, lat=None),
             stop(3, window_start=w[0], window_end=w[1]), stop(4, "unserved", unserved_reason="window_conflict")]
    _, kept, rows = replan(route(stops), T0)
    assert {(r.shipment_id.int, r.unserved_reason) for r in kept} == {(2, PICKUP), (3, NO_COORDINATES)}
    by_id = {r.shipment_id.int: r for r in rows}
    assert w[0] <= by_id[4].planned_arrival <= w[1]
    assert by_id[5].status == "planned"  # an earlier unserved stop is offered again


@pytest.mark.parametrize("name", ["route_planner.yaml", "route_planner_reschedules.yaml"])
def test_route_planner_topologies_lint_clean(name: str) -> None:
    from pathlib import Path

    from topologies.lint import lint_file

    path = Path(__file__).resolve().parents[2] / "topologies" / name
    assert lint_file(path) == []
