"""Training data from the carrier's own history: delivered shipments (PostgreSQL) and their scans
(Cassandra `tracking_events`, one partition per shipment).

Each delivered shipment becomes the EtaRequests the scan pipeline built for it (one at the label,
one per accepted scan before delivery) plus its delivery time, and then goes through the same
feature builder and `train.fit_samples` as the Olist files, so serving and training agree.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.domain import EventType, ServiceLevel, Status
from models.eta.base import EtaRequest
from models.eta.features import History, frame_from_requests
from models.eta.model import EtaConfig, EtaModel, ModelEstimator
from models.eta.rules import RuleConfig, RuleEstimator

log = logging.getLogger(__name__)

DELIVERED_SQL = """
SELECT s.shipment_id::text, s.service_level::text, s.created_at, s.weight_grams,
       s.origin_facility_id, o.lat, o.lng, o.zip,
       COALESCE(s.dest_lat, d.lat), COALESCE(s.dest_lng, d.lng), COALESCE(s.recipient_address->>'zip', d.zip)
FROM shipments s
LEFT JOIN facilities o ON o.facility_id = s.origin_facility_id
LEFT JOIN facilities d ON d.facility_id = s.destination_facility_id
WHERE s.status = 'DELIVERED' AND s.return_of IS NULL
  AND (%(since)s::timestamptz IS NULL OR s.created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR s.created_at < %(until)s)
  AND (%(prefix)s::text IS NULL OR s.tracking_number LIKE %(prefix)s || '%%')
  AND (%(ids)s::uuid[] IS NULL OR s.shipment_id = ANY(%(ids)s::uuid[]))
