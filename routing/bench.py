"""Benchmark runner: a set directory (instances/ + reference CSV) in, one result row per instance and
engine out. Every engine's routes are re-costed by routing.problem.evaluate, never taken on trust."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from routing.engines import get_engine
from routing.instances import READERS, cases
from routing.problem import evaluate


@dataclass
class BenchRow:
    name: str
    solver: str
    cost: float | None
    reference: float
    gap: float | None  # percent over the reference
    seconds: float
    feasible: bool
    nodes: int
    time_limit: float
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse_solver_spec(spec: str, default_limit: float) -> tuple[str, float]:
    """`NAME` or `NAME=SECONDS` (a per-engine budget, e.g. a shorter one for an engine already beaten)."""
    name, _, limit = spec.partition("=")
    get_engine(name)  # fails early, naming the known engines
    return name, float(limit) if limit else default_limit


def run(
    directory: Path,
    solvers: list[tuple[str, float]],
    only: set[str] | None = None,
    max_nodes: int | None = None,
    seed: int = 0,
) -> Iterator[BenchRow]:
    kind, todo = cases(directory)
    reader = READERS[kind]
    for case in todo:
        if only and case.name not in only:
            continue
        problem = reader(case.path)
        nodes = len(problem.jobs) + 1
        if max_nodes is not None and nodes > max_nodes:
            continue
        for name, limit in solvers:
            eng = get_engine(name)
            t0 = time.perf_counter()
            try:
                result = eng.solve(problem, limit, seed)
            except Exception as exc:  # noqa: BLE001 - a crashing engine is a result row, not the end of the run
                yield BenchRow(case.name, name, None, case.reference, None, time.perf_counter() - t0, False,
                               nodes, limit, f"{type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - t0
            ev = evaluate(problem, result.routes)
            cost = ev.cost / problem.cost_scale
            gap = 100.0 * (cost - case.reference) / case.reference
            yield BenchRow(case.name, name, round(cost, 3), case.reference, round(gap, 4), round(seconds, 3),
                           ev.feasible, nodes, limit)


def summarise(rows: list[BenchRow]) -> dict[str, dict[str, object]]:
    """Per engine: instances, feasible count, mean gap over feasible runs, mean and max seconds."""
    out: dict[str, dict[str, object]] = {}
    for solver in dict.fromkeys(r.solver for r in rows):
        mine = [r for r in rows if r.solver == solver]
        feas = [r for r in mine if r.feasible and r.gap is not None]
        out[solver] = {
            "instances": len(mine),
            "feasible": len(feas),
            "mean_gap": round(statistics.fmean(r.gap for r in feas), 4) if feas else None,  # type: ignore[misc]
            "max_gap": round(max(r.gap for r in feas), 4) if feas else None,  # type: ignore[type-var]
            "mean_seconds": round(statistics.fmean(r.seconds for r in mine), 2) if mine else None,
            "max_seconds": round(max(r.seconds for r in mine), 2) if mine else None,
        }
    return out
