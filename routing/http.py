"""HTTP surface of the route optimizer, mounted by the API app (api/app.py).

* `POST /v1/routes/plan`: plan an ad-hoc set of stops (the same PlanRequest as `route plan`): per driver
  the ordered stops with planned arrival times, and every unserved stop with its reason. Bad input
  (negative service time, a window ending before it starts, missing or placeholder coordinates, ...)
  is answered 422 with the field and the reason.
* `GET /v1/routes/shipments/{shipment_id}/progress`: where a shipment stands on its driver's route
  ("stop 7 of 23"), from the route_stops table the route-planner topology keeps; 404 when it is on none.

The solve is CPU-bound and synchronous, so the handlers are plain `def`: FastAPI runs them in its
thread pool and the event loop stays free. The budget per request is capped (`MAX_TIME_LIMIT_S`) so one
caller cannot hold a worker for minutes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from routing.models import Plan, PlanRequest

router = APIRouter(tags=["routing"])

MAX_TIME_LIMIT_S = 30.0
MAX_STOPS = 2000


@router.post("/v1/routes/plan", response_model=Plan, summary="Plan an ad-hoc set of stops")
def plan_stops(request: PlanRequest) -> Plan:
    """Ordered stops with planned arrivals per driver, and each unserved stop with its reason."""
    from routing.planner import plan

    if request.time_limit_s > MAX_TIME_LIMIT_S:
        raise HTTPException(422, f"time_limit_s {request.time_limit_s:g} is above this endpoint's cap of "
                                 f"{MAX_TIME_LIMIT_S:g} s; use `parcel route plan` for longer solves")
    if len(request.stops) > MAX_STOPS:
        raise HTTPException(422, f"{len(request.stops)} stops is above this endpoint's cap of {MAX_STOPS}")
    try:
        return plan(request)
    except ValueError as exc:  # e.g. a forced engine that cannot model the request
        raise HTTPException(422, str(exc)) from exc


class StopProgressOut(BaseModel):
    shipment_id: uuid.UUID
    route_id: str
    driver_id: str
    stop_number: int
    total_stops: int
    stops_remaining: int
    planned_arrival: datetime | None
    status: str


@lru_cache(maxsize=1)
def _store():  # noqa: ANN202 - built once, on first use (settings are read then)
    from config.settings import get_settings
    from routing.store import RouteStore

    return RouteStore(get_settings())


@router.get("/v1/routes/shipments/{shipment_id}/progress", response_model=StopProgressOut,
            summary="A shipment's place on its driver's route")
def shipment_progress(shipment_id: uuid.UUID) -> StopProgressOut:
    p = _store().progress(shipment_id)
    if p is None:
        raise HTTPException(404, f"shipment {shipment_id} is on no planned route")
    return StopProgressOut(shipment_id=shipment_id, route_id=p.route_id, driver_id=p.driver_id,
                           stop_number=p.stop_number, total_stops=p.total_stops, stops_remaining=p.stops_remaining,
                           planned_arrival=p.planned_arrival, status=p.status)
