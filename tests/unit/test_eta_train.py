"""ETA training lifecycle: a small deterministic run beats the rules on held-out data; the CLI
commands write versioned artifacts, print one JSON object, and promote only a better model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.eta import olist, train
from models.eta.cli import eta_app
from models.eta.model import EtaConfig, ModelEstimator, TrainConfig
from models.eta.rules import RuleEstimator
from models.eta.synthetic import write_olist_like

FAST = train.Recipe(train=TrainConfig(rounds=40))
MEMBERS = ("model", "model_at_handoff", "seller_estimate", "seller_estimate_shifted", "route_median", "rule")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_olist_like(tmp_path_factory.mktemp("olist"), n_orders=1500, days=150, seed=11)


def test_small_training_run_beats_the_rules_on_later_orders(data: Path) -> None:
    df = olist.load(data)
    geo = olist.geo_table(data)
    T = train.split_time(df, 0.75)
    purchase, delivered = df["purchase"].to_numpy(float), df["delivered"].to_numpy(float)
    test = np.flatnonzero((purchase >= T) & np.isfinite(delivered))
    model = train.fit(df, T, geo, FAST, history_df=df)
    # nothing learnt from an outcome after the split
    assert model.meta["training_window"]["outcomes_known_at"] <= train._iso(T)
    est = ModelEstimator(model, EtaConfig(observe=False, rules=train.OLIST_RULES))
    m = train.score_estimator(est, df, test, "label")
    r = train.score_estimator(RuleEstimator(train.OLIST_RULES), df, test, "label")
    assert m["mae_days"] < 0.6 * r["mae_days"]
    assert 0.6 <= m["coverage_p10_p90"] <= 0.95
    assert m["fallback_share"] < 0.05
    # deterministic: the same data and recipe give the same model
    again = train.fit(df, T, geo, FAST, history_df=df)
    assert again.version == model.version


def test_evaluate_prints_one_json_object(data: Path) -> None:
    res = CliRunner().invoke(eta_app, ["evaluate", str(data), "--json", "--rounds", "30"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for name in MEMBERS:
        assert {"mae_days", "within_1d", "within_3d", "late_share"} <= set(out[name]), name
    for name in ("model", "model_at_handoff"):
        assert {"coverage_p10_p90", "fallback_share"} <= set(out[name])
    assert out["model"]["mae_days"] < out["rule"]["mae_days"]


def test_train_then_retrain_keeps_or_promotes(data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(eta_app, ["train", str(data), "--out", str(tmp_path), "--rounds", "30"])
    assert res.exit_code == 0, res.output
    first = Path(json.loads(res.stdout)["artifact"])
    assert (tmp_path / "current").resolve() == first.resolve()
    metrics = json.loads((first / "metrics.json").read_text())
    assert {"version", "training_window", "features"} <= set(metrics)

    # Nothing new since the current model was trained: too little unseen evidence -> keep it.
    res = runner.invoke(eta_app, ["retrain", str(data), "--out", str(tmp_path), "--rounds", "30"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["decision"] == "keep"
    assert (tmp_path / "current").resolve() == first.resolve()
    assert Path(report["artifact"]).exists()  # the candidate is kept for inspection, not promoted


def test_retrain_promotes_a_model_that_beats_a_stale_one(data: Path, tmp_path: Path) -> None:
    df = olist.load(data)
    end = train.data_end(df)
    stale = train.train(data, tmp_path, FAST, now=end - 60 * 86400.0)  # trained two months ago
    assert (tmp_path / "current").resolve() == stale.resolve()
    report = train.retrain(data, tmp_path, holdout_days=45, min_holdout=100, recipe=FAST)
    assert report["holdout_orders"] >= 100
    assert "challenger" in report and "incumbent_score" in report
    if report["decision"] == "promote":
        assert (tmp_path / "current").resolve() == Path(report["artifact"]).resolve()
    else:
        assert (tmp_path / "current").resolve() == stale.resolve()


def test_promotion_rule_both_ways() -> None:
    """Promote only a lower MAE whose P10-P90 coverage is no further from 80% (or within 5 points)."""
    inc = {"mae_days": 6.0, "coverage_p10_p90": 0.78}
    assert train.decide({"mae_days": 5.9, "coverage_p10_p90": 0.81}, inc) == "promote"
    assert train.decide({"mae_days": 6.1, "coverage_p10_p90": 0.80}, inc) == "keep"       # worse MAE
    assert train.decide({"mae_days": 6.0, "coverage_p10_p90": 0.80}, inc) == "keep"       # a tie is no win
    assert train.decide({"mae_days": 5.0, "coverage_p10_p90": 0.60}, inc) == "keep"       # band no longer honest
    assert train.decide({"mae_days": 5.0, "coverage_p10_p90": 0.60},
                        {"mae_days": 6.0, "coverage_p10_p90": 0.55}) == "promote"         # but closer than before
