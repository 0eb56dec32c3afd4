"""eta_enrich: an `AcceptedScan` in, the same scan with `facility` and a fresh `eta` out.

The estimator (XGBoost with its rule fallback, models/eta) is injected; it must not raise for one
bad row, so an exception here is a bug or an outage and stops the job (offsets stay uncommitted).
Placed after a sink in the topology, the engine runs it at checkpoint flush on the whole batch
(`batch`): one inference call per checkpoint batch, not per row.
"""

from __future__ import annotations

from typing import Any

from models.domain import Facility
from models.eta.base import Estimator, EtaRequest
from operators.ports import FacilityLookup
from operators.registry import BuildContext, Emit, Outcome, StepConfig, StepContext, operator
from operators.transition import AcceptedScan


class EtaEnrichConfig(StepConfig):
    # Look the scan's facility up (name/city for notifications, type/position as ETA features).
    lookup_facility: bool = True


def eta_request(scan: AcceptedScan, facility: Facility | None) -> EtaRequest:
    info = scan.shipment
    return EtaRequest(
        shipment_id=str(info.shipment_id),
        service_level=info.service_level,
        status=scan.status,
        event_type=scan.event.event_type,
        event_at=scan.event.created_at,
        shipment_created_at=info.created_at,
        origin_lat=info.origin_lat,
        origin_lng=info.origin_lng,
        dest_lat=info.dest_lat,
        dest_lng=info.dest_lng,
        origin_zip=info.origin_zip,
        dest_zip=info.dest_zip,
        weight_kg=info.weight_grams / 1000.0 if info.weight_grams else None,
        facility_id=scan.event.facility_id,
        facility_type=facility.type.value if facility is not None and facility.type else None,
        facility_lat=facility.lat if facility is not None else None,
        facility_lng=facility.lng if facility is not None else None,
        last_hub_scan_at=scan.last_hub_scan_at,
        attempt_count=scan.attempt_count,
    )


class EtaEnrichStep:
    def __init__(self, step_id: str, estimator: Estimator, facilities: FacilityLookup | None) -> None:
        self.step_id = step_id
        self._estimator = estimator
        self._facilities = facilities

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        return self.batch([value], [ctx])[0]

    def batch(self, values: list[Any], ctxs: list[StepContext]) -> list[Outcome]:
        """One estimator call for the whole batch (the engine runs this step at checkpoint flush)."""
        facilities: list[Facility | None] = []
        for value in values:
            if not isinstance(value, AcceptedScan):
                raise TypeError(f"{self.step_id}: expected an AcceptedScan, got {type(value).__name__}")
            facility_id = value.event.facility_id
            facilities.append(self._facilities.get(facility_id)
                              if self._facilities is not None and facility_id is not None else None)
        etas = self._estimator.estimate([eta_request(v, f) for v, f in zip(values, facilities, strict=True)])
        if len(etas) != len(values):
            raise RuntimeError(f"{self.step_id}: estimator returned {len(etas)} ETAs for {len(values)} requests")
        return [Emit(v.model_copy(update={"eta": e, "facility": f}))
                for v, e, f in zip(values, etas, facilities, strict=True)]


@operator("eta_enrich", config=EtaEnrichConfig)
def build_eta_enrich(ctx: BuildContext, config: EtaEnrichConfig) -> EtaEnrichStep:
    """Attach the scan's facility and a fresh ETA (model with rule fallback) to an accepted scan."""
    estimator: Estimator = ctx.require("estimator")
    facilities: FacilityLookup | None = ctx.require("facility_lookup") if config.lookup_facility else None
    return EtaEnrichStep(ctx.step_id, estimator, facilities)
