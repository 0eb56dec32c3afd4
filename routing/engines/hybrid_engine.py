"""LKH-3 then PyVRP, for one driver's windowed day from the depot (the 150-stop day of
docs/bench/routing.md). Resolvable by name (a request may force `"engine": "hybrid"`), but no longer chosen
by `planner.choose_engine`: once PyVRP's time-warp penalty started at the cost of travel, PyVRP alone gave
better 5 s plans on 6 of 10 seeds, because the warm start from the LKH tour held it in a worse basin.

Why it was built: PyVRP alone, then with its default penalties, runs ~500 iterations/s on one 150-stop
route with windows and starts from an empty route with every stop optional, so on tight days its 5 s plan
still left stops out and was up to 15 % behind its 30 s plan. LKH-3 solves TSPTW well (Dumas: optimal on
every instance) but takes one hard window per stop and every stop required. So:

1. LKH-3 on the stops with at most one window (a TSPTW: all required, capacity dropped, which
   `supports` allows only when the whole day fits the van), for a quarter of the budget;
2. the stops with several windows inserted into that tour where they add least travel and keep every
   window (tightest first); those that fit nowhere are left to
3. PyVRP, warm-started from the tour (it keeps it as its best until it finds better), for the rest;
4. on long budgets (>= POLISH_FROM_S) PyVRP gets half of the rest and LKH-3 polishes the complete tour,
   each multi-window stop pinned to the window it is served in, starting from that tour.

Without a feasible LKH tour, PyVRP gets the whole budget, as before. Every candidate is re-costed by
routing.problem.evaluate and the best is kept.
"""

from __future__ import annotations

import time
from dataclasses import replace

from routing.engines import EngineResult, engine, get_engine
from routing.problem import Job, Problem, Vehicle, evaluate, evaluate_route

# Share of the budget for the first LKH run, and never less than this many seconds for it.
LKH_SHARE = 0.25
LKH_MIN_S = 0.8
# Step 4 (LKH polish) runs only on budgets of POLISH_FROM_S or more, and then gets what PyVRP leaves.
POLISH_FROM_S = 15.0
PYVRP_SHARE = 0.5  # of what is left after step 1, when step 4 runs
POLISH_MIN_S = 0.3


def _fits_one_van(problem: Problem) -> bool:
    v = problem.vehicles[0]
    return v.capacity is None or sum(j.demand for j in problem.jobs) <= v.capacity


def relaxed(problem: Problem, pins: dict[int, tuple[int, int]] | None = None) -> Problem:
    """The TSPTW LKH can model: one window per stop (a pinned one, else the span of a stop's windows),
    all required, no capacity, cost = travel time."""
    jobs: list[Job] = []
    for i, j in enumerate(problem.jobs):
        windows = j.windows
        if pins and i in pins:
            windows = (pins[i],)
        elif len(windows) > 1:
            windows = ((windows[0][0], windows[-1][1]),)
        jobs.append(replace(j, windows=windows, required=True, prize=0, demand=0))
    vehicles = [Vehicle(v.start, v.end, v.earliest_start, v.latest_end, None) for v in problem.vehicles]
    return Problem(problem.name, problem.duration, problem.duration, jobs, vehicles, meta=dict(problem.meta))


@engine("hybrid")
class HybridEngine:
    name = "hybrid"

    def supports(self, problem: Problem) -> str | None:
        if len(problem.vehicles) != 1 or problem.vehicles[0].start != problem.vehicles[0].end:
            return "one driver who returns to the depot"
        if problem.has_soft_windows:
            return "hard windows"
        if not _fits_one_van(problem):
            return "a day that fits the van (capacity not binding)"
        if len(problem.jobs) < 3:
            return "three stops or more"
        return None

    def solve(self, problem: Problem, time_limit: float, seed: int = 0) -> EngineResult:
        if (why := self.supports(problem)) is not None:
            raise ValueError(f"hybrid cannot model this problem: needs {why}")
        t0 = time.perf_counter()

        def left() -> float:
            return time_limit - (time.perf_counter() - t0)

        single = [i for i, j in enumerate(problem.jobs) if len(j.windows) <= 1]
        multi = [i for i, j in enumerate(problem.jobs) if len(j.windows) > 1]
        info: dict[str, object] = {}
        best: list[int] | None = None
        first: float | None = None
        lkh = get_engine("lkh")
        pyvrp = get_engine("pyvrp")
        # 1. LKH on the stops with at most one window, 2. the others inserted where they fit.
        if len(single) >= 3:
            sub = relaxed(Problem(problem.name, problem.distance, problem.duration,
                                  [problem.jobs[i] for i in single], problem.vehicles))
            res = lkh.solve(sub, max(LKH_MIN_S, LKH_SHARE * time_limit), seed)
            candidate = [single[i] for i in res.routes[0]]
            if len(candidate) == len(single) and evaluate(problem, [candidate]).routes[0].feasible:
                best, missing = insert_cheapest(problem, candidate, multi)
                info["lkh_missing"] = len(missing)
        if best is None:
            res = pyvrp.solve(problem, max(0.05, left()), seed)
            return EngineResult(res.routes, res.first_feasible_seconds, {"lkh": "no feasible tour", **res.info})
        if len(best) == len(problem.jobs):
            first = time.perf_counter() - t0
        # 3. PyVRP from that tour places what did not fit and improves the order.
        polish = time_limit >= POLISH_FROM_S
        if left() > 0.1:
            share = left() * (PYVRP_SHARE if polish else 1.0)
            res = pyvrp.solve(problem, share, seed, initial=[best])  # type: ignore[call-arg]
            if _rank(problem, res.routes) < _rank(problem, [best]):
                best = res.routes[0]
                info["pyvrp"] = "improved"
            if len(best) == len(problem.jobs) and first is None:
                first = time.perf_counter() - t0
        # 4. LKH again on the whole day, each multi-window stop pinned to the window it is served in,
        #    starting from the best tour.
        if polish and len(best) == len(problem.jobs) and left() > POLISH_MIN_S:
            stops = evaluate(problem, [best]).routes[0].stops
            pins = {s.job: next(w for w in problem.jobs[s.job].windows if s.start <= w[1])
                    for s in stops if len(problem.jobs[s.job].windows) > 1}
            res = lkh.solve(relaxed(problem, pins), left(), seed, initial=best)  # type: ignore[call-arg]
            if res.routes[0] and _rank(problem, res.routes) < _rank(problem, [best]):
                best = res.routes[0]
                info["lkh_polish"] = "improved"
        return EngineResult([best], first, info)


def _rank(problem: Problem, routes: list[list[int]]) -> tuple[bool, int]:
    ev = evaluate(problem, routes)
    return not ev.feasible, ev.cost


def insert_cheapest(problem: Problem, tour: list[int], jobs: list[int]) -> tuple[list[int], list[int]]:
    """Insert `jobs` one by one (tightest first) where it adds least travel and keeps the tour feasible;
    the tour, and the jobs that fit nowhere (PyVRP, warm-started from the tour, places them)."""
    tour = list(tour)
    missing: list[int] = []
    for j in sorted(jobs, key=lambda j: sum(b - a for a, b in problem.jobs[j].windows)):
        best: tuple[int, int] | None = None
        for pos in range(len(tour) + 1):
            ev = evaluate_route(problem, 0, tour[:pos] + [j] + tour[pos:])
            if ev.feasible and (best is None or ev.distance < best[0]):
                best = (ev.distance, pos)
        if best is None:
            missing.append(j)
            continue
        tour.insert(best[1], j)
    return tour, missing
