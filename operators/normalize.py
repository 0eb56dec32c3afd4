"""normalize_event: an (enriched) `AcceptedScan` in, the normalized event of DESIGN.md section 3
out, as a dict ready for orjson: the value published on `notifications`, one per accepted scan.

Times stay `datetime`s here: the engine serializes the dict in one orjson pass (RFC 3339, as
`datetime.isoformat` writes them), which costs a fraction of formatting each one in Python."""

from __future__ import annotations

from typing import Any

from operators.registry import BuildContext, Emit, Outcome, StepConfig, StepContext, operator
from operators.transition import AcceptedScan

SCHEMA_VERSION = 1


class NormalizeEventConfig(StepConfig):
    # Driver and route ids help the live page; off for consumers that must not see them.
    include_driver: bool = True


def normalized_event(scan: AcceptedScan, *, include_driver: bool = True) -> dict[str, Any]:
    ev = scan.event
    facility: dict[str, Any] | None = None
    if ev.facility_id is not None:
        facility = {
            "id": ev.facility_id,
            "name": scan.facility.name if scan.facility else None,
            "city": scan.facility.city if scan.facility else None,
        }
    ret = scan.return_shipment
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": str(ev.event_id),
        "shipment_id": str(ev.shipment_id),
        "tracking_number": scan.shipment.tracking_number,
        "event_type": ev.event_type.value,
        "status": scan.status.value,
        "previous_status": scan.previous_status.value if scan.previous_status else None,
        "reason_code": ev.reason_code.value if ev.reason_code else None,
        "attempt_count": scan.attempt_count,
        "facility": facility,
        "created_at": ev.created_at,
        "eta": scan.eta.body() if scan.eta is not None else None,
        "return_shipment": (
            {"shipment_id": str(ret.shipment_id), "tracking_number": ret.tracking_number}
            if ret is not None
            else None
        ),
        "service_level": scan.shipment.service_level.value,
    }
    if include_driver:
        out["driver_id"] = ev.driver_id
        out["route_id"] = ev.route_id
    return out


class NormalizeEventStep:
    def __init__(self, step_id: str, config: NormalizeEventConfig) -> None:
        self.step_id = step_id
        self.config = config

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        if not isinstance(value, AcceptedScan):
            raise TypeError(f"{self.step_id}: expected an AcceptedScan, got {type(value).__name__}")
        return Emit(normalized_event(value, include_driver=self.config.include_driver))


@operator("normalize_event", config=NormalizeEventConfig)
def build_normalize_event(ctx: BuildContext, config: NormalizeEventConfig) -> NormalizeEventStep:
    """Turn an accepted scan into the normalized event published on `notifications`."""
    return NormalizeEventStep(ctx.step_id, config)
