"""Route ETAs: a stop that is out for delivery on a planned driver route is due when the route plan
says the driver reaches it, in a band that widens with the stops still ahead of it.

Why its own estimator layer: once a route is planned (routing/, on the OUT_FOR_DELIVERY scans), its
planned arrival is better information than either the model (trained on purchase-to-door times) or
the business-day rules, so requests that carry `planned_arrival` and `remaining_stops` are answered
here, source "route"; every other request goes to the wrapped estimator unchanged (and costs one
attribute test per row). The route planner refreshes these ETAs after every (re-)plan
(sinks/route_plans.py); the scan pipeline's own ETA at later scans comes from the wrapped estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models.domain import Status
from models.eta.base import Estimator, Eta, EtaRequest

ROUTE_VERSION = "route-v1"


@dataclass(frozen=True)
class RouteEtaConfig:
    """The `route` section of the ETA config."""

    # Band around the planned arrival, minutes (before, after): the after side is wider, since
    # drivers run late far more often than early.
    band_minutes: tuple[float, float] = (15.0, 30.0)
    # Widening per stop still ahead, minutes (before, after): each stop's service and travel time
    # can slip.
    per_stop_minutes: tuple[float, float] = (2.0, 4.0)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RouteEtaConfig:
        raw = dict(raw or {})
        unknown = set(raw) - {"band_minutes", "per_stop_minutes"}
        if unknown:
            raise ValueError(f"eta.route: unknown keys {sorted(unknown)}")
        out = {}
        for key in ("band_minutes", "per_stop_minutes"):
            if key in raw:
                lo, hi = (float(x) for x in raw[key])
                if lo < 0 or hi < 0:
                    raise ValueError(f"eta.route.{key} must be >= 0")
                out[key] = (lo, hi)
        return cls(**out)


def route_eta(request: EtaRequest, config: RouteEtaConfig) -> Eta | None:
    """The route answer for one request, or None when the request is not on a planned route."""
    arrival = request.planned_arrival
    if arrival is None or request.status is not Status.OUT_FOR_DELIVERY:
        return None
    if arrival.tzinfo is None:
        return None  # a naive time cannot be placed; the wrapped estimator answers
    ahead = max(int(request.remaining_stops or 0), 0)
    before = config.band_minutes[0] + config.per_stop_minutes[0] * ahead
    after = config.band_minutes[1] + config.per_stop_minutes[1] * ahead
    at = max(arrival, request.event_at)  # a plan is never behind the moment it answers for
    return Eta(at=at, source="route", low=at - timedelta(minutes=before), high=at + timedelta(minutes=after),
               model_version=ROUTE_VERSION)


class RouteAwareEstimator:
    """Answers requests on a planned route from the plan; delegates the rest to `inner`."""

    def __init__(self, inner: Estimator, config: RouteEtaConfig | None = None) -> None:
        self.inner = inner
        self.config = config or RouteEtaConfig()
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:  # fallbacks, load_error, version ... of the wrapped one
        return getattr(self.inner, name)

    def estimate(self, requests: Sequence[EtaRequest]) -> list[Eta]:
        routed = [route_eta(r, self.config) if r.planned_arrival is not None else None for r in requests]
        rest = [i for i, e in enumerate(routed) if e is None]
        if len(rest) == len(requests):
            return self.inner.estimate(requests)
        if rest:
            for i, eta in zip(rest, self.inner.estimate([requests[i] for i in rest]), strict=True):
                routed[i] = eta
        return [e for e in routed if e is not None]  # every slot is filled above: same length
