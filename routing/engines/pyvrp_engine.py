"""PyVRP (iterated local search) on the neutral problem: hard windows, several windows per stop as a
mutually exclusive client group, optional stops as prizes, per-driver start/end and shift."""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyvrp
from pyvrp import Client, ClientGroup, Depot, Location, PenaltyParams, ProblemData, RandomNumberGenerator, VehicleType
from pyvrp.constants import MAX_VALUE
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.IteratedLocalSearch import IteratedLocalSearch
from pyvrp.PenaltyManager import PenaltyManager
from pyvrp.search import LocalSearch, NeighbourhoodParams, PerturbationManager, compute_neighbours
from pyvrp.stop import MaxRuntime, MultipleCriteria, NoImprovement, StoppingCriterion

from routing.engines import EngineResult, engine
from routing.problem import UNREACHABLE, Problem

# Stop once this many iterations bring nothing: small instances converge in well under the budget and the
# caller gets its plan back early. Scaled with the size below.
NO_IMPROVEMENT_PER_JOB = 400
NO_IMPROVEMENT_MIN = 20_000
# Problems with optional (prize-carrying) stops, e.g. every planner request: PyVRP's default time-warp penalty
# starts at the midpoint of [0.1, 100000] per time unit and is updated every 500 solutions. Against travel
# costed at COST_SCALE per second, that makes the short time warp needed to fit in one more stop dearer than
# dropping it, and on the 150-stop day PyVRP then kept 149 of 150 stops for seconds. Starting the time-warp
# penalty at the price of one time unit of travel and updating it every 50 solutions found the complete day
# within a 0.5 s budget on all ten seeds at load 1-2.8, one needing 1 s at load 4 (docs/bench/routing.md).
PRIZE_PENALTY_PARAMS = PenaltyParams(solutions_between_updates=50)

# A single search stops this long before the budget: reading its result back and building the routes
# take time too, and the budget is the caller's wall time (the Solomon and Dumas runs ended at up to
# 10.07 and 10.26 s of a 10 s budget without it).
# Capped at FINISH_RESERVE_SHARE of the budget, so the short first-plan budgets (0.1-0.5 s) keep their search.
FINISH_RESERVE_S = 0.3
FINISH_RESERVE_SHARE = 0.03

# One driver with optional stops (a planner request) and a budget of PORTFOLIO_FROM_S or more runs as a
# portfolio (`_portfolio`): a search from seed `seed` for PORTFOLIO_SHARES[0] of the budget, a second from
# seed + PORTFOLIO_SEED_STEP for PORTFOLIO_SHARES[1], then searches of POLISH_SEGMENT_S each, warm-started
# from the best so far, for the rest. On the 150-stop day one 5 s search ends in a basin that depends on its
# seed (seed 1: 15572-16625 s of travel over four PyVRP seeds, seed 9: 14198-15101), the second search is
# the hedge, and a warm-started search (its late-acceptance threshold starts at the best's cost) finishes
# the descent the first left open: seed 5 reached 16600-16611 in 5 s, against 16743-17366 from one search
# (docs/bench/routing.md). Below PORTFOLIO_FROM_S the single search stays: it finds the first complete plan
# within 0.1-0.5 s. Several drivers and required-stop problems (Solomon, Dumas, TSPLIB) keep one search:
# the portfolio was measured on the one-driver day only. With two cores or more the two searches run side
# by side (PARALLEL_MIN_CPUS below), each for most of the budget instead of 55 % and 25 %.
PORTFOLIO_FROM_S = 3.0
PORTFOLIO_SHARES = (0.55, 0.25)
PORTFOLIO_SEED_STEP = 1000
POLISH_SEGMENT_S = 1.0
# With PARALLEL_MIN_CPUS or more cores for this process the portfolio runs its two searches side by side
# (`_parallel_portfolio`): the second in a child process (pyvrp_worker.py, about 0.2 s to start, taken out
# of its budget) and with WORKER_NEIGHBOURS granular neighbours instead of PyVRP's 50, both until
# PARALLEL_SEARCH_SHARE of the budget, then rounds of warm-started polishing from the best so far, one
# segment in each process per round. Side by side alone (both with 50 neighbours) was not enough: each
# search then gets about twice the iterations, which fixed the seed-4 day (14974 at 5 s three times of three
# against 15011) but left the seed-1 day in a 16089-16112 basin whenever the load held the second search
# under about 2,000 iterations. With 30 neighbours the second search reaches other basins (seed 1: 15522
# in 3.8 s, where 50 neighbours gave 16013 and the 30 s plan of the sequential portfolio was 15869); the
# 5 s plan was then within 1 % of the 30 s plan on 10 of 10 seeds in each of four runs at load 0.5-5.7,
# at the price of seed 7, whose second search had found a better basin with 50 neighbours (30 s plan
# 14039 against 13848; docs/bench/routing.md).
# A worker later than WORKER_GRACE_S past its deadline (or dead) is dropped and the portfolio goes on
# alone. Fewer cores than PARALLEL_MIN_CPUS (by the process's affinity) keep the sequential `_portfolio`.
PARALLEL_MIN_CPUS = 2
PARALLEL_SEARCH_SHARE = 0.8
WORKER_GRACE_S = 0.3
WORKER_MODULE = "routing.engines.pyvrp_worker"
# The worker's first search uses this many granular neighbours (PyVRP's default: 50); None: PyVRP's.
WORKER_NEIGHBOURS: int | None = 30


