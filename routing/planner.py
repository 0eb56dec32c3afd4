"""The planner: a PlanRequest (and optionally a travel matrix) in, a Plan out.

Steps: validate (pydantic, before this), lay out points and a travel matrix, fix each driver's visited
stops and start the rest from the current position/time, screen out stops no driver could ever serve
(with the reason), hand the rest as optional prize-carrying stops to the engine chosen for the problem
kind, re-time its routes independently, and explain every stop still left out.

Points, and the order a FixedMatrix must follow: the depot, the stops in request order, then for each
driver in order its `start`, `end` and `position.location` where given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from routing.engines import get_engine
from routing.matrix import HaversineMatrix, TravelMatrix
from routing.models import (
    DriverPlan,
    GeoPoint,
    Plan,
    PlannedStop,
    PlanRequest,
    StopIn,
    UnservedReason,
    UnservedStop,
)
from routing.problem import UNREACHABLE, Job, Problem, Vehicle, evaluate, evaluate_route, service_start

# Objective units: travel seconds x COST_SCALE, so that a lateness penalty given per minute stays an
# integer per second (penalty_per_minute * COST_SCALE / 60).
COST_SCALE = 600


@dataclass
class _Driver:
    index: int
    start_point: int
    end_point: int
    start_s: int  # seconds from the plan's time origin
    end_s: int
    capacity: int | None
    visited: list[int]  # stop indices, fixed
    visited_times: list[tuple[int, int, int]]  # (arrival, service start, departure) per visited stop


def choose_engine(problem: Problem, time_limit_s: float = 5.0) -> str:
    """The engine for a problem kind, from the measurements in docs/bench/routing.md.

    Pure tours: LKH-3 (optimal on every TSPLIB instance up to 1,000 nodes within 10 s; PyVRP 1-2% off).
    Soft windows: OR-Tools, the only engine here that prices lateness instead of relaxing it.
    Everything else (windows, several drivers, capacities, optional stops, several windows per stop):
    PyVRP, best on Solomon VRPTW and feasible on every Dumas TSPTW instance. That includes one driver's
    windowed day: with its time-warp penalty started at the cost of travel (engines/pyvrp_engine.py) PyVRP
    alone serves the whole 150-stop day within 0.1-0.5 s (1 s under heavy load), and its 5 s plan beat the
    LKH-3-then-PyVRP hybrid's on 6 of 10 seeds, where the warm start from the LKH tour held PyVRP in a
    worse basin. From 3 s the PyVRP wrapper runs one driver's day as a portfolio (two searches from
    different seeds, then warm-started polishing of the better); on two cores the two searches run side
    by side, the second with 30 neighbours: its 5 s plan was within 1 % of its 30 s plan on 40 of 40
    seed runs (docs/bench/routing.md).
    `time_limit_s` is kept for callers and for engines whose choice may depend on the budget.
    """
    if problem.kind == "tsp" and get_engine("lkh").supports(problem) is None:
        return "lkh"
    if problem.has_soft_windows:
        return "ortools"
    return "pyvrp"


def _seconds(t: datetime, origin: datetime) -> int:
    return int(round((t - origin).total_seconds()))


def plan(request: PlanRequest, matrix: TravelMatrix | None = None) -> Plan:
    t_start = time.perf_counter()
    origin = min([request.shift.start] + [d.shift_start for d in request.drivers if d.shift_start])
    day_end = max([request.shift.end] + [d.shift_end for d in request.drivers if d.shift_end])
    stops = request.stops
    stop_index = {s.stop_id: i for i, s in enumerate(stops)}

    points: list[GeoPoint] = [request.depot] + [s.location for s in stops]
    extra: list[dict[str, int]] = []
    for d in request.drivers:
        mine: dict[str, int] = {}
        for key, pt in (("start", d.start), ("end", d.end), ("position", d.position.location if d.position else None)):
            if pt is not None:
                mine[key] = len(points)
                points.append(pt)
        extra.append(mine)
    secs = (matrix or HaversineMatrix(request.speed)).seconds(points, origin, day_end)
    secs = np.asarray(secs, dtype=float)
    if secs.shape != (len(points), len(points)):
        raise ValueError(f"travel matrix is {secs.shape}, expected {(len(points), len(points))}")
    bad = ~np.isfinite(secs) | (secs < 0)
    duration = np.where(bad, UNREACHABLE, np.rint(np.where(bad, 0, secs))).astype(np.int64)
    np.fill_diagonal(duration, 0)

    def stop_point(i: int) -> int:
        return 1 + i

    # Drivers: fixed visited prefix, then the start point and time of the part still to plan.
    drivers: list[_Driver] = []
    for k, d in enumerate(request.drivers):
        s0 = _seconds(d.shift_start or request.shift.start, origin)
        s1 = _seconds(d.shift_end or request.shift.end, origin)
        start_pt = extra[k].get("start", 0)
        end_pt = extra[k].get("end", 0)
        here, t = start_pt, s0
        visited = [stop_index[v] for v in d.visited]
        times = []
        for i in visited:
            st = stops[i]
            arr = t + int(duration[here, stop_point(i)])
            begin, _, _ = service_start(_job_windows(st, origin), arr)
            t = begin + st.service_s
            times.append((arr, begin, t))
            here = stop_point(i)
        if d.position is not None:
            here, t = extra[k]["position"], max(t, _seconds(d.position.at, origin))
        cap = None if d.capacity is None else d.capacity - sum(stops[i].demand for i in visited)
        drivers.append(_Driver(k, here, end_pt, t, s1, cap, visited, times))

    fixed = {i for d in drivers for i in d.visited}
    todo = [i for i in range(len(stops)) if i not in fixed]

    # Leaving a stop out must cost more than any detour that serves it (at most the longest leg there and
    # back plus the service), with margin; far larger prizes only slow the engines' penalty tuning.
    finite = duration[duration < UNREACHABLE]
    max_service = max((stops[i].service_s for i in todo), default=0)
    drop_prize = 4 * COST_SCALE * (2 * int(finite.max(initial=0)) + max_service + 60)
    jobs: list[Job] = []
    for i in todo:
        st = stops[i]
        base = _job_windows(st, origin)
        jobs.append(
            Job(
                location=stop_point(i),
                service=st.service_s,
                windows=base.windows,
                demand=st.demand,
                late_penalty=base.late_penalty,
                required=False,
                prize=drop_prize,
            )
        )
    vehicles = [Vehicle(d.start_point, d.end_point, d.start_s, d.end_s, d.capacity) for d in drivers]
    problem = Problem("plan", duration * COST_SCALE, duration, jobs, vehicles)

    # Screen: a stop no driver could serve even alone never reaches the solver.
    unserved: dict[int, tuple[UnservedReason, str]] = {}
    candidates: list[int] = []
    for ji in range(len(jobs)):
        why = _alone(problem, ji)
        if why is None:
            candidates.append(ji)
        else:
            unserved[ji] = why

    routes: list[list[int]] = [[] for _ in vehicles]
    engine_name = request.engine or "none"
    if candidates:
        sub = Problem("plan", problem.distance, duration, [jobs[j] for j in candidates], vehicles)
        engine_name = request.engine or choose_engine(_as_required_if_tour(sub), request.time_limit_s)
        eng = get_engine(engine_name)
        solve_on = _as_required_if_tour(sub) if engine_name == "lkh" else sub
        if (limitation := eng.supports(solve_on)) is not None and request.engine:
            raise ValueError(f"engine {engine_name} cannot model this request: {limitation}")
        result = eng.solve(solve_on, request.time_limit_s, request.seed)
        routes = [[candidates[j] for j in r] for r in result.routes]
        if not evaluate(problem, routes).feasible and engine_name == "lkh":
            # The tour does not fit the shift: plan it again with droppable stops.
            engine_name = "pyvrp"
            result = get_engine("pyvrp").solve(sub, request.time_limit_s, request.seed)
            routes = [[candidates[j] for j in r] for r in result.routes]
        routes = _repair(problem, _make_feasible(problem, routes), candidates)
    served = {j for r in routes for j in r}
    for ji in candidates:
        if ji not in served:
            unserved[ji] = _why_left_out(problem, routes, ji)

    out_routes = []
    objective = 0.0
    for drv, r in zip(drivers, routes, strict=True):
        ev = evaluate_route(problem, drv.index, r)
        objective += (ev.distance + ev.late_cost) / COST_SCALE
        planned = []
        seq = 0
        for i, (arr, begin, dep) in zip(drv.visited, drv.visited_times, strict=True):
            seq += 1
            planned.append(
                PlannedStop(
                    stop_id=stops[i].stop_id,
                    sequence=seq,
                    arrival=origin + timedelta(seconds=arr),
                    service_start=origin + timedelta(seconds=begin),
                    departure=origin + timedelta(seconds=dep),
                    visited=True,
                )
            )
        for s in ev.stops:
            seq += 1
            st = stops[todo[s.job]]
            planned.append(
                PlannedStop(
                    stop_id=st.stop_id,
                    sequence=seq,
                    arrival=origin + timedelta(seconds=s.arrival),
                    service_start=origin + timedelta(seconds=s.start),
                    departure=origin + timedelta(seconds=s.start + st.service_s),
                    late_minutes=round(s.late / 60, 2),
                )
            )
        out_routes.append(
            DriverPlan(
                driver_id=request.drivers[drv.index].driver_id,
                stops=planned,
                departure=origin + timedelta(seconds=ev.departure),
                return_time=origin + timedelta(seconds=ev.end_time),
                travel_s=int(sum(duration[a, b] for a, b in _legs(problem, drv.index, r))),
                load=ev.load + sum(stops[i].demand for i in drv.visited),
            )
        )
    return Plan(
        routes=out_routes,
        unserved=[
            UnservedStop(stop_id=stops[todo[j]].stop_id, reason=why, detail=detail)
            for j, (why, detail) in sorted(unserved.items())
        ],
        engine=engine_name,
        objective=round(objective, 1),
        solve_seconds=round(time.perf_counter() - t_start, 3),
    )


def _job_windows(stop: StopIn, origin: datetime) -> Job:
    windows = tuple((_seconds(w.start, origin), _seconds(w.end, origin)) for w in stop.windows)
    soft = bool(stop.windows) and stop.windows[0].soft
    penalty = int(round(stop.late_penalty_per_minute * COST_SCALE / 60)) if soft else None
    return Job(location=0, service=stop.service_s, windows=windows, late_penalty=penalty)


def _as_required_if_tour(p: Problem) -> Problem:
    """A pure tour whose stops all fit is an exact TSP: every stop required."""
    from dataclasses import replace

    return Problem(p.name, p.distance, p.duration, [replace(j, required=True, prize=0) for j in p.jobs], p.vehicles)


def _legs(problem: Problem, v: int, route: list[int]) -> list[tuple[int, int]]:
    veh = problem.vehicles[v]
    locs = [veh.start] + [problem.jobs[j].location for j in route] + [veh.end]
    return list(zip(locs, locs[1:], strict=False))


def _alone(problem: Problem, ji: int) -> tuple[UnservedReason, str] | None:
    """Why no driver could serve this stop even as its only stop; None if one could."""
    job = problem.jobs[ji]
    order = [
        UnservedReason.UNREACHABLE,
        UnservedReason.WINDOW_PASSED,
        UnservedReason.SHIFT_LENGTH,
        UnservedReason.CAPACITY,
    ]
    best: tuple[UnservedReason, str] | None = None
    for v, veh in enumerate(problem.vehicles):
        go, back = int(problem.duration[veh.start, job.location]), int(problem.duration[job.location, veh.end])
        if go >= UNREACHABLE or back >= UNREACHABLE:
            why = (UnservedReason.UNREACHABLE, "no path between the stop and the driver's start or end")
        else:
            ev = evaluate_route(problem, v, [ji])
            if ev.window_violation:
                why = (
                    UnservedReason.WINDOW_PASSED,
                    f"earliest arrival is {ev.window_violation // 60} min after the last window closes",
                )
            elif ev.duration_violation:
                why = (
                    UnservedReason.SHIFT_LENGTH,
                    f"serving it alone ends {ev.duration_violation // 60} min after the shift",
                )
            elif ev.load_violation:
                why = (UnservedReason.CAPACITY, f"demand {job.demand} exceeds the vehicle's free capacity")
            else:
                return None
        if best is None or order.index(why[0]) > order.index(best[0]):
            best = why
    return best


def _make_feasible(problem: Problem, routes: list[list[int]]) -> list[list[int]]:
    """Engines may hand back a best-so-far that breaks a hard limit (a budget too short to repair it):
    take stops out, the one whose removal helps most first, until every route holds."""
    out = []
    for v, r in enumerate(routes):
        r = list(r)
        ev = evaluate_route(problem, v, r)
        while r and not ev.feasible:
            trials = [(evaluate_route(problem, v, r[:k] + r[k + 1 :]), k) for k in range(len(r))]
            ev, k = min(
                trials,
                key=lambda t: (t[0].duration_violation + t[0].window_violation + t[0].load_violation, t[0].distance),
            )
            r.pop(k)
        out.append(r)
    return out


def _insertions(problem: Problem, routes: list[list[int]], ji: int):
    for v, r in enumerate(routes):
        for pos in range(len(r) + 1):
            yield v, pos, evaluate_route(problem, v, r[:pos] + [ji] + r[pos:])


def _repair(problem: Problem, routes: list[list[int]], candidates: list[int]) -> list[list[int]]:
    """Cheapest feasible insertion of any stop the engine left out but that still fits (a time-limited
    engine can miss one)."""
    served = {j for r in routes for j in r}
    base = {v: evaluate_route(problem, v, r) for v, r in enumerate(routes)}
    for ji in candidates:
        if ji in served:
            continue
        best = None
        for v, pos, ev in _insertions(problem, routes, ji):
            if ev.feasible:
                delta = ev.distance + ev.late_cost - base[v].distance - base[v].late_cost
                if best is None or delta < best[0]:
                    best = (delta, v, pos, ev)
        if best is not None and best[0] < problem.jobs[ji].prize:
            _, v, pos, ev = best
            routes[v] = routes[v][:pos] + [ji] + routes[v][pos:]
            base[v] = ev
            served.add(ji)
    return routes


def _why_left_out(problem: Problem, routes: list[list[int]], ji: int) -> tuple[UnservedReason, str]:
    """Every insertion breaks something: capacity if some insertion only breaks the load, shift length if
    some only runs past the shift end, otherwise the windows of the stops already planned."""
    load_only = shift_only = False
    for _, _, ev in _insertions(problem, routes, ji):
        if ev.load_violation and not ev.window_violation and not ev.duration_violation:
            load_only = True
        if ev.duration_violation and not ev.window_violation and not ev.load_violation:
            shift_only = True
    if load_only:
        return UnservedReason.CAPACITY, "fits in time, but every driver's vehicle is full"
    if shift_only:
        return UnservedReason.SHIFT_LENGTH, "fits only if a driver works past the end of the shift"
    return UnservedReason.WINDOW_CONFLICT, "every insertion makes this or an already planned stop miss its window"
