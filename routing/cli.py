"""`parcel route ...`: benchmark the engines on a set directory, plan an ad-hoc stop list, run the
synthetic day. `route_app` is mounted by the top-level CLI; `python -m routing.cli` runs it alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from routing.engines import ENGINE_NAMES

route_app = typer.Typer(help="Stop-sequence planning over established solvers (PyVRP, LKH-3, OR-Tools, VROOM).")


@route_app.command("bench")
def bench(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A set laid out like shared/data/tsplib")
    ],
    time_limit: Annotated[float, typer.Option("--time-limit", help="Seconds per instance and solver")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line per instance and solver")] = False,
    solver: Annotated[
        list[str] | None,
        typer.Option(
            "--solver", help=f"Engine, repeatable; NAME or NAME=SECONDS. Default: all of {', '.join(ENGINE_NAMES)}"
        ),
    ] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Instance name, repeatable")] = None,
    max_nodes: Annotated[int | None, typer.Option("--max-nodes", help="Skip larger instances")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Run every chosen engine on every instance of DIR and compare with the set's reference CSV."""
    from routing.bench import parse_solver_spec, run, summarise

    try:
        solvers = [parse_solver_spec(s, time_limit) for s in (solver or list(ENGINE_NAMES))]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--solver") from exc
    rows = []
    for row in run(directory, solvers, set(only or []) or None, max_nodes, seed):
        rows.append(row)
        if as_json:
            print(json.dumps(row.to_json()), flush=True)
        else:
            gap = "-" if row.gap is None else f"{row.gap:8.3f}%"
            print(
                f"{row.name:14s} {row.solver:8s} cost={row.cost} ref={row.reference} gap={gap} "
                f"t={row.seconds:.2f}s feasible={row.feasible}{' ' + row.error if row.error else ''}",
                flush=True,
            )
    # The summary goes to stderr so that --json stdout stays one object per instance and solver.
    print(json.dumps({"summary": summarise(rows)}), file=sys.stderr)


@route_app.command("report")
def report(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="JSONL written by bench --json")],
    max_nodes: Annotated[int | None, typer.Option("--max-nodes", help="Also summarise instances up to N")] = None,
) -> None:
    """Markdown tables (per instance and per-engine means) from bench --json output."""
    from routing.bench import load_rows, markdown

    for f in files:
        rows = load_rows(f)
        print(markdown(rows, f.stem))
        if max_nodes is not None:
            small = [r for r in rows if r.nodes <= max_nodes]
            print(markdown(small, f"{f.stem}, instances up to {max_nodes} nodes", per_instance=False))


@route_app.command("plan")
def plan_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A PlanRequest as JSON")],
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Overrides the request's time_limit_s")
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help=f"Force an engine ({', '.join(ENGINE_NAMES)})")] = None,
) -> None:
    """Plan an ad-hoc set of stops and print the plan as JSON."""
    from pydantic import ValidationError

    from routing.models import PlanRequest
    from routing.planner import plan

    try:
        request = PlanRequest.model_validate_json(file.read_text())
    except ValidationError as exc:
        typer.echo(f"invalid plan request {file}:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    updates: dict[str, object] = {}
    if time_limit is not None:
        updates["time_limit_s"] = time_limit
    if engine is not None:
        updates["engine"] = engine
    if updates:
        request = PlanRequest.model_validate({**request.model_dump(), **updates})
    print(plan(request).model_dump_json(indent=2))


@route_app.command("bench-day")
def bench_day_cmd(
    seed: Annotated[int, typer.Option("--seed")] = 7,
    stops: Annotated[int, typer.Option("--stops")] = 150,
    short: Annotated[float, typer.Option("--short", help="Budget whose plan is compared")] = 5.0,
    long: Annotated[float, typer.Option("--long", help="Budget of the reference plan")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A seeded, realistic one-driver day: time to first feasible plan and the gap at SHORT vs LONG seconds."""
    from routing.bench_day import run_day

    report = run_day(seed=seed, n_stops=stops, short=short, long=long)
    print(json.dumps(report) if as_json else json.dumps(report, indent=2))


if __name__ == "__main__":
    route_app()