def _clip(value: int | None) -> int:
    return MAX_VALUE if value is None else min(int(value), MAX_VALUE)


def build(problem: Problem) -> tuple[ProblemData, list[int], list[list[int]]]:
    """ProblemData, client -> job map, and PyVRP vehicle type -> our vehicle indices."""
    n = problem.duration.shape[0]
    locations = [Location(0.0, 0.0) for _ in range(n)]
    depot_of: dict[int, int] = {}
    depots: list[Depot] = []
    for v in problem.vehicles:
        for loc in (v.start, v.end):
            if loc not in depot_of:
                depot_of[loc] = len(depots)
                depots.append(Depot(location=loc))

    dims = 1 if any(j.demand for j in problem.jobs) or any(v.capacity for v in problem.vehicles) else 0
    clients: list[Client] = []
    groups: list[ClientGroup] = []
    client_job: list[int] = []
    for ji, job in enumerate(problem.jobs):
        windows = job.windows or ((0, MAX_VALUE),)
        if job.late_penalty is not None:
            # PyVRP has no soft windows: relax the last end; the evaluator reports the lateness.
            windows = (*windows[:-1], (windows[-1][0], MAX_VALUE))
        delivery = [job.demand] if dims else []
        if len(windows) == 1:
            lo, hi = windows[0]
            clients.append(
                Client(
                    location=job.location,
                    delivery=delivery,
                    service_duration=job.service,
                    tw_early=int(lo),
                    tw_late=_clip(hi),
                    prize=job.prize,
                    required=job.required,
                )
            )
            client_job.append(ji)
            continue
        members = list(range(len(clients), len(clients) + len(windows)))
        for lo, hi in windows:
            clients.append(
                Client(
                    location=job.location,
                    delivery=delivery,
                    service_duration=job.service,
                    tw_early=int(lo),
                    tw_late=_clip(hi),
                    prize=job.prize,
                    required=False,
                    group=len(groups),
                )
            )
            client_job.append(ji)
        groups.append(ClientGroup(members, required=job.required))

    types: dict[tuple, list[int]] = {}
    for vi, v in enumerate(problem.vehicles):
        key = (v.start, v.end, v.earliest_start, v.latest_end, v.capacity)
        types.setdefault(key, []).append(vi)
    vehicle_types = []
    for (start, end, early, late, cap), members in types.items():
        vehicle_types.append(
            VehicleType(
                num_available=len(members),
                capacity=[_clip(cap)] if dims else [],
                start_depot=depot_of[start],
                end_depot=depot_of[end],
                tw_early=int(early),
                tw_late=_clip(late),
            )
        )
    dist = np.minimum(problem.distance, MAX_VALUE).astype(np.int64)
    dur = np.minimum(problem.duration, MAX_VALUE).astype(np.int64)
    dist[problem.distance >= UNREACHABLE] = MAX_VALUE
    dur[problem.duration >= UNREACHABLE] = MAX_VALUE
    data = ProblemData(locations, clients, depots, vehicle_types, [dist], [dur], groups)
    return data, client_job, list(types.values())


def _initial_solution(problem: Problem, data: ProblemData, client_job: list[int], type_vehicles: list[list[int]],
                      routes: list[list[int]]) -> pyvrp.Solution:
    """Our job sequences as a PyVRP Solution: each job's client copy is the one whose window holds the
    service start (a stop with several windows is a group of copies, one per window)."""
    from routing.problem import evaluate_route

    copies: dict[int, list[int]] = {}
    for c, j in enumerate(client_job):
        copies.setdefault(j, []).append(c)
    vehicle_type = {v: t for t, vs in enumerate(type_vehicles) for v in vs}
    clients = data.clients()
    out = []
    for v, route in enumerate(routes):
        if not route:
            continue
        visits = []
        for stop in evaluate_route(problem, v, route).stops:
            options = copies[stop.job]
            pick = options[0]
            for c in options:
                cl = clients[c]
                if cl.tw_early <= stop.start <= cl.tw_late:
                    pick = c
                    break
            visits.append(pyvrp.Activity(pyvrp.ActivityType.CLIENT, pick))
        out.append(pyvrp.Route(data, visits, vehicle_type[v]))
    return pyvrp.Solution(data, out)


