"""ETA estimation: the scan pipeline calls `load_estimator(config).estimate(requests)`.

Config keys (all optional; see model.EtaConfig and rules.RuleConfig):

    model_path: artifacts/eta/current   # versioned artifact dir or the `current` link to one
    min_confidence: 0.15                # below -> the rules answer the row
    max_remaining_days: 90              # P50 beyond (or negative / NaN) -> the rules answer
    required_features: [remaining_distance_km]   # NaN in any -> the rules answer
    observe: true                       # feed batches into the rolling 7-day history
    rules: {country: US, subdiv: null, days: {STANDARD: 2, EXPRESS: 1, OVERNIGHT: 1, ECONOMY: 5},
            eta_hour: 18, interval_days: [1, 2], attempt_days: 1}
    route: {band_minutes: [15, 30], per_stop_minutes: [2, 4]}   # stops on a planned route (route.py)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from models.eta.base import Estimator, Eta, EtaRequest
from models.eta.model import EtaConfig, EtaModel, ModelEstimator
from models.eta.route import RouteAwareEstimator, RouteEtaConfig
from models.eta.rules import RuleConfig, RuleEstimator

log = logging.getLogger(__name__)

__all__ = ["Estimator", "Eta", "EtaRequest", "EtaConfig", "ModelEstimator", "RouteAwareEstimator", "RouteEtaConfig",
           "RuleConfig", "RuleEstimator", "load_estimator"]


def load_estimator(config: dict[str, Any] | None = None, *, routes: bool = False) -> Estimator:
    """Model-with-fallback when an artifact exists at `model_path`, else the RuleEstimator; with
    `routes` (what the jobs use, topologies/bootstrap.py), behind the route layer: a stop on a
    planned route is due at its planned arrival (route.py).

    A bad config key raises (at start-up); a missing or corrupt artifact does not: an absent one
    gives the RuleEstimator, a corrupt one a ModelEstimator whose every row falls back to the rules
    (its `load_error` says why).
    """
    raw = dict(config or {})
    route = RouteEtaConfig.from_dict(raw.pop("route", None))
    base = _base_estimator(raw)
    return RouteAwareEstimator(base, route) if routes else base


def _base_estimator(config: dict[str, Any]) -> Estimator:
    cfg = EtaConfig.from_dict(config)
    rule = RuleEstimator(cfg.rules)
    path = Path(cfg.model_path)
    if not path.exists():
        log.info("eta: no model at %s; rule-based ETAs", path)
        return rule
    try:
        model = EtaModel.load(path)
    except Exception as exc:  # corrupt artifact: keep serving ETAs from the rules
        log.error("eta: model at %s failed to load (%s); rule-based ETAs", path, exc)
        return ModelEstimator(None, cfg, rule, load_error=f"{type(exc).__name__}: {exc}")
    return ModelEstimator(model, cfg, rule)
