"""PyVRP (iterated local search) on the neutral problem: hard windows, several windows per stop as a
mutually exclusive client group, optional stops as prizes, per-driver start/end and shift."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyvrp
from pyvrp import Client, ClientGroup, Depot, Location, PenaltyParams, ProblemData, RandomNumberGenerator, VehicleType
from pyvrp.constants import MAX_VALUE
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.IteratedLocalSearch import IteratedLocalSearch
from pyvrp.PenaltyManager import PenaltyManager
from pyvrp.search import LocalSearch, PerturbationManager, compute_neighbours
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
        with PRIZE_PENALTY_PARAMS on problems with optional stops unless `params.penalty` is set)."""
        t0 = time.perf_counter()
        data, client_job, type_vehicles = build(problem)
        start = _initial_solution(problem, data, client_job, type_vehicles, initial) if initial else None
        patience = max(NO_IMPROVEMENT_MIN, NO_IMPROVEMENT_PER_JOB * len(problem.jobs))
        remaining = max(0.05, time_limit - (time.perf_counter() - t0))
        stop = MultipleCriteria([MaxRuntime(remaining), NoImprovement(patience)])
        t_search = time.perf_counter()
        with warnings.catch_warnings():
            # An over-full request has no feasible answer with every stop; the planner handles an infeasible
            # best-so-far, so PyVRP's "penalty at its bound" warning is noise here.
            warnings.simplefilter("ignore", PenaltyBoundWarning)
            res = _search(problem, data, stop, seed, start, params or pyvrp.SolveParams())
        first = None
        elapsed = 0.0
        for rt, datum in zip(res.stats.runtimes, res.stats.data, strict=False):
            elapsed += rt
            if datum.best_feas:
                first = (t_search - t0) + elapsed
                break
        routes: list[list[int]] = [[] for _ in problem.vehicles]
        free = {t: list(vs) for t, vs in enumerate(type_vehicles)}
        for route in res.best.routes():
            v = free[route.vehicle_type()].pop(0)
            routes[v] = [client_job[a.idx] for a in route.schedule() if a.is_client()]
        return EngineResult(routes, first, {"iterations": res.num_iterations, "feasible": res.is_feasible()})


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