@engine("pyvrp")
class PyVRPEngine:
    name = "pyvrp"

    def supports(self, problem: Problem) -> str | None:
        if problem.has_soft_windows:
            return "soft windows are relaxed, not penalised"
        return None

    def solve(self, problem: Problem, time_limit: float, seed: int = 0,
              initial: list[list[int]] | None = None, params: pyvrp.SolveParams | None = None) -> EngineResult:
        """`initial`: job sequences per vehicle to start the search from (a warm start, e.g. an LKH tour);
        PyVRP keeps it as its best until it finds better. `params`: PyVRP's solver parameters (default: its own,
        with PRIZE_PENALTY_PARAMS on problems with optional stops unless `params.penalty` is set).
        One vehicle, optional stops, no `initial` or `params`, and a budget of PORTFOLIO_FROM_S or more: the
        portfolio instead of one search (`_parallel_portfolio` on two cores or more, else `_portfolio`)."""
        t0 = time.perf_counter()
        data, client_job, type_vehicles = build(problem)
        start = _initial_solution(problem, data, client_job, type_vehicles, initial) if initial else None
        patience = max(NO_IMPROVEMENT_MIN, NO_IMPROVEMENT_PER_JOB * len(problem.jobs))
        optional = any(not j.required for j in problem.jobs)
        portfolio = (optional and len(problem.vehicles) == 1 and start is None and params is None
                     and time_limit >= PORTFOLIO_FROM_S)
        with warnings.catch_warnings():
            # An over-full request has no feasible answer with every stop; the planner handles an infeasible
            # best-so-far, so PyVRP's "penalty at its bound" warning is noise here.
            warnings.simplefilter("ignore", PenaltyBoundWarning)
            if portfolio and _cpus() >= PARALLEL_MIN_CPUS:
                best, first, info = _parallel_portfolio(problem, data, time_limit, seed, patience, t0)
            elif portfolio:
                best, first, info = _portfolio(problem, data, time_limit, seed, patience, t0)
            else:
                reserve = min(FINISH_RESERVE_S, FINISH_RESERVE_SHARE * time_limit)
                remaining = max(0.05, time_limit - (time.perf_counter() - t0) - reserve)
                stop = MultipleCriteria([MaxRuntime(remaining), NoImprovement(patience)])
                t_search = time.perf_counter()
                res = _search(problem, data, stop, seed, start, params or pyvrp.SolveParams())
                best, first = res.best, _first_feasible(res, t_search - t0)
                info = {"iterations": res.num_iterations}
        routes: list[list[int]] = [[] for _ in problem.vehicles]
        free = {t: list(vs) for t, vs in enumerate(type_vehicles)}
        for route in best.routes():
            v = free[route.vehicle_type()].pop(0)
            routes[v] = [client_job[a.idx] for a in route.schedule() if a.is_client()]
        return EngineResult(routes, first, {**info, "feasible": best.is_feasible()})


def _first_feasible(res: pyvrp.Result, offset: float) -> float | None:
    """Seconds from the call to the search's first feasible best, `offset` being when the search began."""
    elapsed = 0.0
    for rt, datum in zip(res.stats.runtimes, res.stats.data, strict=False):
        elapsed += rt
        if datum.best_feas:
            return offset + elapsed
    return None


def _better(problem: Problem, data: ProblemData, a: pyvrp.Solution, b: pyvrp.Solution | None) -> bool:
    """Whether `a` beats `b`: feasible first, then the objective (travel plus the prizes of the stops left
    out; between two infeasible ones, with time warp and excess load priced at the cost of travel)."""
    if b is None:
        return True
    if a.is_feasible() != b.is_feasible():
        return a.is_feasible()
    unit = _time_unit_cost(problem)
    evaluator = pyvrp.CostEvaluator([unit] * data.num_load_dimensions, unit, unit)
    return evaluator.penalised_cost(a) < evaluator.penalised_cost(b)


