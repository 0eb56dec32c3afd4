"""Benchmark runner: a set directory (instances/ + reference CSV) in, one result row per instance and
engine out. Every engine's routes are re-costed by routing.problem.evaluate, never taken on trust."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from routing.engines import EngineResult, get_engine
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
            t0 = time.perf_counter()
            try:
                result = solve_guarded(name, problem, limit, seed)
            except Exception as exc:  # noqa: BLE001 - a crashing engine is a result row, not the end of the run
                yield BenchRow(
                    case.name,
                    name,
                    None,
                    case.reference,
                    None,
                    time.perf_counter() - t0,
                    False,
                    nodes,
                    limit,
                    f"{type(exc).__name__}: {exc}",
                )
                continue
            seconds = time.perf_counter() - t0
            ev = evaluate(problem, result.routes)
            cost = ev.cost / problem.cost_scale
            # A gap only means something for a feasible answer; an infeasible one keeps its cost for the record.
            gap = 100.0 * (cost - case.reference) / case.reference if ev.feasible else None
            yield BenchRow(
                case.name,
                name,
                round(cost, 3),
                case.reference,
                None if gap is None else round(gap, 4),
                round(seconds, 3),
                ev.feasible,
                nodes,
                limit,
            )


def _child(conn, name: str, problem, limit: float, seed: int) -> None:  # noqa: ANN001
    try:
        conn.send(("ok", get_engine(name).solve(problem, limit, seed)))
    except Exception as exc:  # noqa: BLE001 - sent to the parent as the row's error
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def solve_guarded(name: str, problem, limit: float, seed: int) -> EngineResult:  # noqa: ANN001
    """Solve in a forked child that is killed past the budget plus a grace: an engine that ignores its
    time limit (VROOM's single-vehicle TSP path on 1,000+ nodes) or crashes costs one row, not the run."""
    grace = max(10.0, limit)
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=_child, args=(child, name, problem, limit, seed), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(limit + grace):
            raise TimeoutError(f"no result within {limit + grace:.0f} s (budget {limit:g} s + grace)")
        status, payload = parent.recv()
    except EOFError as exc:
        raise RuntimeError(f"engine process died (exit code {proc.exitcode})") from exc
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def summarise(rows: list[BenchRow]) -> dict[str, dict[str, object]]:
    """Per engine: instances, feasible count, mean gap over feasible runs, mean and max seconds."""
    out: dict[str, dict[str, object]] = {}
    for solver in dict.fromkeys(r.solver for r in rows):
        mine = [r for r in rows if r.solver == solver]
        gaps = [r.gap for r in mine if r.feasible and r.gap is not None]
        out[solver] = {
            "instances": len(mine),
            "feasible": len(gaps),
            "mean_gap": round(statistics.fmean(gaps), 4) if gaps else None,
            "max_gap": round(max(gaps), 4) if gaps else None,
            "mean_seconds": round(statistics.fmean(r.seconds for r in mine), 2) if mine else None,
            "max_seconds": round(max(r.seconds for r in mine), 2) if mine else None,
        }
    return out


def markdown(rows: list[BenchRow], title: str, per_instance: bool = True) -> str:
    """Per-instance table (gap % and seconds per engine) followed by the per-engine means."""
    solvers = list(dict.fromkeys(r.solver for r in rows))
    names = list(dict.fromkeys(r.name for r in rows))
    cell = {(r.name, r.solver): r for r in rows}
    head = "| instance | nodes | reference | " + " | ".join(f"{s} gap % (s)" for s in solvers) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (3 + len(solvers))]
    for n in names:
        first = next(r for r in rows if r.name == n)
        cells = []
        for s in solvers:
            r = cell.get((n, s))
            if r is None:
                cells.append("")
            elif r.error:
                cells.append(f"error ({r.seconds:.1f})")
            elif not r.feasible:
                cells.append(f"infeasible ({r.seconds:.1f})")
            else:
                cells.append(f"{r.gap:.2f} ({r.seconds:.1f})")
        lines.append(f"| {n} | {first.nodes} | {first.reference:g} | " + " | ".join(cells) + " |")
    if not per_instance:
        lines = [f"### {title}"]
    lines += [
        "",
        "| engine | budget s | instances | feasible | mean gap % | max gap % | mean s | max s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, v in summarise(rows).items():
        budget = next(r.time_limit for r in rows if r.solver == s)
        lines.append(
            f"| {s} | {budget:g} | {v['instances']} | {v['feasible']} | {v['mean_gap']} | {v['max_gap']} | "
            f"{v['mean_seconds']} | {v['max_seconds']} |"
        )
    return "\n".join(lines) + "\n"


def load_rows(path: Path) -> list[BenchRow]:
    import json

    with open(path) as fh:
        return [BenchRow(**json.loads(line)) for line in fh if line.startswith("{")]
