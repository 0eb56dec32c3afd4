"""XGBoost quantile model (P10/P50/P90 of the remaining days) with conformal bands and rule fallback.

`EtaModel` is the artifact (booster + feature list + tables + rolling history + calibration);
`ModelEstimator` is what the pipeline calls: one batched inference per `estimate()`, and the rule
estimator answers each row the model should not (see FALLBACK_REASONS).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from models.eta.base import Eta, EtaRequest
from models.eta.features import (
    DAY,
    LABEL,
    STATUS_CODES,
    FeatureTables,
    Frame,
    History,
    build_features,
    frame_from_requests,
    label_twins,
)
from models.eta.rules import RuleConfig, RuleEstimator

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
MODEL_FILE = "model.ubj"
META_FILE = "meta.json"
TABLES_FILE = "tables.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
LIVE_FILE = "live_calibration.json"
HISTORY_DAYS = 90  # rolling state kept: label-time twins of slow deliveries look this far back

FALLBACK_REASONS = (
    "no_model",          # artifact absent, corrupt, or failed to load
    "model_error",       # inference raised for the batch
    "bad_row",           # the request could not be read
    "terminal",          # delivered / returned: nothing to predict (rule answers at=None)
    "missing_feature",   # a required feature is NaN for the row
    "out_of_range",      # P50 NaN, negative or beyond max_remaining_days
    "low_confidence",    # interval too wide for the prediction
)
_R = {name: i + 1 for i, name in enumerate(FALLBACK_REASONS)}

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "reg:quantileerror",
    "quantile_alpha": list(QUANTILES),
    "tree_method": "hist",
    "max_depth": 3,                 # depth 3 x 60 rounds x 3 quantiles: ~1.5-2 us/row to score, as accurate
    "learning_rate": 0.25,          # as depth 5 x 100 rounds on the Olist benchmark (docs/eta.md)
    "min_child_weight": 50,
    "subsample": 0.8,
    "colsample_bynode": 0.8,
    "reg_lambda": 5.0,
    "max_bin": 128,
    "nthread": int(os.environ.get("ETA_NTHREAD", "1")),  # 2 threads on a shared 2-core box ran 4-7x slower
    "seed": 7,
}


@dataclass
class TrainConfig:
    rounds: int = 60
    cal_frac: float = 0.15          # most recent share of samples (by label time) used to calibrate
    half_life_days: float = 45.0    # recency weighting of training samples (0 = off)
    coverage: float = 0.8           # target P10-P90 coverage
    refit_on_all: bool = True       # final booster sees the calibration block too
    center: bool = True             # shift P50 by the calibration block's median residual
    live_window_days: int = 7       # rolling conformal on recent deliveries (0 = static offsets only)
    live_min_n: int = 300
    # The rolling window lags a slowdown by days; aiming it a little wider keeps the realised band
    # near `coverage` (checked on two chronological splits, docs/eta.md).
    live_coverage: float | None = 0.84
    live_center: bool = True        # also move P50 by the recent deliveries' median residual
    params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))


def _target(days: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(days, 0.01, None))


@dataclass
class LiveCalibration:
    """Rolling conformal calibration on the most recent deliveries (drift).

    When a shipment is delivered, the model's raw label-time quantiles for it are scored against
    the outcome. Predictions on day d use the offsets of deliveries completed in [d - window, d)
    (and after the model's own training cutoff, so no in-sample score counts); with fewer than
    `min_n` such scores the static offsets from the training calibration block apply.
    """

    since_day: int
    window: int = 14
    min_n: int = 300
    coverage: float = 0.8
    center: bool = True
    scores: dict[int, list[list[float]]] = field(default_factory=dict)  # day -> [lo, mid, hi] lists
    _cache: dict[int, np.ndarray | None] = field(default_factory=dict, repr=False)

    def observe(self, days: np.ndarray, q: np.ndarray, y: np.ndarray) -> None:
        keep = np.isfinite(y) & np.isfinite(q).all(axis=1) & (days > self.since_day)
        if not keep.any():
            return
        self._cache.clear()
        lo, mid, hi = q[keep, 0] - y[keep], y[keep] - q[keep, 1], y[keep] - q[keep, 2]
        for d in np.unique(days[keep]):
            sel = days[keep] == d
            cell = self.scores.setdefault(int(d), [[], [], []])
            cell[0].extend(lo[sel].tolist())
            cell[1].extend(mid[sel].tolist())
            cell[2].extend(hi[sel].tolist())

    def offsets(self, day: int) -> np.ndarray | None:
        if day in self._cache:
            return self._cache[day]
        cells = [self.scores[d] for d in range(day - self.window, day) if d in self.scores]
        out = None
        if cells and sum(len(c[0]) for c in cells) >= self.min_n:
            lo = np.concatenate([c[0] for c in cells])
            mid = np.concatenate([c[1] for c in cells])
            hi = np.concatenate([c[2] for c in cells])
            level = 1 - (1 - self.coverage) / 2
            out = np.array([np.quantile(lo, level), np.median(mid), np.quantile(hi, level)])
        self._cache[day] = out
        return out

    def trim(self, keep_from_day: int) -> None:
        self.scores = {d: v for d, v in self.scores.items() if d >= keep_from_day}
        self._cache.clear()

    def to_json(self) -> dict[str, Any]:
        return {"since_day": self.since_day, "window": self.window, "min_n": self.min_n,
                "coverage": self.coverage, "center": self.center,
                "scores": {str(k): v for k, v in self.scores.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LiveCalibration:
        return cls(since_day=int(raw["since_day"]), window=int(raw["window"]), min_n=int(raw["min_n"]),
                   coverage=float(raw["coverage"]), center=bool(raw.get("center", True)),
                   scores={int(k): [list(map(float, c)) for c in v] for k, v in raw.get("scores", {}).items()})


@dataclass
class EtaModel:
    booster: xgb.Booster
    features: list[str]
    tables: FeatureTables
    history: History
    calibration: dict[str, list[float]]   # event code (or "*") -> [lo, mid, hi] offsets in log space
    version: str
    meta: dict[str, Any] = field(default_factory=dict)
    live: LiveCalibration | None = None

    # -- training --

    @classmethod
    def fit(cls, X: np.ndarray, days: np.ndarray, created_ts: np.ndarray, event_code: np.ndarray,
            features: list[str], tables: FeatureTables, history: History,
            config: TrainConfig | None = None, meta: dict[str, Any] | None = None,
            outcomes_until: float | None = None) -> EtaModel:
        """`outcomes_until`: when the training outcomes were known (live calibration only scores
        deliveries after it, so no in-sample error counts)."""
        cfg = config or TrainConfig()
        y = _target(days)
        t_end = float(np.nanmax(created_ts))
        if cfg.half_life_days > 0:
            w = np.power(0.5, (t_end - created_ts) / DAY / cfg.half_life_days)
        else:
            w = np.ones(len(y))
        order = np.argsort(created_ts, kind="stable")
        n_cal = int(len(y) * cfg.cal_frac)
        cal = order[len(y) - n_cal:] if n_cal > 0 else order[:0]
        fit_idx = order[: len(y) - n_cal]
        params = dict(cfg.params)
        booster = _train(X[fit_idx], y[fit_idx], w[fit_idx], params, cfg.rounds)
        calib = {"*": [0.0, 0.0, 0.0]}
        cal_stats: dict[str, Any] = {"rows": int(n_cal)}
        if n_cal >= 50:
            q = booster.inplace_predict(X[cal])
            calib = _conformal(q, y[cal], event_code[cal], cfg.coverage, cfg.center)
            days_cal = np.expm1(y[cal])
            raw_q = np.expm1(np.sort(q, axis=1))
            tmp = cls(booster, list(features), tables, history, calib, "tmp")
            adj = tmp.calibrate(np.asarray(q, dtype=np.float64), event_code[cal])
            cal_stats = {
                "rows": int(n_cal),
                "mae_days_p50": round(float(np.abs(adj[:, 1] - days_cal).mean()), 3),
                "coverage_raw": round(float(((days_cal >= raw_q[:, 0]) & (days_cal <= raw_q[:, 2])).mean()), 4),
                "coverage_calibrated": round(float(((days_cal >= adj[:, 0]) & (days_cal <= adj[:, 2])).mean()), 4),
            }
        if cfg.refit_on_all and n_cal > 0:
            booster = _train(X, y, w, params, cfg.rounds)
        raw = bytes(booster.save_raw("ubj"))
        day = datetime.fromtimestamp(t_end, UTC).strftime("%Y%m%dT%H%M%S") if math.isfinite(t_end) else "na"
        version = f"eta-{day}-{hashlib.sha1(raw).hexdigest()[:8]}"
        m = dict(meta or {})
        m.update(train_config={k: v for k, v in cfg.__dict__.items()}, n_samples=int(len(y)),
                 n_calibration=int(n_cal), calibration_block=cal_stats)
        live = None
        if cfg.live_window_days > 0:
            until = outcomes_until if outcomes_until is not None else t_end
            live = LiveCalibration(since_day=int(until // DAY), window=cfg.live_window_days,
                                   min_n=cfg.live_min_n, coverage=cfg.live_coverage or cfg.coverage,
                                   center=cfg.live_center)
        return cls(booster, list(features), tables, history, calib, version, m, live)

    # -- inference --

    def raw_quantiles(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) uncalibrated quantiles in log1p(days) space, sorted; one booster call."""
        q = np.asarray(self.booster.inplace_predict(X), dtype=np.float64).reshape(len(X), 3)
        return np.sort(q, axis=1)  # quantile crossing

    def predict_days(self, X: np.ndarray, event_code: np.ndarray, day: np.ndarray | None = None) -> np.ndarray:
        """(n, 3) remaining days at P10, P50, P90 after calibration."""
        return self.calibrate(self.raw_quantiles(X), event_code, day)

    def calibrate(self, q: np.ndarray, event_code: np.ndarray, day: np.ndarray | None = None) -> np.ndarray:
        q = np.sort(q, axis=1)
        off = np.empty((len(q), 3))
        default = self.calibration.get("*", [0.0, 0.0, 0.0])
        off[:] = default
        for key, v in self.calibration.items():
            if key != "*":
                off[event_code == int(key)] = v
        if self.live is not None and day is not None and len(q):
            # Drift: move every scan type's offsets by what the recent deliveries say about
            # label-time predictions, relative to the static label-time offsets.
            base = np.array(self.calibration.get(str(LABEL), default))
            days, inv = np.unique(np.nan_to_num(day).astype(np.int64), return_inverse=True)
            delta = np.zeros((len(days), 3))
            for k, d in enumerate(days.tolist()):
                o = self.live.offsets(d)
                if o is not None:
                    delta[k] = o - base
                    if not self.live.center:
                        delta[k, 1] = 0.0
            off = off + delta[inv]
        q = q + np.column_stack([-off[:, 0], off[:, 1], off[:, 2]])
        q[:, 0] = np.minimum(q[:, 0], q[:, 1])
        q[:, 2] = np.maximum(q[:, 2], q[:, 1])
        return np.expm1(q)

    def observe_deliveries(self, frame: Frame) -> None:
        """Offline twin of what ModelEstimator.estimate does with DELIVERED rows (bulk priming)."""
        if self.live is None:
            return
        dl = frame.ok & (frame.status_code == STATUS_CODES["DELIVERED"])
        if dl.any():
            sub = frame.take(np.flatnonzero(dl))
            X = build_features(label_twins(sub), self.tables, self.history, self.features)
            self.observe_outcomes(sub, self.raw_quantiles(X))

    def observe_outcomes(self, frame: Frame, q_twin: np.ndarray) -> None:
        """Score label-time quantiles (`q_twin`, raw, log space) of the delivered rows of `frame`."""
        if self.live is None or frame.n == 0:
            return
        y = _target((frame.event_ts - frame.created_ts) / DAY)
        self.live.observe(frame.local_day.astype(np.int64), q_twin, y)

    # -- persistence --

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(p / MODEL_FILE))
        meta = dict(self.meta, version=self.version, features=self.features, calibration=self.calibration,
                    quantiles=list(QUANTILES), model_file=MODEL_FILE,
                    model_sha256=hashlib.sha256((p / MODEL_FILE).read_bytes()).hexdigest())
        (p / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        (p / TABLES_FILE).write_text(json.dumps(self.tables.to_json()))
        (p / HISTORY_FILE).write_text(json.dumps(self.history.to_json()))
        if self.live is not None:
            (p / LIVE_FILE).write_text(json.dumps(self.live.to_json()))
        if metrics is not None:
            (p / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return p

    @classmethod
    def load(cls, path: str | Path) -> EtaModel:
        """Raises on anything missing or corrupt (the caller falls back to rules)."""
        p = Path(path)
        meta = json.loads((p / META_FILE).read_text())
        blob = (p / meta.get("model_file", MODEL_FILE)).read_bytes()
        want = meta.get("model_sha256")
        if want and hashlib.sha256(blob).hexdigest() != want:
            raise ValueError(f"{p / MODEL_FILE}: checksum mismatch")
        booster = xgb.Booster()
        booster.load_model(bytearray(blob))
        booster.set_param({"nthread": int(os.environ.get("ETA_NTHREAD", "1"))})
        tables = FeatureTables.from_json(json.loads((p / TABLES_FILE).read_text()))
        hist_file = p / HISTORY_FILE
        history = History.from_json(json.loads(hist_file.read_text())) if hist_file.exists() else History()
        features = list(meta["features"])
        if booster.num_features() != len(features):
            raise ValueError(f"{p}: model has {booster.num_features()} features, meta lists {len(features)}")
        live_file = p / LIVE_FILE
        live = LiveCalibration.from_json(json.loads(live_file.read_text())) if live_file.exists() else None
        return cls(booster, features, tables, history, {k: list(v) for k, v in meta["calibration"].items()},
                   str(meta["version"]), meta, live)


def _objects(items: Any) -> np.ndarray:
    """1-d object array of arbitrary objects (np.array would try to look inside them)."""
    seq = list(items)
    out = np.empty(len(seq), dtype=object)
    out[:] = seq
    return out


def _train(X: np.ndarray, y: np.ndarray, w: np.ndarray, params: dict[str, Any], rounds: int) -> xgb.Booster:
    d = xgb.QuantileDMatrix(X, label=y, weight=w, max_bin=params.get("max_bin", 256))
    return xgb.train(params, d, num_boost_round=rounds)


def _conformal(q: np.ndarray, y: np.ndarray, event_code: np.ndarray, coverage: float,
               center: bool) -> dict[str, list[float]]:
    """Split-conformal offsets per scan type (Mondrian CQR), each tail calibrated on its own."""
    q = np.sort(np.asarray(q, dtype=np.float64), axis=1)
    tail = (1.0 - coverage) / 2.0

    def offsets(qq: np.ndarray, yy: np.ndarray) -> list[float]:
        n = len(yy)
        level = min(1.0, math.ceil((n + 1) * (1 - tail)) / n)
        lo = float(np.quantile(qq[:, 0] - yy, level))   # lower P10 by this much
        hi = float(np.quantile(yy - qq[:, 2], level))   # raise P90 by this much
        mid = float(np.median(yy - qq[:, 1])) if center else 0.0
        return [lo, mid, hi]

    out = {"*": offsets(q, y)}
    for e in np.unique(event_code):
        sel = event_code == e
        if sel.sum() >= 200:
            out[str(int(e))] = offsets(q[sel], y[sel])
    return out


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EtaConfig:
    """The `eta` section of the pipeline config (see load_estimator)."""

    model_path: str = "artifacts/eta/current"
    min_confidence: float = 0.15
    max_remaining_days: float = 90.0
    required_features: tuple[str, ...] = ("remaining_distance_km",)
    observe: bool = True            # feed each batch into the rolling history before predicting
    rules: RuleConfig = field(default_factory=RuleConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> EtaConfig:
        raw = dict(raw or {})
        known = {"model_path", "min_confidence", "max_remaining_days", "required_features", "observe", "rules"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"eta: unknown keys {sorted(unknown)}")
        rules = RuleConfig.from_dict(raw.pop("rules", None))
        if "required_features" in raw:
            raw["required_features"] = tuple(raw["required_features"])
        return cls(rules=rules, **raw)


def confidence(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """1 for a zero-width band, 0.5 when the P10-P90 band is as wide as the remaining time."""
    return 1.0 / (1.0 + (p90 - p10) / np.maximum(p50, 1.0))


class ModelEstimator:
    """The model with the rule estimator behind it. Never raises for a bad row or a bad model."""

    name = "eta_model"

    def __init__(self, model: EtaModel | None, config: EtaConfig | None = None,
                 rule: RuleEstimator | None = None, load_error: str | None = None) -> None:
        self.model = model
        self.config = config or EtaConfig()
        self.rule = rule or RuleEstimator(self.config.rules)
        self.load_error = load_error
        self.fallbacks: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        missing = [f for f in self.config.required_features if model and f not in model.features]
        self._required = [model.features.index(f) for f in self.config.required_features
                          if model and f in model.features]
        if missing:
            log.warning("eta: required features %s are not in the model's feature list", missing)

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    def features(self, requests: Sequence[EtaRequest]) -> tuple[Frame, np.ndarray]:
        """The model's feature matrix for a batch (also used by the parity tests)."""
        assert self.model is not None
        frame = frame_from_requests(requests, promised="promised_days" in self.model.features)
        if self.config.observe:
            h = self.model.history
            h.observe(frame, self.model.tables)
            last = h.last_day()
            if last is not None and h.created and last - min(h.created) > HISTORY_DAYS + 30:
                h.trim(last - HISTORY_DAYS)  # bounded memory on a long-running worker
                if self.model.live is not None:
                    self.model.live.trim(last - HISTORY_DAYS)
        X = build_features(frame, self.model.tables, self.model.history, self.model.features)
        return frame, X

    def estimate(self, requests: Sequence[EtaRequest]) -> list[Eta]:
        """One Eta per request, in order; one booster call for the batch."""
        # A batch allocates ~10 objects per row and creates no reference cycles: with the cyclic
        # collector paused, its generation-2 passes over the whole heap (model tables, history)
        # do not land inside the batch (~0.3-2 us/row measured on the benchmark).
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._estimate(requests)
        finally:
            if paused:
                gc.enable()

    def _estimate(self, requests: Sequence[EtaRequest]) -> list[Eta]:
        n = len(requests)
        if n == 0:
            return []
        reason = np.zeros(n, dtype=np.int8)  # 0 = the model answers, else 1 + FALLBACK_REASONS index
        pred = np.full((n, 3), np.nan)
        conf = np.full(n, np.nan)
        frame: Frame | None = None
        if self.model is None:
            reason[:] = _R["no_model"]
        else:
            try:
                frame, X = self.features(requests)
                reason[~frame.ok] = _R["bad_row"]
                terminal = np.isin(frame.status_code, [STATUS_CODES["DELIVERED"], STATUS_CODES["RETURN_TO_SENDER"]])
                reason[(reason == 0) & terminal] = _R["terminal"]
                if self._required:
                    miss = np.isnan(X[:, self._required]).any(axis=1)
                    reason[(reason == 0) & miss] = _R["missing_feature"]
                todo = np.flatnonzero(reason == 0)
                model = self.model
                twins = np.flatnonzero(frame.ok & (frame.status_code == STATUS_CODES["DELIVERED"])) \
                    if self.config.observe and model.live is not None else np.empty(0, dtype=np.int64)
                if len(twins):
                    tw = frame.take(twins)
                    X = np.vstack([X[todo], build_features(label_twins(tw), model.tables, model.history,
                                                           model.features)])
                else:
                    X = X[todo]
                if len(X):
                    raw = model.raw_quantiles(X)  # the batch's one inference call
                    if len(twins):
                        model.observe_outcomes(tw, raw[len(todo):])
                    if len(todo):
                        pred[todo] = model.calibrate(raw[: len(todo)], frame.event_code[todo],
                                                     frame.local_day[todo])
                p10, p50, p90 = pred[:, 0], pred[:, 1], pred[:, 2]
                with np.errstate(invalid="ignore"):
                    conf = confidence(p10, p50, p90)
                    bad = ~np.isfinite(pred).all(axis=1) | (p50 < 0) | (p50 > self.config.max_remaining_days)
                    reason[(reason == 0) & bad] = _R["out_of_range"]
                    reason[(reason == 0) & (conf < self.config.min_confidence)] = _R["low_confidence"]
            except Exception:  # a broken model must not stop the stream: the rules answer the batch
                log.exception("eta: model inference failed; rule fallback for %d rows", n)
                reason[reason == 0] = _R["model_error"]
                frame = None
        out = np.empty(n, dtype=object)
        fb = np.flatnonzero(reason)
        if len(fb):
            for r, c in zip(*np.unique(reason[fb], return_counts=True)):
                self.fallbacks[FALLBACK_REASONS[int(r) - 1]] += int(c)
            out[fb] = _objects(self.rule.estimate([requests[i] for i in fb.tolist()]))
        ok = np.flatnonzero(reason == 0)
        if len(ok):
            assert frame is not None and self.model is not None
            base = frame.event_ts[ok]
            tz = frame.tz[ok].tolist()
            fromts = datetime.fromtimestamp
            # C-level maps, no per-row Python: this is most of what is left of the per-row cost.
            at = map(fromts, (base + pred[ok, 1] * DAY).tolist(), tz)
            lo = map(fromts, (base + pred[ok, 0] * DAY).tolist(), tz)
            hi = map(fromts, (base + pred[ok, 2] * DAY).tolist(), tz)
            out[ok] = _objects(map(Eta, at, repeat("model"), lo, hi, repeat(self.model.version), conf[ok].tolist()))
        self.answered["model"] += len(ok)
        self.answered["rule"] += len(fb)
        return out.tolist()