def _portfolio(problem: Problem, data: ProblemData, time_limit: float, seed: int, patience: int,
               t0: float) -> tuple[pyvrp.Solution, float | None, dict[str, object]]:
    """Two searches from different seeds (PORTFOLIO_SHARES of the budget), then searches warm-started from
    the best so far, POLISH_SEGMENT_S each, until the budget is spent (PORTFOLIO_FROM_S: why)."""

    def left() -> float:
        return time_limit - (time.perf_counter() - t0)

    best: pyvrp.Solution | None = None
    first: float | None = None
    iterations: list[int] = []
    for k, share in enumerate(PORTFOLIO_SHARES):
        budget = max(0.05, min(share * time_limit, left()))
        t_search = time.perf_counter()
        stop = MultipleCriteria([MaxRuntime(budget), NoImprovement(patience)])
        res = _search(problem, data, stop, seed + k * PORTFOLIO_SEED_STEP, None, pyvrp.SolveParams())
        iterations.append(res.num_iterations)
        if first is None:
            first = _first_feasible(res, t_search - t0)
        if _better(problem, data, res.best, best):
            best = res.best
    assert best is not None
    k = 0
    while left() > 0.05:
        k += 1
        budget = min(POLISH_SEGMENT_S, left())
        stop = MultipleCriteria([MaxRuntime(budget), NoImprovement(patience)])
        res = _search(problem, data, stop, seed + 7 * k, best, pyvrp.SolveParams())
        iterations.append(res.num_iterations)
        if first is None and res.best.is_feasible():
            first = time.perf_counter() - t0
        if _better(problem, data, res.best, best):
            best = res.best
        elif res.runtime < 0.9 * budget:
            break  # converged: the search stopped on NoImprovement without finding better
    return best, first, {"iterations": sum(iterations), "searches": iterations}


def solve_params(num_neighbours: int | None = None) -> pyvrp.SolveParams:
    """PyVRP's default parameters, with `num_neighbours` granular neighbours per client if given."""
    if num_neighbours is None:
        return pyvrp.SolveParams()
    return pyvrp.SolveParams(neighbourhood=NeighbourhoodParams(num_neighbours=num_neighbours))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def to_visits(solution: pyvrp.Solution) -> list[tuple[list[int], int]]:
    """A solution as (client indices, vehicle type) per route, for the pipe to and from pyvrp_worker."""
    return [([a.idx for a in r.schedule() if a.is_client()], r.vehicle_type()) for r in solution.routes()]


def from_visits(data: ProblemData, visits: list[tuple[list[int], int]]) -> pyvrp.Solution:
    return pyvrp.Solution(data, [pyvrp.Route(data, clients, vt) for clients, vt in visits])


class _Worker:
    """A pyvrp_worker child process: searches submitted one at a time, results read back with a timeout.
    Any failure (start-up, a crash, a late answer) marks it dead; the caller then goes on without it."""

    def __init__(self, problem: Problem, data: ProblemData, patience: int) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.alive = True
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        # The problem is larger than a pipe's buffer: write it from a thread, so that this process searches
        # while the child starts up.
        self._writer: threading.Thread | None = None
        self._pending = [pickle.dumps((problem, data, patience))]

    def submit(self, seed: int, deadline: float, initial: pyvrp.Solution | None,
               num_neighbours: int | None = None) -> None:
        """A search from `seed` (warm-started from `initial` if given) until `deadline` (time.monotonic), with
        `num_neighbours` granular neighbours (None: PyVRP's default)."""
        if not self.alive:
            return
        job = (seed, deadline, None if initial is None else to_visits(initial), num_neighbours)
        blobs = [*self._pending, pickle.dumps(job)]
        self._pending = []
        if self._writer is not None:
            self._writer.join()
        self._writer = threading.Thread(target=self._write, args=(blobs,), daemon=True)
        self._writer.start()

    def _write(self, blobs: list[bytes]) -> None:
        try:
            assert self.proc.stdin is not None
            for blob in blobs:
                self.proc.stdin.write(blob)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.alive = False

    def result(self, data: ProblemData, timeout: float) -> tuple[pyvrp.Solution, int, float] | None:
        """The submitted search's (best, iterations, runtime), or None if it is not there within `timeout`."""
        if not self.alive:
            return None
        assert self.proc.stdout is not None
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
            if not ready:
                raise TimeoutError
            visits, iterations, runtime = pickle.load(self.proc.stdout)
            return from_visits(data, visits), iterations, runtime
        except Exception:  # noqa: BLE001 - late, crashed or garbled: go on without the worker
            self.close()
            return None

    def close(self) -> None:
        self.alive = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


