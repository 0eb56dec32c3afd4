"""A stored route's state in, a PlanRequest out; the Plan back into rows to store. Pure (no I/O), so
the rules are unit-tested apart from Kafka and PostgreSQL.

Rules:
* visited stops (done or attempted) are handed to the planner as `visited`, in the order they were
  visited, so they keep their place and are never re-sequenced; the driver is at the last of them
  at the time of the event that triggered the re-plan;
* stops the customer moved to a pickup, and stops without destination coordinates, stay out of the
  order (status unserved, with the reason);
* everything else, including stops an earlier plan could not fit, is planned again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from routing.models import DriverIn, GeoPoint, Plan, PlanRequest, Position, Shift, SpeedProfile, StopIn, TimeWindow
from routing.store import PLANNED, UNSERVED, VISITED, PlannedRow

PICKUP = "pickup_at_facility"  # unserved_reason of a stop the customer will collect
NO_COORDINATES = "no_destination_coordinates"
KEPT_OUT = (PICKUP,)


@dataclass(frozen=True, slots=True)
class StopState:
    shipment_id: uuid.UUID
    lat: float | None
    lng: float | None
    status: str
    unserved_reason: str | None
    window_start: datetime | None
    window_end: datetime | None
    visited_at: datetime | None
    seq: int | None
    planned_arrival: datetime | None
    planned_departure: datetime | None = None


@dataclass(frozen=True, slots=True)
class RouteState:
    route_id: str
    driver_id: str
    depot_lat: float
    depot_lng: float
    started_at: datetime
    shift_end: datetime
    stops: list[StopState]


def _point(lat: float | None, lng: float | None) -> GeoPoint | None:
    if lat is None or lng is None:
        return None
    try:
        return GeoPoint(lat=lat, lng=lng)
    except ValueError:
        return None


def build_request(route: RouteState, now: datetime, *, service_s: int, speed: SpeedProfile, time_limit_s: float,
                  seed: int = 0) -> tuple[PlanRequest | None, list[PlannedRow]]:
    """The request that re-plans `route` as of `now`, and the rows of stops kept out of it."""
    kept_out: list[PlannedRow] = []
    stops: list[StopIn] = []
    visited: list[StopState] = []
    for s in route.stops:
        pt = _point(s.lat, s.lng)
        if s.status == UNSERVED and s.unserved_reason in KEPT_OUT:
            kept_out.append(PlannedRow(s.shipment_id, None, None, None, UNSERVED, s.unserved_reason))
            continue
        if pt is None:
            if s.status in VISITED:  # visited without coordinates: keep what we had
                kept_out.append(PlannedRow(s.shipment_id, s.seq, s.planned_arrival, s.planned_departure, s.status))
            else:
                kept_out.append(PlannedRow(s.shipment_id, None, None, None, UNSERVED, NO_COORDINATES))
            continue
        windows = []
        if s.window_start is not None and s.window_end is not None and s.window_end > s.window_start:
            windows.append(TimeWindow(start=s.window_start, end=s.window_end))
        stops.append(StopIn(stop_id=str(s.shipment_id), location=pt, service_s=service_s, windows=windows,
                            shipment_id=str(s.shipment_id)))
        if s.status in VISITED:
            visited.append(s)
    if not stops:
        return None, kept_out
    far = max(route.started_at, route.shift_end)
    visited.sort(key=lambda s: (s.visited_at or far, s.seq or 0))
    depot = GeoPoint(lat=route.depot_lat, lng=route.depot_lng)
    position = None
    if visited:
        last = visited[-1]
        position = Position(location=GeoPoint(lat=last.lat, lng=last.lng), at=max(now, last.visited_at or now))
    elif now > route.started_at:
        position = Position(location=depot, at=now)
    driver = DriverIn(driver_id=route.driver_id, visited=[str(s.shipment_id) for s in visited], position=position)
    request = PlanRequest(depot=depot, shift=Shift(start=route.started_at, end=route.shift_end), stops=stops,
                          drivers=[driver], speed=speed, time_limit_s=time_limit_s, seed=seed)
    return request, kept_out


def rows_from_plan(route: RouteState, plan: Plan) -> list[PlannedRow]:
    """Every planned stop with its sequence and times; visited stops keep their status and times."""
    by_id = {str(s.shipment_id): s for s in route.stops}
    rows: list[PlannedRow] = []
    for driver_plan in plan.routes:
        for p in driver_plan.stops:
            s = by_id[p.stop_id]
            if s.status in VISITED:
                rows.append(PlannedRow(s.shipment_id, p.sequence, s.planned_arrival or p.service_start,
                                       s.planned_departure or p.departure, s.status))
            else:
                rows.append(PlannedRow(s.shipment_id, p.sequence, p.service_start, p.departure, PLANNED))
    for u in plan.unserved:
        rows.append(PlannedRow(by_id[u.stop_id].shipment_id, None, None, None, UNSERVED, u.reason.value))
    return rows