ORDER BY s.created_at, s.shipment_id
"""
FACILITIES_SQL = "SELECT facility_id, type::text, lat, lng, zip, state FROM facilities"
EVENTS_CQL = ("SELECT created_at, event_type, status, facility_id, attempt_count FROM tracking_events "
              "WHERE shipment_id = ?")
HUB_EVENTS = {EventType.ARRIVAL.value, EventType.DEPARTURE.value}  # what `last_hub_scan_at` counts (transition.py)


@dataclass
class StoreHistory:
    """Delivered shipments as training samples: one request per scan moment before the delivery."""

    requests: list[EtaRequest] = field(default_factory=list)
    delivered_ts: list[float] = field(default_factory=list)
    created_ts: list[float] = field(default_factory=list)
    shipment: list[str] = field(default_factory=list)
    history: list[EtaRequest] = field(default_factory=list)  # every scan, delivery included (rolling features)
    geo: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    shipments: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _utc(d: datetime) -> datetime:
    """Cassandra hands back naive UTC; PostgreSQL aware times. Both become aware UTC."""
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def load(settings: Any, since: datetime | None = None, until: datetime | None = None,
         tracking_prefix: str | None = None, shipment_ids: Sequence[str] | None = None) -> StoreHistory:
    """Read delivered shipments (optionally a created_at window, a tracking-number prefix or ids)
    and their scan histories. Times are read in UTC: Cassandra keeps no zone."""
    import psycopg
    from cassandra.concurrent import execute_concurrent_with_args

    from stack.migrations import cassandra_session

    params = {"since": since, "until": until, "prefix": tracking_prefix,
              "ids": list(shipment_ids) if shipment_ids is not None else None}
    with psycopg.connect(settings.postgres.dsn) as conn:
        rows = conn.execute(DELIVERED_SQL, params).fetchall()
        facilities = {r[0]: r for r in conn.execute(FACILITIES_SQL).fetchall()}
    out = StoreHistory()
    # zip -> position and region, for rows without coordinates and for the route tables.
    out.geo = {str(f[4])[:5]: (float(f[2]), float(f[3]), str(f[5])) for f in facilities.values() if f[4]}
    if not rows:
        return out
    cluster, session = cassandra_session(settings, settings.cassandra.keyspace)
    try:
        stmt = session.prepare(EVENTS_CQL)
        results = execute_concurrent_with_args(session, stmt, [(uuid.UUID(r[0]),) for r in rows],
                                               concurrency=64, raise_on_first_error=True)
        events = [list(res.result_or_exc) for res in results]
    finally:
        cluster.shutdown()
    for row, evs in zip(rows, events, strict=True):
        _add_shipment(out, row, evs, facilities)
    return out


def _add_shipment(out: StoreHistory, row: tuple, evs: list[Any], facilities: dict[str, tuple]) -> None:
    sid, level, created, weight_g, origin_fac, olat, olng, ozip, dlat, dlng, dzip = row
    evs = sorted(evs, key=lambda e: e.created_at)
    done = [e for e in evs if e.event_type == EventType.DELIVERED.value]
    if not done:
        out.skipped["no_delivery_scan"] = out.skipped.get("no_delivery_scan", 0) + 1
        return
    created = _utc(created)
    delivered = _utc(done[0].created_at)
    if delivered < created:
        out.skipped["delivered_before_label"] = out.skipped.get("delivered_before_label", 0) + 1
        return
    out.shipments += 1
    common = dict(shipment_id=sid, service_level=ServiceLevel(level), shipment_created_at=created,
                  origin_lat=olat, origin_lng=olng, dest_lat=dlat, dest_lng=dlng, origin_zip=ozip, dest_zip=dzip,
                  weight_kg=weight_g / 1000.0 if weight_g else None)
    o = facilities.get(origin_fac) if origin_fac else None
    label = EtaRequest(status=Status.LABEL_CREATED, event_type=EventType.LABEL_CREATED, event_at=created,
                       facility_id=origin_fac, facility_type=o[1] if o else None,
                       facility_lat=o[2] if o else None, facility_lng=o[3] if o else None, **common)
    moments = [label]
    last_hub: datetime | None = None
    for e in evs:
        at = _utc(e.created_at)
        if e.event_type in HUB_EVENTS:
            last_hub = at if last_hub is None or at > last_hub else last_hub
        if e.event_type == EventType.LABEL_CREATED.value:
            continue  # the label moment is the shipment's created_at above
        f = facilities.get(e.facility_id) if e.facility_id else None
        try:
            req = EtaRequest(status=Status(e.status), event_type=EventType(e.event_type), event_at=at,
                             facility_id=e.facility_id, facility_type=f[1] if f else None,
                             facility_lat=f[2] if f else None, facility_lng=f[3] if f else None,
                             last_hub_scan_at=last_hub, attempt_count=int(e.attempt_count or 0), **common)
        except ValueError:  # an event type / status this code does not know: not a training moment
            continue
        moments.append(req)
        if at >= delivered:
            break
    for req in moments:
        out.history.append(req)
        if req.event_at < delivered and req.status not in (Status.DELIVERED, Status.RETURN_TO_SENDER):
            out.requests.append(req)
            out.delivered_ts.append(delivered.timestamp())
            out.created_ts.append(created.timestamp())
            out.shipment.append(sid)


def _samples(h: StoreHistory, idx: np.ndarray) -> Any:
    from models.eta.train import Samples

    return Samples([h.requests[i] for i in idx], np.asarray(h.delivered_ts)[idx], np.asarray(h.created_ts)[idx],
                   np.array([h.requests[i].event_type.value for i in idx], dtype=object), idx)


def holdout_scores(model: EtaModel, rules: RuleConfig, h: StoreHistory, idx: np.ndarray) -> dict[str, Any]:
    """MAE (days) of model and rules on the given sample rows (every scan moment before delivery)."""
    from models.eta.train import _eta_arrays, metrics

    reqs = [h.requests[i] for i in idx]
    actual = np.asarray(h.delivered_ts)[idx]
    est = ModelEstimator(model, EtaConfig(observe=False, rules=rules))
    at, lo, hi, fb = _eta_arrays(est.estimate(reqs))
    rat = _eta_arrays(RuleEstimator(rules).estimate(reqs))[0]
    return {"model": metrics(at, actual, offset_s=0.0, low_ts=lo, high_ts=hi, fallback=fb),
            "rule": metrics(rat, actual, offset_s=0.0), "rows": int(len(idx)),
            "fallbacks": dict(est.fallbacks)}


def train_from_stores(settings: Any, out: str | Path = "artifacts/eta", recipe: Any = None,
                      promote: bool | None = None, holdout_frac: float = 0.2, rules: RuleConfig | None = None,
                      **where: Any) -> tuple[Path, dict[str, Any]]:
    """Fit on the carrier's delivered shipments and write a versioned artifact under `out`.

    Hold-out check first: a model learns from the shipments labelled before the latest
    `holdout_frac` (only outcomes delivered by then) and is scored with the rules on the later
    shipments' scan moments; the artifact is then refitted on everything. The check is written
    to the artifact's metrics.json (`holdout`)."""
    from models.eta import train as tr

    rc = recipe or tr.Recipe()
    rules = rules or RuleConfig()
    h = load(settings, **where)
    if not h.requests:
        raise ValueError(f"no delivered shipments with scan history in the stores ({h.skipped or 'none found'})")
    created = np.asarray(h.created_ts)
    delivered = np.asarray(h.delivered_ts)
    ship_created = np.unique(created)
    split = float(ship_created[int(len(ship_created) * (1 - holdout_frac))]) if holdout_frac > 0 else math.inf
    report: dict[str, Any] = {"shipments": h.shipments, "samples": len(h.requests), "skipped": h.skipped,
                              "split_at": datetime.fromtimestamp(split, UTC).isoformat() if math.isfinite(split)
                              else None}
    if math.isfinite(split):
        learn = np.flatnonzero((created < split) & (delivered <= split))
        test = np.flatnonzero(created >= split)
        # The full scan history is fine: rolling lookups only read days before each request's day.
        check = tr.fit_samples(_samples(h, learn), h.history, h.geo, rc, split,
                               meta={"training_window": _window(created[learn], split)})
        report["holdout"] = holdout_scores(check, rules, h, test)
    everything = np.arange(len(h.requests))
    end = float(delivered.max())
    model = tr.fit_samples(_samples(h, everything), h.history, h.geo, rc, end,
                           meta={"training_window": _window(created, end), "n_orders": h.shipments,
                                 "source": "stores"})
    metrics_ = {"version": model.version, "training_window": model.meta.get("training_window"),
                "calibration_block": model.meta.get("calibration_block"), "features": model.features,
                "source": "stores", "train_report": report}
    path = Path(out) / model.version
    if not (path / "meta.json").exists():
        model.save(path, metrics_)
    else:
        (path / "metrics.json").write_text(json.dumps(metrics_, indent=2))
    if promote or (promote is None and not (Path(out) / "current").exists()):
        tr.promote_to_current(path)
    return path, report


