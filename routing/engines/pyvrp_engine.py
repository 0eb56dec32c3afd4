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

# One driver with optional stops (a planner request) and a budget of PORTFOLIO_FROM_S or more runs as a
# portfolio (`_portfolio`): a search from seed `seed` for PORTFOLIO_SHARES[0] of the budget, a second from
# seed + PORTFOLIO_SEED_STEP for PORTFOLIO_SHARES[1], then searches of POLISH_SEGMENT_S each, warm-started
# from the best so far, for the rest. On the 150-stop day one 5 s search ends in a basin that depends on its
# seed (seed 1: 15572-16625 s of travel over four PyVRP seeds, seed 9: 14198-15101), the second search is
# the hedge, and a warm-started search (its late-acceptance threshold starts at the best's cost) finishes
# the descent the first left open: seed 5 reached 16600-16611 in 5 s, against 16743-17366 from one search
# (docs/bench/routing.md). Below PORTFOLIO_FROM_S the single search stays: it finds the first complete plan
# within 0.1-0.5 s. Several drivers and required-stop problems (Solomon, Dumas, TSPLIB) keep one search:
# the portfolio was measured on the one-driver day only.
PORTFOLIO_FROM_S = 3.0
PORTFOLIO_SHARES = (0.55, 0.25)
PORTFOLIO_SEED_STEP = 1000
POLISH_SEGMENT_S = 1.0


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
        portfolio of `_portfolio` instead of one search."""
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
            if portfolio:
                best, first, info = _portfolio(problem, data, time_limit, seed, patience, t0)
            else:
                remaining = max(0.05, time_limit - (time.perf_counter() - t0))
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
