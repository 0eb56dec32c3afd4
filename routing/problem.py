"""The solver-neutral routing problem and its independent evaluator.

Integer matrices, jobs and vehicles flow in; engines (routing/engines/) read this and nothing else, and
every route an engine returns is re-timed and re-costed here, so no caller ever trusts a solver's own
bookkeeping or sees a solver type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# Matrix entries at or above this mean "no road": a plugged road-network matrix marks unreachable pairs
# with it, and every engine treats it as forbidden.
UNREACHABLE = 1 << 40

ProblemKind = Literal["tsp", "tsptw", "vrptw"]


@dataclass(frozen=True)
class Job:
    """One stop: service starts inside one of `windows` (start-of-service bounds, integer time units)."""

    location: int
    service: int = 0
    windows: tuple[tuple[int, int], ...] = ()  # empty: any time
    demand: int = 0
    # None: the windows are hard. Otherwise the last window's end is soft, and each time unit past it costs
    # this much in the objective.
    late_penalty: int | None = None
    required: bool = True
    prize: int = 0  # objective cost of leaving an optional job out


@dataclass(frozen=True)
class Vehicle:
    start: int  # location index
    end: int
    earliest_start: int = 0
    latest_end: int | None = None  # back at `end` by then; None: no limit
    capacity: int | None = None


@dataclass
class Problem:
    name: str
    distance: np.ndarray  # int64 n x n, the objective per arc
    duration: np.ndarray  # int64 n x n, travel time per arc
    jobs: list[Job]
    vehicles: list[Vehicle]
    # Benchmarks compare against references with a scale (Solomon arcs are tenths): cost / scale is reported.
    cost_scale: int = 1
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def kind(self) -> ProblemKind:
        windowed = any(j.windows for j in self.jobs)
        capacitated = any(v.capacity is not None for v in self.vehicles) and any(j.demand for j in self.jobs)
        if len(self.vehicles) == 1 and not capacitated:
            # A shift end alone does not make a TSPTW: the planner checks the tour against it afterwards.
            return "tsptw" if windowed else "tsp"
        return "vrptw"

    @property
    def has_soft_windows(self) -> bool:
        return any(j.late_penalty is not None for j in self.jobs)

    @property
    def has_multi_windows(self) -> bool:
        return any(len(j.windows) > 1 for j in self.jobs)

    @property
    def horizon(self) -> int:
        ends = [v.latest_end for v in self.vehicles if v.latest_end is not None]
        ends += [w[1] for j in self.jobs for w in j.windows]
        finite = self.duration[self.duration < UNREACHABLE]
        bound = int(max(ends)) if ends else 0
        slack = int(finite.max(initial=0)) * (len(self.jobs) + 2) + sum(j.service for j in self.jobs)
        return max(bound, min(v.earliest_start for v in self.vehicles) + slack)


@dataclass
class Stop:
    job: int
    arrival: int
    start: int  # service start (arrival, or the window opening after waiting)
    late: int  # time units past the last window's end (soft windows only)


@dataclass
class RouteEval:
    vehicle: int
    stops: list[Stop]
    departure: int
    end_time: int
    load: int
    distance: int
    duration_violation: int  # time past the vehicle's latest_end
    window_violation: int  # summed lateness on hard windows
    load_violation: int
    late_cost: int

    @property
    def feasible(self) -> bool:
        return not (self.duration_violation or self.window_violation or self.load_violation)


@dataclass
class Evaluation:
    routes: list[RouteEval]
    missing_required: list[int]
    dropped_prize: int
    duplicated: list[int]

    @property
    def distance(self) -> int:
        return sum(r.distance for r in self.routes)

    @property
    def cost(self) -> int:
        return self.distance + sum(r.late_cost for r in self.routes) + self.dropped_prize

    @property
    def feasible(self) -> bool:
        return all(r.feasible for r in self.routes) and not self.missing_required and not self.duplicated


def service_start(job: Job, arrival: int) -> tuple[int, int, bool]:
    """(start, lateness, ok): wait for the first window still open; past the last one is late (soft) or
    infeasible (hard)."""
    if not job.windows:
        return arrival, 0, True
    for lo, hi in job.windows:
        if arrival <= hi:
            return max(arrival, lo), 0, True
    late = arrival - job.windows[-1][1]
    return arrival, late, job.late_penalty is not None


def evaluate_route(problem: Problem, vehicle: int, jobs: list[int], departure: int | None = None) -> RouteEval:
    veh = problem.vehicles[vehicle]
    t = veh.earliest_start if departure is None else departure
    dep = t
    here = veh.start
    stops: list[Stop] = []
    dist = load = window_violation = late_cost = 0
    for j in jobs:
        job = problem.jobs[j]
        t += int(problem.duration[here, job.location])
        dist += int(problem.distance[here, job.location])
        start, late, ok = service_start(job, t)
        if not ok:
            window_violation += late
        elif late:
            late_cost += late * int(job.late_penalty or 0)
        stops.append(Stop(job=j, arrival=t, start=start, late=late))
        t = start + job.service
        load += job.demand
        here = job.location
    t += int(problem.duration[here, veh.end])
    dist += int(problem.distance[here, veh.end])
    over = max(0, t - veh.latest_end) if veh.latest_end is not None else 0
    load_violation = max(0, load - veh.capacity) if veh.capacity is not None else 0
    return RouteEval(vehicle, stops, dep, t, load, dist, over, window_violation, load_violation, late_cost)


def evaluate(problem: Problem, routes: list[list[int]]) -> Evaluation:
    """Re-time and re-cost routes[v] (job indices, vehicle v), independent of any solver."""
    seen: dict[int, int] = {}
    dup: list[int] = []
    evals = []
    for v, r in enumerate(routes):
        for j in r:
            if j in seen:
                dup.append(j)
            seen[j] = v
        if r:
            evals.append(evaluate_route(problem, v, r))
    missing = [j for j, job in enumerate(problem.jobs) if job.required and j not in seen]
    prize = sum(job.prize for j, job in enumerate(problem.jobs) if not job.required and j not in seen)
    return Evaluation(evals, missing, prize, dup)