def _window(created: np.ndarray, known_at: float) -> dict[str, str]:
    iso = lambda t: datetime.fromtimestamp(float(t), UTC).isoformat()  # noqa: E731
    return {"first_label": iso(created.min()), "last_label": iso(created.max()), "outcomes_known_at": iso(known_at)}



def retrain_from_stores(settings: Any, out: str | Path = "artifacts/eta", recipe: Any = None,
                        holdout_days: float = 7.0, min_holdout: int = 50, rules: RuleConfig | None = None,
                        now: float | None = None, **where: Any) -> dict[str, Any]:
    """The nightly job on the carrier's own history (see `train.retrain` for the dataset twin).

    A challenger learns from the deliveries completed before a recent hold-out window (the last
    `holdout_days` of labels, starting no earlier than the current model's own outcome cutoff, so
    neither model saw those outcomes); both are scored on the hold-out shipments' scan moments and
    the model refitted on everything is promoted only if `train.decide` says so. With fewer than
    `min_holdout` unseen shipments the current model stays (the new version is still written)."""
    from models.eta import train as tr

    rc = recipe or tr.Recipe()
    rules = rules or RuleConfig()
    h = load(settings, **where)
    if not h.requests:
        raise ValueError("no delivered shipments with scan history in the stores")
    created = np.asarray(h.created_ts)
    delivered = np.asarray(h.delivered_ts)
    end = now if now is not None else float(delivered.max())
    start = end - holdout_days * 86400.0
    current = Path(out) / "current"
    incumbent: EtaModel | None = None
    report: dict[str, Any] = {"data_end": _iso(end)}
    if current.exists():
        try:
            incumbent = EtaModel.load(current)
            seen = incumbent.meta.get("training_window", {}).get("outcomes_known_at")
            if seen:
                start = max(start, datetime.fromisoformat(seen).timestamp())
            report["incumbent"] = incumbent.version
        except Exception as exc:  # a corrupt current model is replaced by any working one
            report["incumbent_error"] = f"{type(exc).__name__}: {exc}"
    report["holdout_start"] = _iso(start)
    hold = np.flatnonzero((created >= start) & (delivered <= end))
    n_hold = len({h.shipment[i] for i in hold})
    report["holdout_shipments"] = n_hold
    decision = "promote"
    if n_hold < min_holdout:
        decision = "keep" if incumbent is not None else "promote"
        report["reason"] = f"only {n_hold} unseen delivered hold-out shipments (< {min_holdout})"
    else:
        learn = np.flatnonzero((created < start) & (delivered <= start))
        challenger = tr.fit_samples(_samples(h, learn), h.history, h.geo, rc, start,
                                    meta={"training_window": _window(created[learn], start)})
        cs = holdout_scores(challenger, rules, h, hold)
        report["challenger"] = cs["model"]
        if incumbent is not None:
            incumbent.history = History()
            incumbent.history.observe(frame_from_requests(h.history), incumbent.tables)  # rolling features as lived
            inc = holdout_scores(incumbent, rules, h, hold)["model"]
            report["incumbent_score"] = inc
            decision = tr.decide(cs["model"], inc, rc.train.coverage)
            report["reason"] = f"challenger MAE {cs['model']['mae_days']} vs {inc['mae_days']}, coverage " \
                               f"{cs['model']['coverage_p10_p90']} vs {inc['coverage_p10_p90']}"
        else:
            decision = "promote" if cs["model"]["mae_days"] < cs["rule"]["mae_days"] else "keep"
            report["reason"] = f"no current model; challenger MAE {cs['model']['mae_days']} vs rule " \
                               f"{cs['rule']['mae_days']}"
    path, _ = train_from_stores(settings, out, rc, promote=decision == "promote", holdout_frac=0.0, rules=rules,
                                **where)
    report.update(decision=decision, artifact=str(path))
    mfile = path / "metrics.json"
    m = json.loads(mfile.read_text()) if mfile.exists() else {}
    m["retrain"] = report
    mfile.write_text(json.dumps(m, indent=2))
    return report


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
