"""`parcel eta ...`: train, evaluate and retrain the ETA model on a directory laid out like Olist's.

Run standalone as `python -m models.eta.cli ...`; the main CLI mounts `eta_app`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import typer

eta_app = typer.Typer(help="ETA model: train, evaluate, nightly retrain.", no_args_is_help=True)


@eta_app.command("train")
def train_cmd(
    data_dir: Path | None = typer.Argument(None, exists=True, file_okay=False,
                                           help="directory laid out like olist/ (omit with --from-stores)"),
    out: Path = typer.Option(Path("artifacts/eta"), "--out", help="artifact root; a versioned dir is made in it"),
    promote: bool = typer.Option(False, "--promote", help="point OUT/current at the new version "
                                 "(done anyway when there is no current model)"),
    from_stores: bool = typer.Option(False, "--from-stores", help="learn from the carrier's delivered shipments "
                                     "(PostgreSQL) and their scans (Cassandra) instead of a dataset directory"),
    since: datetime | None = typer.Option(None, "--since", help="--from-stores: labels created at or after (UTC)"),
    until: datetime | None = typer.Option(None, "--until", help="--from-stores: labels created before (UTC)"),
    tracking_prefix: str | None = typer.Option(None, "--tracking-prefix", help="--from-stores: only these shipments"),
    rounds: int = typer.Option(0, "--rounds", help="boosting rounds (0 = the recipe's)", hidden=True),
) -> None:
    """Fit on every delivered order and write a versioned artifact (model, features, window, metrics)."""
    from models.eta import train

    if from_stores == (data_dir is not None):
        raise typer.BadParameter("give either DATA_DIR or --from-stores")
    if from_stores:
        from config.settings import load_settings
        from models.eta import stores

        def utc(d: datetime | None) -> datetime | None:
            return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)

        path, report = stores.train_from_stores(load_settings(), out, _recipe(rounds),
                                                promote=True if promote else None, since=utc(since),
                                                until=utc(until), tracking_prefix=tracking_prefix)
        typer.echo(json.dumps({"artifact": str(path), "current": str((out / "current").resolve()), "report": report}))
        return
    assert data_dir is not None
    path = train.train(data_dir, out, _recipe(rounds), promote=True if promote else None)
    typer.echo(json.dumps({"artifact": str(path), "current": str((out / "current").resolve())}))


@eta_app.command("evaluate")
def evaluate_cmd(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    frac: float = typer.Option(0.75, "--learn-share", help="earliest share of purchases to learn from"),
    rounds: int = typer.Option(0, "--rounds", help="boosting rounds (0 = the recipe's)", hidden=True),
) -> None:
    """Chronological split: learn from the earliest 75% of purchases, test on the rest."""
    from models.eta import train

    res = train.evaluate(data_dir, _recipe(rounds), frac=frac)
    if as_json:
        typer.echo(json.dumps(res))
        return
    for name in ("model", "model_at_handoff", "seller_estimate", "seller_estimate_shifted", "route_median", "rule"):
        m = res[name]
        extra = ""
        if "coverage_p10_p90" in m:
            extra = f"  coverage {m['coverage_p10_p90']:.3f}  fallback {m['fallback_share']:.4f}"
        typer.echo(f"{name:25s} MAE {m['mae_days']:6.2f} d  ±1d {m['within_1d']:.3f}  ±3d {m['within_3d']:.3f}"
                   f"  late {m['late_share']:.3f}{extra}")


@eta_app.command("retrain")
def retrain_cmd(
    data_dir: Path | None = typer.Argument(None, exists=True, file_okay=False,
                                           help="directory laid out like olist/ (omit with --from-stores)"),
    out: Path = typer.Option(Path("artifacts/eta"), "--out", help="artifact root holding `current`"),
    holdout_days: float | None = typer.Option(None, "--holdout-days", help="recent window the challenger is judged "
                                              "on (default 28 for a dataset, 7 for --from-stores)"),
    from_stores: bool = typer.Option(False, "--from-stores", help="the carrier's delivered shipments (PostgreSQL) "
                                     "and their scans (Cassandra) instead of a dataset directory"),
    tracking_prefix: str | None = typer.Option(None, "--tracking-prefix", help="--from-stores: only these shipments"),
    rounds: int = typer.Option(0, "--rounds", help="boosting rounds (0 = the recipe's)", hidden=True),
) -> None:
    """Nightly job: refit on everything delivered; promote only if it beats `current` on a recent window.

    Schedule (cron, 02:15 every night):
    15 2 * * * cd /srv/parcel && nice -n 10 .venv/bin/python -m models.eta.cli retrain --from-stores
    """
    from models.eta import train

    if from_stores == (data_dir is not None):
        raise typer.BadParameter("give either DATA_DIR or --from-stores")
    if from_stores:
        from config.settings import load_settings
        from models.eta import stores

        report = stores.retrain_from_stores(load_settings(), out, _recipe(rounds),
                                            holdout_days=holdout_days or 7.0, tracking_prefix=tracking_prefix)
    else:
        assert data_dir is not None
        report = train.retrain(data_dir, out, holdout_days=holdout_days or 28.0, recipe=_recipe(rounds))
    typer.echo(json.dumps(report))


def _recipe(rounds: int):  # type: ignore[no-untyped-def]
    from models.eta import train

    recipe = train.Recipe()
    if rounds > 0:
        recipe.train.rounds = rounds
    return recipe


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    eta_app()
