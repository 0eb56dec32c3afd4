"""Route ETAs: a stop out for delivery on a planned route is due at its planned arrival, in a band
widening with the stops ahead; every other request goes to the wrapped estimator untouched."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from models.domain import EventType, ServiceLevel, Status
from models.eta import load_estimator
from models.eta.base import EtaRequest
from models.eta.route import RouteAwareEstimator, RouteEtaConfig, route_eta
from models.eta.rules import RuleEstimator

NY = ZoneInfo("America/New_York")
AT = datetime(2024, 7, 1, 9, tzinfo=NY)


def req(*, status: Status = Status.OUT_FOR_DELIVERY, arrival: datetime | None = None, ahead: int | None = None,
        at: datetime = AT) -> EtaRequest:
    return EtaRequest(shipment_id="s1", service_level=ServiceLevel.STANDARD, status=status,
                      event_type=EventType.OUT_FOR_DELIVERY, event_at=at, shipment_created_at=at - timedelta(days=2),
                      remaining_stops=ahead, planned_arrival=arrival)


def test_planned_arrival_with_band_widening_per_stop_ahead() -> None:
    arrival = AT + timedelta(hours=2)
    eta = route_eta(req(arrival=arrival, ahead=5), RouteEtaConfig())
    assert eta is not None and eta.source == "route" and eta.at == arrival
    assert eta.low == arrival - timedelta(minutes=15 + 2 * 5) and eta.high == arrival + timedelta(minutes=30 + 4 * 5)
    narrow = route_eta(req(arrival=arrival, ahead=0), RouteEtaConfig())
    assert narrow is not None and narrow.high - narrow.low == timedelta(minutes=45)


def test_a_plan_never_answers_before_the_moment_it_is_asked() -> None:
    eta = route_eta(req(arrival=AT - timedelta(minutes=30), ahead=0), RouteEtaConfig())
    assert eta is not None and eta.at == AT


@pytest.mark.parametrize("request_", [
    req(arrival=None, ahead=3),                                          # no plan
    req(status=Status.DELIVERED, arrival=AT + timedelta(hours=1)),       # moved on: the plan is stale
    req(arrival=datetime(2024, 7, 1, 11), ahead=1),                      # naive time: cannot be placed
])
def test_not_on_a_planned_route_is_not_a_route_answer(request_: EtaRequest) -> None:
    assert route_eta(request_, RouteEtaConfig()) is None


def test_wrapper_answers_routed_rows_and_delegates_the_rest_in_order() -> None:
    est = RouteAwareEstimator(RuleEstimator())
    rows = [req(arrival=AT + timedelta(hours=1), ahead=2), req(), req(status=Status.IN_TRANSIT),
            req(arrival=AT + timedelta(hours=3), ahead=9)]
    out = est.estimate(rows)
    assert [e.source for e in out] == ["route", "rule", "rule", "route"]
    assert out[0].at == AT + timedelta(hours=1) and out[3].at == AT + timedelta(hours=3)
    assert out[1:3] == RuleEstimator().estimate(rows[1:3])
    assert est.estimate(rows[1:3]) == RuleEstimator().estimate(rows[1:3])  # nothing routed: one plain call
    assert est.version == RuleEstimator().version  # attributes of the wrapped estimator show through


def test_config_from_the_eta_section() -> None:
    est = load_estimator({"model_path": "/nonexistent", "route": {"band_minutes": [5, 10],
                                                                  "per_stop_minutes": [1, 1]}}, routes=True)
    assert isinstance(est, RouteAwareEstimator) and isinstance(est.inner, RuleEstimator)
    [eta] = est.estimate([req(arrival=AT + timedelta(hours=1), ahead=4)])
    assert eta.high - eta.low == timedelta(minutes=5 + 4 + 10 + 4)
    assert isinstance(load_estimator({"model_path": "/nonexistent", "route": {}}), RuleEstimator)
    with pytest.raises(ValueError, match="unknown keys"):
        RouteEtaConfig.from_dict({"band": [1, 2]})
    with pytest.raises(ValueError, match=">= 0"):
        RouteEtaConfig.from_dict({"band_minutes": [-1, 2]})
