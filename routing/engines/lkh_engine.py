"""LKH-3 (Helsgaun) through elkai: TSP, TSPTW and CVRPTW problem files in, one giant tour out.

elkai's public helpers only cover plain TSP; its `_elkai.solve_problem` runs the full LKH-3.0.8 but its
in-memory reader crashes on TIME_WINDOW/DEPOT sections (fscanint on a NULL stream), so the problem goes
through a temporary file, which LKH reads with its own file parser, in a child process (lkh_worker.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

import numpy as np

from routing.engines import EngineResult, engine
from routing.problem import UNREACHABLE, Problem, evaluate

BIG = 10_000_000  # LKH wants finite integer costs; unreachable arcs get this
# Wall-clock guard: a run still going this long after its budget is killed (no tour).
WALL_GRACE_S = 2.0
# The least share of a core assumed when scaling LKH's CPU-time limit to a wall-clock budget.
MIN_CPU_SHARE = 0.5


def cpu_share() -> float:
    """The share of one core a new single-threaded process can expect now: cores / 1-minute load average,
    between MIN_CPU_SHARE and 1. Crude on purpose: the load average counts niced and waiting processes
    too, so a lower floor left LKH idle for most of its wall budget on this shared machine.
    Env PARCEL_LKH_CPU_SHARE overrides it (e.g. 1 to give LKH its whole budget as CPU time, as before)."""
    forced = os.environ.get("PARCEL_LKH_CPU_SHARE")
    if forced:
        return min(1.0, max(0.01, float(forced)))
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    cores = os.cpu_count() or 1
    return max(MIN_CPU_SHARE, min(1.0, cores / max(cores, load)))


def _matrix_lines(m: np.ndarray) -> str:
    return "\n".join(" ".join(map(str, row)) for row in m.tolist())


@engine("lkh")
class LKHEngine:
    name = "lkh"

    def supports(self, problem: Problem) -> str | None:
        starts = {(v.start, v.end, v.earliest_start, v.latest_end, v.capacity) for v in problem.vehicles}
        if len(starts) != 1 or problem.vehicles[0].start != problem.vehicles[0].end:
            return "one depot, identical vehicles that return to it"
        if problem.has_soft_windows or problem.has_multi_windows:
            return "one hard window per stop"
        if not all(j.required for j in problem.jobs):
            return "every stop required"
        if problem.kind != "tsp" and not np.array_equal(problem.distance, problem.duration):
            return "windowed problems need cost == travel time"
        return None

    def solve(self, problem: Problem, time_limit: float, seed: int = 0,
              initial: list[int] | None = None) -> EngineResult:
        """`initial`: a tour (job indices, single vehicle) LKH starts every run from (INITIAL_TOUR_FILE)."""
        if (why := self.supports(problem)) is not None:
            raise ValueError(f"lkh cannot model this problem: needs {why}")
        if len(problem.jobs) < 3:
            # LKH needs three nodes or more; two stops have two orders.
            orders = [list(o) for o in permutations(range(len(problem.jobs)))]
            best = min(orders, key=lambda o: (not evaluate(problem, [o]).feasible, evaluate(problem, [o]).cost))
            return EngineResult([best] + [[] for _ in problem.vehicles[1:]], 0.0, {"kind": "enumerated"})
        t0 = time.perf_counter()
        veh = problem.vehicles[0]
        nodes = [veh.start] + [j.location for j in problem.jobs]
        n = len(nodes)
        idx = np.asarray(nodes)
        kind = problem.kind
        base = problem.distance if kind == "tsp" else problem.duration
        m = base[np.ix_(idx, idx)].astype(np.int64)
        m[m >= UNREACHABLE] = BIG
        np.fill_diagonal(m, 0)
        service = np.array([0] + [j.service for j in problem.jobs], dtype=np.int64)
        lines = [f"NAME : {problem.name}", f"DIMENSION : {n}", "EDGE_WEIGHT_TYPE : EXPLICIT"]
        params = [f"SEED = {seed + 1}", "TRACE_LEVEL = 0"]
        if kind == "tsp":
            sym = np.array_equal(m, m.T)
            lines.insert(1, f"TYPE : {'TSP' if sym else 'ATSP'}")
            lines += ["EDGE_WEIGHT_FORMAT : FULL_MATRIX", "EDGE_WEIGHT_SECTION", _matrix_lines(m)]
            params += ["RUNS = 10"]
        else:
            lo = [veh.earliest_start] + [j.windows[0][0] if j.windows else 0 for j in problem.jobs]
            horizon = problem.horizon
            hi = [veh.latest_end if veh.latest_end is not None else horizon]
            hi += [j.windows[0][1] if j.windows else horizon for j in problem.jobs]
            tw = "\n".join(f"{i + 1} {a} {b}" for i, (a, b) in enumerate(zip(lo, hi, strict=True)))
            if kind == "tsptw":
                # Fold service into the outgoing arcs: arrival == service start, as in the windows.
                m = m + service[:, None]
                np.fill_diagonal(m, 0)
                lines.insert(1, "TYPE : TSPTW")
                lines += ["EDGE_WEIGHT_FORMAT : FULL_MATRIX", "EDGE_WEIGHT_SECTION", _matrix_lines(m)]
            else:
                cap = veh.capacity if veh.capacity is not None else sum(j.demand for j in problem.jobs) + 1
                lines.insert(1, "TYPE : CVRPTW")
                lines += [f"VEHICLES : {len(problem.vehicles)}", f"CAPACITY : {cap}"]
                lines += ["EDGE_WEIGHT_FORMAT : FULL_MATRIX", "EDGE_WEIGHT_SECTION", _matrix_lines(m)]
                demand = [0] + [j.demand for j in problem.jobs]
                lines += ["DEMAND_SECTION", "\n".join(f"{i + 1} {d}" for i, d in enumerate(demand))]
                lines += ["SERVICE_TIME_SECTION", "\n".join(f"{i + 1} {s}" for i, s in enumerate(service))]
            lines += ["TIME_WINDOW_SECTION", tw, "DEPOT_SECTION", "1", "-1"]
            # Helsgaun's settings for the windowed problems (LKH-3 TSPTW/CVRPTW runs): SPECIAL. A TSPTW run
            # is short, so ten of them; a CVRPTW run is long, so as many as the budget allows.
            runs = 10 if kind == "tsptw" else 1000
            params += ["SPECIAL", f"RUNS = {runs}", "MAX_TRIALS = 10000", "MTSP_MIN_SIZE = 0"]
        lines.append("EOF")
        with tempfile.TemporaryDirectory(prefix="lkh-") as tmp:
            path = Path(tmp) / "problem.lkh"
            path.write_text("\n".join(lines) + "\n")
            # LKH's limits count the CPU time of its own process (clock()); on a loaded machine the wall
            # time is longer. The budget is wall time, so the CPU limit is scaled by the share of a core
            # this process can expect (cpu_share), and a wall-clock guard below stops a run that still
            # overshoots.
            wall_left = max(0.1, time_limit - (time.perf_counter() - t0) - 0.15)
            left = max(0.1, wall_left * cpu_share())
            params += [f"PROBLEM_FILE = {path}", f"TOTAL_TIME_LIMIT = {left:.2f}", f"TIME_LIMIT = {left:.2f}"]
            if initial is not None and len(initial) == n - 1 and len(problem.vehicles) == 1:
                init = Path(tmp) / "initial.tour"
                nodes_1 = [1] + [j + 2 for j in initial]
                init.write_text("TOUR_SECTION\n" + "\n".join(map(str, nodes_1)) + "\n-1\nEOF\n")
                params += [f"INITIAL_TOUR_FILE = {init}"]
            par = Path(tmp) / "params.par"
            par.write_text("\n".join(params) + "\n")
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "routing.engines.lkh_worker", str(par)],
                    capture_output=True,
                    text=True,
                    timeout=wall_left + WALL_GRACE_S,
                )
            except subprocess.TimeoutExpired:
                # subprocess.run kills the child on timeout: no tour within the wall-clock budget.
                return EngineResult([[] for _ in problem.vehicles], None, {"kind": kind, "tour": "wall-clock guard"})
            if proc.returncode != 0:
                raise RuntimeError(f"LKH exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
            # LKH may print its own lines; the tour is the last one.
            tour = [int(x) - 1 for x in json.loads(proc.stdout.strip().splitlines()[-1])]
        if not tour:
            # A windowed run stopped by its time limit before any tour without penalty: no answer.
            return EngineResult([[] for _ in problem.vehicles], None, {"kind": kind, "tour": "none in time"})
        routes = self._split(tour, n, len(problem.vehicles))
        # A symmetric tour comes back in either direction; windows care which.
        options = [routes, [r[::-1] for r in routes]]
        scored = [(not ev.feasible, ev.cost, i) for i, ev in enumerate(evaluate(problem, rs) for rs in options)]
        return EngineResult(options[min(scored)[2]], None, {"kind": kind})

    @staticmethod
    def _split(tour: list[int], n: int, vehicles: int) -> list[list[int]]:
        # Node 0 is the depot; CVRPTW adds depot copies numbered n.. (one per extra vehicle).
        k = tour.index(0)
        tour = tour[k:] + tour[:k]
        routes: list[list[int]] = []
        cur: list[int] = []
        for node in tour[1:]:
            if node == 0 or node >= n:
                routes.append(cur)
                cur = []
            else:
                cur.append(node - 1)
        routes.append(cur)
        routes = [r for r in routes if r]
        return routes + [[] for _ in range(vehicles - len(routes))]
