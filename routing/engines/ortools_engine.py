"""OR-Tools routing (first solution + guided local search) on the neutral problem. The one engine that
models soft windows exactly: a soft upper bound on the time cumul with a linear lateness cost."""

from __future__ import annotations

import time

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from routing.engines import EngineResult, engine
from routing.problem import UNREACHABLE, Problem

REQUIRED_DROP_COST = 1 << 42


@engine("ortools")
class ORToolsEngine:
    name = "ortools"

    def supports(self, problem: Problem) -> str | None:
        return None

    def solve(self, problem: Problem, time_limit: float, seed: int = 0) -> EngineResult:
        t0 = time.perf_counter()
        jobs, vehicles = problem.jobs, problem.vehicles
        # Node 0..J-1 are jobs; then one start and one end node per vehicle.
        loc = [j.location for j in jobs] + [v.start for v in vehicles] + [v.end for v in vehicles]
        nj, nv = len(jobs), len(vehicles)
        starts = [nj + k for k in range(nv)]
        ends = [nj + nv + k for k in range(nv)]
        manager = pywrapcp.RoutingIndexManager(len(loc), nv, starts, ends)
        routing = pywrapcp.RoutingModel(manager)
        service = [j.service for j in jobs] + [0] * (2 * nv)
        dist, dur = problem.distance.tolist(), problem.duration.tolist()
        big = UNREACHABLE

        def cost_cb(a: int, b: int) -> int:
            return min(dist[loc[manager.IndexToNode(a)]][loc[manager.IndexToNode(b)]], big)

        def time_cb(a: int, b: int) -> int:
            na = manager.IndexToNode(a)
            return min(service[na] + dur[loc[na]][loc[manager.IndexToNode(b)]], big)

        routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitCallback(cost_cb))
        horizon = problem.horizon
        t_idx = routing.RegisterTransitCallback(time_cb)
        routing.AddDimension(t_idx, horizon, horizon, False, "time")
        tdim = routing.GetDimensionOrDie("time")
        for k, v in enumerate(vehicles):
            tdim.CumulVar(routing.Start(k)).SetRange(v.earliest_start, horizon)
            back_by = v.latest_end if v.latest_end is not None else horizon
            tdim.CumulVar(routing.End(k)).SetRange(v.earliest_start, back_by)
        for ji, job in enumerate(jobs):
            cv = tdim.CumulVar(manager.NodeToIndex(ji))
            if not job.windows:
                continue
            lo, hi = job.windows[0][0], job.windows[-1][1]
            if job.late_penalty is not None:
                cv.SetRange(lo, horizon)
                tdim.SetCumulVarSoftUpperBound(manager.NodeToIndex(ji), hi, int(job.late_penalty))
            else:
                cv.SetRange(lo, hi)
            for (_, a), (b, _) in zip(job.windows, job.windows[1:], strict=False):
                if b > a + 1:
                    cv.RemoveInterval(a + 1, b - 1)
        for k in range(nv):
            routing.AddVariableMinimizedByFinalizer(tdim.CumulVar(routing.Start(k)))
            routing.AddVariableMinimizedByFinalizer(tdim.CumulVar(routing.End(k)))
        # Every stop sits in a disjunction: OR-Tools' first-solution heuristics fail outright on tight
        # windows otherwise. A required stop costs more to drop than any route, so the search puts it back.
        must = REQUIRED_DROP_COST
        for ji, job in enumerate(jobs):
            routing.AddDisjunction([manager.NodeToIndex(ji)], must if job.required else int(job.prize))
        caps = [v.capacity for v in vehicles]
        if any(j.demand for j in jobs) and any(c is not None for c in caps):
            demand = [j.demand for j in jobs] + [0] * (2 * nv)
            d_idx = routing.RegisterUnaryTransitCallback(lambda i: demand[manager.IndexToNode(i)])
            total = sum(demand)
            routing.AddDimensionWithVehicleCapacity(
                d_idx, 0, [c if c is not None else total for c in caps], True, "load"
            )
        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
        params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
        left = max(0.05, time_limit - (time.perf_counter() - t0))
        params.time_limit.FromMilliseconds(int(left * 1000))
        first: list[float] = []

        def on_solution() -> None:
            if not first:
                first.append(time.perf_counter() - t0)

        routing.AddAtSolutionCallback(on_solution)
        sol = routing.SolveWithParameters(params)
        routes: list[list[int]] = [[] for _ in vehicles]
        if sol is not None:
            for k in range(nv):
                i = routing.Start(k)
                i = sol.Value(routing.NextVar(i))
                while not routing.IsEnd(i):
                    routes[k].append(manager.IndexToNode(i))
                    i = sol.Value(routing.NextVar(i))
        return EngineResult(routes, first[0] if first else None, {"status": int(routing.status())})
