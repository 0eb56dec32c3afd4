"""The planner end to end on small requests: windows, lateness, reasons for unserved stops, several
drivers, re-planning with visited stops fixed, and input rejected with a clear message."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from routing.matrix import FixedMatrix, HaversineMatrix
from routing.models import PlanRequest, SpeedProfile, UnservedReason
from routing.planner import plan

TZ = timezone(timedelta(hours=2))
T0 = datetime(2024, 6, 3, 8, 0, tzinfo=TZ)
DEPOT = {"lat": 48.1351, "lng": 11.5820}


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def point(i: int) -> dict:
    # Distinct real coordinates; FixedMatrix tests ignore them.
    return {"lat": 48.1351 + 0.001 * (i + 1), "lng": 11.5820 + 0.001 * (i + 1)}


def request(stops: list[dict], **kw) -> PlanRequest:
    body = {"depot": DEPOT, "shift": {"start": at(0), "end": at(8 * 60)}, "stops": stops, "time_limit_s": 0.5}
    body.update(kw)
    return PlanRequest.model_validate(body)


def line_matrix(n_stops: int, minutes_apart: float = 10.0) -> FixedMatrix:
    """Depot and stops on a line, `minutes_apart` between neighbours."""
    return line(*range(1, n_stops + 1), minutes_apart=minutes_apart)


def line(*stop_positions: float, minutes_apart: float = 10.0) -> FixedMatrix:
    """Depot at 0 and each stop at its position on a line, in units of `minutes_apart`."""
    pos = np.array([0.0, *stop_positions]) * minutes_apart * 60.0
    return FixedMatrix(np.abs(pos[:, None] - pos[None, :]))


def by_id(p) -> dict:
    return {s.stop_id: s for r in p.routes for s in r.stops}


def test_hard_windows_are_respected() -> None:
    stops = [
        {"stop_id": "a", "location": point(0), "service_s": 300, "windows": [{"start": at(90), "end": at(100)}]},
        {"stop_id": "b", "location": point(1), "service_s": 300, "windows": [{"start": at(30), "end": at(45)}]},
        {"stop_id": "c", "location": point(2), "service_s": 300},
    ]
    p = plan(request(stops), line_matrix(3))
    assert not p.unserved
    got = by_id(p)
    for s in stops:
        for w in s.get("windows", []):
            start, end = datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"])
            assert start <= got[s["stop_id"]].service_start <= end
    assert [s.stop_id for s in p.routes[0].stops].index("b") < [s.stop_id for s in p.routes[0].stops].index("a")


def test_soft_window_is_served_late_and_the_lateness_reported() -> None:
    # 30 minutes away, soft window closing after 10 minutes: served 20 minutes late.
    stops = [
        {
            "stop_id": "late",
            "location": point(2),
            "service_s": 60,
            "windows": [{"start": at(0), "end": at(10), "soft": True}],
            "late_penalty_per_minute": 2,
        }
    ]
    p = plan(request(stops), line(3))
    assert p.engine == "ortools" and not p.unserved
    assert by_id(p)["late"].late_minutes == pytest.approx(20.0)


def test_stop_whose_window_has_passed() -> None:
    stops = [
        {"stop_id": "gone", "location": point(2), "windows": [{"start": at(0), "end": at(10)}]},
        {"stop_id": "ok", "location": point(0)},
    ]
    p = plan(request(stops), line(3, 1))
    assert [(u.stop_id, u.reason) for u in p.unserved] == [("gone", UnservedReason.WINDOW_PASSED)]
    assert "after the last window closes" in p.unserved[0].detail


def test_stop_too_big_for_any_vehicle_and_stops_beyond_the_load() -> None:
    stops = [
        {"stop_id": "huge", "location": point(0), "demand": 50},
        {"stop_id": "x", "location": point(1), "demand": 6},
        {"stop_id": "y", "location": point(2), "demand": 6},
    ]
    p = plan(request(stops, drivers=[{"driver_id": "d1", "capacity": 10}]), line_matrix(3))
    reasons = {u.stop_id: u.reason for u in p.unserved}
    assert reasons["huge"] == UnservedReason.CAPACITY
    assert len(reasons) == 2 and set(reasons.values()) == {UnservedReason.CAPACITY}


def test_stop_beyond_the_shift() -> None:
    secs = np.array([[0, 60, 5 * 3600], [60, 0, 5 * 3600], [5 * 3600, 5 * 3600, 0]], dtype=float)
    stops = [{"stop_id": "near", "location": point(0)}, {"stop_id": "far", "location": point(1)}]
    p = plan(request(stops), FixedMatrix(secs))
    assert [(u.stop_id, u.reason) for u in p.unserved] == [("far", UnservedReason.SHIFT_LENGTH)]


def test_unreachable_stop() -> None:
    secs = np.array([[0, 60, np.inf], [60, 0, np.inf], [np.inf, np.inf, 0]])
    stops = [{"stop_id": "near", "location": point(0)}, {"stop_id": "island", "location": point(1)}]
    p = plan(request(stops), FixedMatrix(secs))
    assert [(u.stop_id, u.reason) for u in p.unserved] == [("island", UnservedReason.UNREACHABLE)]
    assert [s.stop_id for s in p.routes[0].stops] == ["near"]


def test_two_stops_competing_for_one_slot() -> None:
    # Both must start within the same minute, 10 minutes apart: only one can be served.
    w = [{"start": at(10), "end": at(11)}]
    stops = [{"stop_id": "p", "location": point(0), "windows": w}, {"stop_id": "q", "location": point(1), "windows": w}]
    secs = np.array([[0, 600, 600], [600, 0, 600], [600, 600, 0]], dtype=float)
    p = plan(request(stops), FixedMatrix(secs))
    assert len(p.unserved) == 1 and p.unserved[0].reason == UnservedReason.WINDOW_CONFLICT


def test_second_window_is_used_when_the_first_is_out_of_reach() -> None:
    stops = [
        {
            "stop_id": "m",
            "location": point(2),
            "service_s": 60,
            "windows": [{"start": at(0), "end": at(5)}, {"start": at(120), "end": at(180)}],
        }
    ]
    p = plan(request(stops), line(3))
    assert not p.unserved
    assert by_id(p)["m"].service_start == T0 + timedelta(minutes=120)


def test_drivers_split_the_work_by_capacity() -> None:
    stops = [{"stop_id": f"s{i}", "location": point(i), "demand": 4} for i in range(4)]
    drivers = [{"driver_id": "d1", "capacity": 8}, {"driver_id": "d2", "capacity": 8}]
    p = plan(request(stops, drivers=drivers), line_matrix(4))
    assert not p.unserved
    assert sorted(len(r.stops) for r in p.routes) == [2, 2]
    assert all(r.load <= 8 for r in p.routes)


def test_pure_tour_goes_to_lkh() -> None:
    stops = [{"stop_id": f"s{i}", "location": point(i)} for i in range(6)]
    p = plan(request(stops))
    assert p.engine == "lkh" and len(p.routes[0].stops) == 6


def test_replan_keeps_visited_stops_fixed_and_starts_from_the_current_position() -> None:
    stops = [{"stop_id": f"s{i}", "location": point(i), "service_s": 60} for i in range(5)]
    first = plan(request(stops), HaversineMatrix(SpeedProfile()))
    order = [s.stop_id for s in first.routes[0].stops]
    # The driver did two stops in an order the first plan did not propose, and reports in late.
    done = [order[1], order[0]]
    now = T0 + timedelta(hours=2)
    driver = {
        "driver_id": "driver-1",
        "visited": done,
        "position": {"location": point(int(done[-1][1:])), "at": now.isoformat()},
    }
    again = plan(request(stops, drivers=[driver]))
    route = again.routes[0].stops
    assert [s.stop_id for s in route[:2]] == done and all(s.visited for s in route[:2])
    assert not any(s.visited for s in route[2:])
    assert {s.stop_id for s in route[2:]} == set(order) - set(done)
    assert all(s.arrival >= now for s in route[2:])


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"service_s": -5}, "service time must be zero or positive"),
        ({"windows": [{"start": at(60), "end": at(30)}]}, "is before its start"),
        ({"location": {"lat": 95.0, "lng": 11.0}}, "less than or equal to 90"),
        ({"location": {"lat": float("nan"), "lng": 11.0}}, "input_value=nan"),
        ({"location": {"lat": 0.0, "lng": 0.0}}, "missing-geocode placeholder"),
        ({"location": {"lat": 48.1}}, "lng"),
        ({"windows": [{"start": "2024-06-03T09:00:00", "end": at(120)}]}, "time zone"),
    ],
)
def test_bad_stop_rejected_with_a_clear_message(patch: dict, message: str) -> None:
    stop = {"stop_id": "s", "location": point(0)} | patch
    with pytest.raises(ValidationError, match=message):
        request([stop])


def test_bad_request_rejected_with_a_clear_message() -> None:
    good = {"stop_id": "s", "location": point(0)}
    with pytest.raises(ValidationError, match="duplicate stop_id: s"):
        request([good, good])
    with pytest.raises(ValidationError, match="visited stop 'nope' is not in stops"):
        request([good], drivers=[{"driver_id": "d", "visited": ["nope"]}])
    with pytest.raises(ValidationError, match="shift end .* is not after its start"):
        request([good], shift={"start": at(60), "end": at(0)})
