"""Route-planning steps: a normalized event from `notifications` (operators/normalize.py) or a reschedule
request from `reschedule-requests` in, a `RouteEvent` (what the route_plans sink acts on) out.

Why two steps and one event type: the engine reads one input topic per topology, so the reschedules
run in a second small topology (topologies/route_planner_reschedules.yaml) that ends in the same sink.
Events that do not concern a route (a hub arrival, an OUT_FOR_DELIVERY without driver or route) are
dropped, counted; malformed values are dead-lettered with the reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from operators.registry import BuildContext, Drop, Emit, Outcome, Reject, StepConfig, StepContext, operator

Kind = Literal["add", "delivered", "attempted", "window", "pickup"]

# EXCEPTION reason codes that mean the driver was at the door and could not deliver (a failed attempt).
DELIVERY_FAILURES = frozenset({"address_not_found", "access_denied", "recipient_unavailable", "refused"})


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """One fact about a route's stop. `route_id` is None for reschedules (the sink finds the route)."""

    kind: Kind
    shipment_id: uuid.UUID
    at: datetime
    source: str  # "topic:partition:offset", for logs
    route_id: str | None = None
    driver_id: str | None = None
    facility_id: str | None = None  # the OUT_FOR_DELIVERY scan's delivery station: the depot
    window_start: datetime | None = None
    window_end: datetime | None = None
    pickup_facility_id: str | None = None


def _parse(value: Any) -> dict[str, Any] | Reject:
    if isinstance(value, dict):
        return value
    try:
        data = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError):
        return Reject("malformed_json", "value is not JSON")
    if not isinstance(data, dict):
        return Reject("malformed_json", "value is not a JSON object")
    return data


def _time(data: dict[str, Any], field: str) -> datetime | None:
    raw = data.get(field)
    if raw is None:
        return None
    t = datetime.fromisoformat(str(raw))
    if t.tzinfo is None:
        raise ValueError(f"{field} must carry a time zone")
    return t


def _source(ctx: StepContext) -> str:
    m = ctx.message
    return f"{m.topic}:{m.partition}:{m.offset}"


class RouteEventConfig(StepConfig):
    pass


class RouteEventStep:
    """A normalized event in; a RouteEvent for OUT_FOR_DELIVERY (with driver and route), DELIVERED,
    DELIVERY_ATTEMPTED and delivery-failure EXCEPTIONs; Drop for everything else."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        data = _parse(value)
        if isinstance(data, Reject):
            return data
        event_type = data.get("event_type")
        if event_type == "OUT_FOR_DELIVERY":
            kind: Kind = "add"
        elif event_type == "DELIVERED":
            kind = "delivered"
        elif event_type == "DELIVERY_ATTEMPTED" or (
            event_type == "EXCEPTION" and data.get("reason_code") in DELIVERY_FAILURES
        ):
            kind = "attempted"
        else:
            return Drop("not_a_route_event")
        try:
            shipment_id = uuid.UUID(str(data["shipment_id"]))
            at = _time(data, "created_at")
        except (KeyError, ValueError) as exc:
            return Reject("invalid_event", f"shipment_id / created_at: {exc}")
        if at is None:
            return Reject("invalid_event", "created_at is missing")
        route_id, driver_id = data.get("route_id"), data.get("driver_id")
        facility = data.get("facility") or {}
        facility_id = facility.get("id") if isinstance(facility, dict) else None
        if kind == "add":
            if not route_id or not driver_id:
                return Drop("no_route")  # out for delivery outside a planned route (e.g. a locker run)
            if not facility_id:
                return Reject("missing_facility", "OUT_FOR_DELIVERY without the delivery station (the depot)")
        return Emit(RouteEvent(kind=kind, shipment_id=shipment_id, at=at, source=_source(ctx),
                               route_id=route_id or None, driver_id=driver_id or None, facility_id=facility_id))


@operator("route_event", config=RouteEventConfig, rejects=("malformed_json", "invalid_event", "missing_facility"))
def build_route_event(ctx: BuildContext, config: RouteEventConfig) -> RouteEventStep:
    """Turn a normalized tracking event into a route event (stop added, delivered, attempted)."""
    return RouteEventStep(ctx.step_id)


class RescheduleEventConfig(StepConfig):
    pass


class RescheduleEventStep:
    """A reschedule request (`kind` 'window' with window_start/window_end, or 'pickup' with
    pickup_facility_id) in; a RouteEvent out, or a Reject saying what is wrong."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        data = _parse(value)
        if isinstance(data, Reject):
            return data
        try:
            shipment_id = uuid.UUID(str(data["shipment_id"]))
        except (KeyError, ValueError):
            return Reject("invalid_reschedule", "shipment_id is missing or not a UUID")
        kind = data.get("kind")
        at = ctx.message.timestamp
        try:
            at = _time(data, "created_at") or at
            if kind == "window":
                start, end = _time(data, "window_start"), _time(data, "window_end")
                if start is None or end is None:
                    return Reject("invalid_reschedule", "a window needs window_start and window_end")
                if end <= start:
                    return Reject("invalid_reschedule", f"window_end {end.isoformat()} is not after window_start")
            elif kind == "pickup":
                start = end = None
                if not data.get("pickup_facility_id"):
                    return Reject("invalid_reschedule", "a pickup needs pickup_facility_id")
            else:
                return Reject("invalid_reschedule", f"kind must be 'window' or 'pickup', got {kind!r}")
        except ValueError as exc:
            return Reject("invalid_reschedule", f"bad time: {exc}")
        if at is None:
            return Reject("invalid_reschedule", "no created_at and no record timestamp")
        return Emit(RouteEvent(kind=kind, shipment_id=shipment_id, at=at, source=_source(ctx),
                               window_start=start, window_end=end,
                               pickup_facility_id=data.get("pickup_facility_id")))


@operator("reschedule_event", config=RescheduleEventConfig, rejects=("malformed_json", "invalid_reschedule"))
def build_reschedule_event(ctx: BuildContext, config: RescheduleEventConfig) -> RescheduleEventStep:
    """Turn a customer's reschedule request (new window, or pickup at a facility) into a route event."""
    return RescheduleEventStep(ctx.step_id)
