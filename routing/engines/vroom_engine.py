"""VROOM (pyvroom) on the neutral problem: fast construction plus local search; several windows per stop
natively, unassigned stops natively, hard windows only."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import vroom

from routing.engines import EngineResult, engine
from routing.problem import UNREACHABLE, Problem

# VROOM keeps durations and costs in 32-bit-safe ranges; unreachable arcs are clipped to this.
VROOM_BIG = 1 << 30


@engine("vroom")
class VroomEngine:
    name = "vroom"

    def supports(self, problem: Problem) -> str | None:
        if problem.has_soft_windows:
            return "soft windows are relaxed, not penalised"
        if not all(j.required for j in problem.jobs):
            return "stop priorities only (no drop penalty)"
        return None

    def solve(self, problem: Problem, time_limit: float, seed: int = 0) -> EngineResult:
        t0 = time.perf_counter()
        inp = vroom.Input()
        dur = np.minimum(problem.duration, VROOM_BIG).astype(np.uint32)
        dur[problem.duration >= UNREACHABLE] = VROOM_BIG
        cost = np.minimum(problem.distance, VROOM_BIG).astype(np.uint32)
        cost[problem.distance >= UNREACHABLE] = VROOM_BIG
        inp.set_durations_matrix("car", dur)
        inp.set_costs_matrix("car", cost)
        demands = any(j.demand for j in problem.jobs)
        total = sum(j.demand for j in problem.jobs)
        horizon = problem.horizon
        for k, v in enumerate(problem.vehicles):
            tw = vroom.TimeWindow(v.earliest_start, v.latest_end if v.latest_end is not None else horizon)
            cap = [v.capacity if v.capacity is not None else total] if demands else ()
            inp.add_vehicle(vroom.Vehicle(k, start=v.start, end=v.end, capacity=cap, time_window=tw))
        for ji, job in enumerate(problem.jobs):
            windows = [vroom.TimeWindow(a, b) for a, b in job.windows]
            if job.late_penalty is not None and windows:
                windows[-1] = vroom.TimeWindow(job.windows[-1][0], horizon)
            inp.add_job(
                vroom.Job(
                    ji,
                    location=job.location,
                    default_service=job.service,
                    delivery=vroom.Amount([job.demand]) if demands else vroom.Amount([]),
                    time_windows=windows,
                )
            )
        left = max(0.05, time_limit - (time.perf_counter() - t0))
        sol = inp.solve(exploration_level=5, nb_threads=1, timeout=timedelta(seconds=left))
        routes: list[list[int]] = [[] for _ in problem.vehicles]
        df = sol.routes
        for vid, jid, typ in zip(df["vehicle_id"], df["id"], df["type"], strict=True):
            if typ == "job":
                routes[int(vid)].append(int(jid))
        return EngineResult(routes, None, {"unassigned": len(sol.unassigned) if hasattr(sol, "unassigned") else None})