def _parallel_portfolio(problem: Problem, data: ProblemData, time_limit: float, seed: int, patience: int,
                        t0: float) -> tuple[pyvrp.Solution, float | None, dict[str, object]]:
    """`_portfolio` on two cores: the search from `seed` here and the one from seed + PORTFOLIO_SEED_STEP in
    a pyvrp_worker process, side by side until PARALLEL_SEARCH_SHARE of the budget; then rounds of two
    warm-started searches of POLISH_SEGMENT_S from the best so far, one here and one in the worker, until
    the budget is spent or both stop on NoImprovement without finding better."""

    def left() -> float:
        return time_limit - (time.perf_counter() - t0)

    worker = _Worker(problem, data, patience)
    try:
        budget = max(0.05, PARALLEL_SEARCH_SHARE * time_limit - (time.perf_counter() - t0))
        worker.submit(seed + PORTFOLIO_SEED_STEP, time.monotonic() + budget, None, WORKER_NEIGHBOURS)
        t_search = time.perf_counter()
        stop = MultipleCriteria([MaxRuntime(budget), NoImprovement(patience)])
        res = _search(problem, data, stop, seed, None, pyvrp.SolveParams())
        best, first = res.best, _first_feasible(res, t_search - t0)
        iterations, worker_iterations = [res.num_iterations], []
        other = worker.result(data, budget - (time.perf_counter() - t_search) + WORKER_GRACE_S)
        if other is not None:
            worker_iterations.append(other[1])
            if _better(problem, data, other[0], best):
                best = other[0]
                if first is None and best.is_feasible():
                    first = time.perf_counter() - t0
        k = 0
        while left() > 0.05:
            k += 1
            budget = min(POLISH_SEGMENT_S, left())
            worker.submit(seed + 7 * k + 3, time.monotonic() + budget, best)
            t_seg = time.perf_counter()
            stop = MultipleCriteria([MaxRuntime(budget), NoImprovement(patience)])
            res = _search(problem, data, stop, seed + 7 * k, best, pyvrp.SolveParams())
            iterations.append(res.num_iterations)
            other = worker.result(data, budget - (time.perf_counter() - t_seg) + WORKER_GRACE_S)
            found = [res.best] if other is None else [res.best, other[0]]
            if other is not None:
                worker_iterations.append(other[1])
            improved = False
            for sol in found:
                if _better(problem, data, sol, best):
                    best, improved = sol, True
            if first is None and best.is_feasible():
                first = time.perf_counter() - t0
            converged = res.runtime < 0.9 * budget and (other is None or other[2] < 0.9 * budget)
            if not improved and converged:
                break  # both stopped on NoImprovement without finding better
    finally:
        worker.close()
    return best, first, {"iterations": sum(iterations) + sum(worker_iterations), "searches": iterations,
                         "worker_searches": worker_iterations, "parallel": True}


def _time_unit_cost(problem: Problem) -> float:
    """The objective cost of one time unit of travel (the planner costs travel seconds x COST_SCALE)."""
    finite = (problem.duration > 0) & (problem.duration < UNREACHABLE) & (problem.distance < UNREACHABLE)
    if not finite.any():
        return 1.0
    return max(1.0, float(np.median(problem.distance[finite] / problem.duration[finite])))


def _search(problem: Problem, data: ProblemData, stop: StoppingCriterion, seed: int,
            initial: pyvrp.Solution | None, params: pyvrp.SolveParams) -> pyvrp.Result:
    """pyvrp.solve (0.14.1), except that on problems with optional stops the time-warp penalty starts at the
    cost of one time unit of travel and adapts every 50 solutions (PRIZE_PENALTY_PARAMS: why there).
    Problems with every stop required (the Solomon and Dumas benchmarks) keep PyVRP's defaults."""
    optional = any(not j.required for j in problem.jobs)
    rng = RandomNumberGenerator(seed=seed)
    neighbours = compute_neighbours(data, params.neighbourhood)
    ls = LocalSearch(data, rng, neighbours, PerturbationManager(params.perturbation))
    for op in params.operators:
        if op.supports(data):
            ls.add_operator(op(data))
    penalty_params = PRIZE_PENALTY_PARAMS if optional and params.penalty == PenaltyParams() else params.penalty
    load, tw, dist = penalty_params.midpoint_penalties(data)
    if optional:
        tw = _time_unit_cost(problem)
    pm = PenaltyManager((load, tw, dist), penalty_params)
    if initial is None:
        initial = ls(pyvrp.Solution.make_random(data, rng), pm.max_cost_evaluator(), exhaustive=True)
    return IteratedLocalSearch(data, pm, ls, initial, params.ils).run(stop, True, False)
