"""ETA model: features shared by training and serving, batched inference, and every fallback trigger."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.eta import load_estimator, olist, train
from models.eta.features import DAY, History, build_features, frame_from_requests
from models.eta.model import EtaConfig, EtaModel, ModelEstimator, TrainConfig
from models.eta.rules import RuleEstimator
from models.eta.synthetic import write_olist_like

FAST = train.Recipe(train=TrainConfig(rounds=40))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_olist_like(tmp_path_factory.mktemp("olist"), n_orders=1200, days=120, seed=3)


@pytest.fixture(scope="module")
def artifact(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    return train.train(data, root, recipe=FAST)


@pytest.fixture()
def estimator(artifact: Path) -> ModelEstimator:
    est = load_estimator({"model_path": str(artifact.parent / "current"), "min_confidence": 0.0,
                          "rules": {"country": "BR"}})
    assert isinstance(est, ModelEstimator) and est.model is not None
    return est


@pytest.fixture(scope="module")
def sample_requests(data: Path):  # type: ignore[no-untyped-def]
    df = olist.load(data)
    rows = np.flatnonzero(np.isfinite(df["delivered"].to_numpy(float)))[-200:]
    return olist.requests(df.iloc[rows], "label") + olist.requests(df.iloc[rows], "handoff")


def test_offline_features_equal_online_features(data: Path) -> None:
    """The training matrix (bulk replay of the dataset) equals what a live estimator computes when the
    same scans arrive day by day: static tables, rolling history and all."""
    df = olist.load(data)
    geo = olist.geo_table(data)
    end = train.data_end(df)
    model = train.fit(df, end, geo, FAST)
    names = model.features
    assert {"drift_7d", "volume_index", "facility_throughput", "route_median_days"} <= set(names)

    # offline: what fit() trains on
    s = train.samples(df, np.arange(len(df)))
    offline = build_features(frame_from_requests(s.requests), model.tables,
                             train.replay_history(df, model.tables), names)
    key = {(r.shipment_id, r.event_type.value): i for i, r in enumerate(s.requests)}

    # online: a fresh history, the scans fed in daily batches through the estimator itself
    live = copy.copy(model)
    live.history = History()
    est = ModelEstimator(live, EtaConfig(observe=True))
    stream = olist.history_requests(df)
    days = np.array([int((r.event_at.timestamp() - 3 * 3600) // DAY) for r in stream])
    online = np.full_like(offline, np.nan)
    seen = 0
    for d in np.unique(days):
        batch = [stream[i] for i in np.flatnonzero(days == d)]
        _, X = est.features(batch)
        for r, row in zip(batch, X):
            i = key.get((r.shipment_id, r.event_type.value))
            if i is not None:
                online[i] = row
                seen += 1
    assert seen == len(s.requests)
    np.testing.assert_allclose(online, offline, rtol=1e-6, equal_nan=True)
    # and the rolling features are really populated, not NaN on both sides
    j = names.index("drift_7d")
    assert np.isfinite(offline[:, j]).mean() > 0.5
    for f in ("dest_zip3_delay", "origin_zip_delay", "route_zip3_delay", "origin_handling_rel"):
        col = offline[:, names.index(f)]
        assert np.isfinite(col).mean() > 0.5 and np.nanstd(col) > 0, f


def test_every_eta_carries_source_interval_and_version(estimator: ModelEstimator, sample_requests) -> None:  # type: ignore[no-untyped-def]
    out = estimator.estimate(sample_requests)
    assert len(out) == len(sample_requests)
    for r, e in zip(sample_requests, out):
        assert e.source == "model"
        assert e.model_version == estimator.version
        assert e.low is not None and e.high is not None and e.at is not None
        assert e.low <= e.at <= e.high
        assert e.at >= r.event_at
        assert 0 < (e.confidence or 0) <= 1
        assert set(e.to_json()) == {"at", "source", "interval", "model_version"}


def test_one_inference_call_per_batch(estimator: ModelEstimator, sample_requests, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert estimator.model is not None
    booster = estimator.model.booster
    calls: list[int] = []
    real = booster.inplace_predict

    def counting(X, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(len(X))
        return real(X, *a, **k)

    monkeypatch.setattr(booster, "inplace_predict", counting)
    estimator.estimate(sample_requests)
    assert calls == [len(sample_requests)]


def test_low_confidence_falls_back(artifact: Path, sample_requests) -> None:  # type: ignore[no-untyped-def]
    est = load_estimator({"model_path": str(artifact), "min_confidence": 0.999, "rules": {"country": "BR"}})
    out = est.estimate(sample_requests[:20])
    assert all(e.source == "rule" and e.at is not None for e in out)
    assert isinstance(est, ModelEstimator) and est.fallbacks["low_confidence"] == 20


def test_missing_feature_falls_back(estimator: ModelEstimator, sample_requests) -> None:  # type: ignore[no-untyped-def]
    good = sample_requests[0]
    lost = replace(good, dest_zip=None, dest_lat=None, dest_lng=None)  # no destination: no distance
    out = estimator.estimate([good, lost])
    assert out[0].source == "model"
    assert out[1].source == "rule" and out[1].at is not None
    assert estimator.fallbacks["missing_feature"] == 1


def test_out_of_range_prediction_falls_back(artifact: Path, sample_requests) -> None:  # type: ignore[no-untyped-def]
    est = load_estimator({"model_path": str(artifact), "max_remaining_days": 0.01, "min_confidence": 0.0})
    out = est.estimate(sample_requests[:5])
    assert all(e.source == "rule" for e in out)
    assert isinstance(est, ModelEstimator) and est.fallbacks["out_of_range"] == 5


def test_bad_row_falls_back_alone(estimator: ModelEstimator, sample_requests) -> None:  # type: ignore[no-untyped-def]
    broken = replace(sample_requests[1], event_at=None)  # type: ignore[arg-type]
    naive = replace(sample_requests[2], event_at=sample_requests[2].event_at.replace(tzinfo=None))
    out = estimator.estimate([sample_requests[0], broken, naive])
    assert [e.source for e in out] == ["model", "rule", "model"]
    assert out[1].at is None


def test_corrupt_model_file_falls_back(artifact: Path, tmp_path: Path, sample_requests) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "v-corrupt"
    bad.mkdir()
    for f in artifact.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.ubj").write_bytes(b"\x00garbage" * 10)
    est = load_estimator({"model_path": str(bad), "rules": {"country": "BR"}})
    out = est.estimate(sample_requests[:10])
    assert all(e.source == "rule" and e.at is not None for e in out)
    assert isinstance(est, ModelEstimator) and est.load_error
    assert est.fallbacks["no_model"] == 10


def test_unreadable_meta_falls_back(artifact: Path, tmp_path: Path, sample_requests) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "v-meta"
    bad.mkdir()
    for f in artifact.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "meta.json").write_text("{not json")
    out = load_estimator({"model_path": str(bad)}).estimate(sample_requests[:3])
    assert [e.source for e in out] == ["rule"] * 3


def test_absent_model_is_the_rule_estimator(tmp_path: Path, sample_requests) -> None:  # type: ignore[no-untyped-def]
    est = load_estimator({"model_path": str(tmp_path / "nothing-here")})
    assert isinstance(est, RuleEstimator)
    assert all(e.source == "rule" for e in est.estimate(sample_requests[:3]))


def test_model_failure_at_inference_falls_back(estimator: ModelEstimator, sample_requests, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert estimator.model is not None

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("feature shape mismatch")

    monkeypatch.setattr(estimator.model.booster, "inplace_predict", boom)
    out = estimator.estimate(sample_requests[:4])
    assert [e.source for e in out] == ["rule"] * 4


def test_terminal_requests_get_no_eta(estimator: ModelEstimator, sample_requests) -> None:  # type: ignore[no-untyped-def]
    from models.domain import EventType, Status

    done = replace(sample_requests[0], status=Status.DELIVERED, event_type=EventType.DELIVERED)
    [e] = estimator.estimate([done])
    assert e.at is None and e.source == "rule"


def test_artifact_layout(artifact: Path) -> None:
    names = {p.name for p in artifact.iterdir()}
    assert {"model.ubj", "meta.json", "tables.json", "history.json", "metrics.json"} <= names
    m = EtaModel.load(artifact)
    assert m.version == artifact.name
    assert m.meta["training_window"]["first_purchase"] < m.meta["training_window"]["last_purchase"]
    assert (artifact.parent / "current").resolve() == artifact.resolve()


def test_fast_and_tolerant_frame_paths_agree(sample_requests) -> None:  # type: ignore[no-untyped-def]
    """The batched reader (one C-level pass) and the per-row tolerant reader give the same columns;
    one naive or unreadable row sends the batch down the tolerant path without losing the others."""
    from datetime import UTC
    from datetime import datetime as dt

    from models.eta.features import Frame

    reqs = list(sample_requests[:50])
    reqs[3] = replace(reqs[3], pickup_due_at=None, weight_kg=None, remaining_stops=4,
                      extra={"weather_severity": 0.5})
    fast = frame_from_requests(reqs)
    naive = replace(reqs[0], event_at=dt(2018, 1, 2, 10, 0))  # naive: read as UTC by the tolerant path
    tolerant = frame_from_requests(reqs + [naive, "not a request"])  # type: ignore[list-item]
    assert tolerant.ok.tolist() == [True] * 51 + [False]
    for name in Frame.__dataclass_fields__:
        if name == "n":
            continue
        a, b = getattr(fast, name), getattr(tolerant, name)[:50]
        if a.dtype == object:
            assert a.tolist() == b.tolist(), name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert fast.remaining_stops[3] == 4 and fast.weather[3] == 0.5 and np.isnan(fast.pickup_due_ts[3])
    assert tolerant.event_ts[50] == dt(2018, 1, 2, 10, 0, tzinfo=UTC).timestamp()


def test_unknown_zip_backs_off_to_its_prefix(estimator: ModelEstimator, sample_requests) -> None:  # type: ignore[no-untyped-def]
    """A zip with no centroid of its own takes its 3-digit prefix's (mean position, most common
    region) instead of dropping the row to the rules; an unknown prefix still has no position."""
    from models.eta.features import FeatureTables

    t = FeatureTables(geo={"01001": (-23.0, -46.0, "SP"), "01002": (-23.2, -46.2, "SP"),
                           "01003": (-23.4, -46.4, "RJ"), "20000": (-22.9, -43.2, "RJ")})
    zips = np.array(["01001", "01099", "99999", ""], dtype=object)
    lat, lng = t.coords(zips, np.full(4, np.nan), np.full(4, np.nan))
    np.testing.assert_allclose(lat[:2], [-23.0, -23.2])
    np.testing.assert_allclose(lng[:2], [-46.0, -46.2])
    assert np.isnan(lat[2:]).all() and np.isnan(lng[2:]).all()
    assert t.region(zips).tolist() == ["SP", "SP", "Z999", ""]

    assert estimator.model is not None
    good = sample_requests[0]
    known = estimator.model.tables.geo
    z = good.dest_zip
    assert z and z in known
    new_zip = next(f"{z[:3]}{i:02d}" for i in range(100) if f"{z[:3]}{i:02d}" not in known)
    moved = replace(good, dest_zip=new_zip, dest_lat=None, dest_lng=None)  # a zip the tables never saw
    before = estimator.fallbacks["missing_feature"]
    out = estimator.estimate([good, moved])
    assert [e.source for e in out] == ["model", "model"]
    assert estimator.fallbacks["missing_feature"] == before


def test_keyed_window_sums_only_earlier_days_in_any_arrival_order() -> None:
    """KeyedDaily: the window sum of a key is over its cells on [day - W, day), whatever the order
    and batching of the observations (buffered, merged, serialised, trimmed)."""
    from models.eta.features import KeyedDaily

    rng = np.random.default_rng(5)
    n = 3000
    keys = [f"k{i}" for i in rng.integers(0, 40, n)]
    days = rng.integers(17000, 17200, n)
    vals = np.round(rng.normal(0, 1, n), 6)

    def brute(qk: list[str], qd: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
        kk = np.array(keys)
        cnt = np.array([((kk == k) & (days >= d - w) & (days < d)).sum() for k, d in zip(qk, qd)], dtype=float)
        tot = np.array([vals[(kk == k) & (days >= d - w) & (days < d)].sum() for k, d in zip(qk, qd)])
        return cnt, tot

    qk = [f"k{i}" for i in rng.integers(0, 45, 400)]  # k40..k44 never observed
    qd = rng.integers(16990, 17230, 400)
    want_n, want_s = brute(qk, qd, 30)

    a = KeyedDaily()
    a.add(keys, days, vals)  # one bulk replay
    b = KeyedDaily()
    perm = rng.permutation(n)
    for chunk in np.array_split(perm, 17):  # shuffled batches, some merged, some buffered
        b.add([keys[i] for i in chunk], days[chunk], vals[chunk])
        if rng.random() < 0.3:
            b._merge()
    for store in (a, b, KeyedDaily.from_json(b.to_json())):
        got_n, got_s = store.window(qk, qd, 30)
        np.testing.assert_array_equal(got_n, want_n)
        np.testing.assert_allclose(got_s, want_s, atol=1e-8)
    np.testing.assert_array_equal(a.window(qk, qd, 30)[1], b.window(qk, qd, 30)[1])  # same bits
    b.trim(17100)  # cells before day 17100 dropped: windows starting there are unchanged
    late = qd >= 17130
    np.testing.assert_array_equal(b.window(qk, qd, 30)[0][late], want_n[late])
