"""A realistic one-driver delivery day, generated from a seed: time to the first complete feasible plan,
and the gap of the plan at a short budget against the best plan found at a long one.

150 stops within 4 km of a depot (dense centre, thinner edge), 45-180 s on site, about a third with a 2-hour
window and a few with two windows, one 10-hour shift, 28 km/h with a slower rush hour.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np

from routing.models import PlanRequest
from routing.planner import plan

DEPOT = (52.5200, 13.4050)  # a city centre; the coordinates only need to be real
FIRST_PLAN_BUDGETS = (0.1, 0.25, 0.5, 1.0, 2.0)


def make_day(seed: int = 7, n_stops: int = 150, time_limit: float = 5.0) -> PlanRequest:
    rng = np.random.default_rng(seed)
    tz = timezone(timedelta(hours=1))
    start = datetime(2024, 3, 12, 8, 0, tzinfo=tz)
    end = start + timedelta(hours=10)
    # Polar scatter: radius ~ 0.2-4 km with more stops near the centre.
    r_km = 0.2 + 4.0 * rng.beta(1.6, 2.4, n_stops)
    theta = rng.uniform(0, 2 * np.pi, n_stops)
    lat = DEPOT[0] + (r_km / 111.32) * np.sin(theta)
    lng = DEPOT[1] + (r_km / (111.32 * np.cos(np.radians(DEPOT[0])))) * np.cos(theta)
    stops = []
    for i in range(n_stops):
        windows = []
        u = rng.uniform()
        if u < 0.30:  # one two-hour window
            h = int(rng.integers(0, 8))
            windows = [{"start": start + timedelta(hours=h), "end": start + timedelta(hours=h + 2)}]
        elif u < 0.36:  # morning or evening
            windows = [
                {"start": start, "end": start + timedelta(hours=2)},
                {"start": start + timedelta(hours=7), "end": start + timedelta(hours=9, minutes=30)},
            ]
        stops.append(
            {
                "stop_id": f"S{i:03d}",
                "location": {"lat": float(lat[i]), "lng": float(lng[i])},
                "service_s": int(rng.integers(45, 181)),
                "windows": windows,
                "demand": int(rng.integers(1, 4)),
            }
        )
    return PlanRequest.model_validate(
        {
            "depot": {"lat": DEPOT[0], "lng": DEPOT[1]},
            "shift": {"start": start, "end": end},
            "stops": stops,
            "drivers": [{"driver_id": "van-1", "capacity": 400}],
            "speed": {"default_kmh": 28.0, "by_hour": {8: 20.0, 16: 22.0, 17: 20.0}, "detour_factor": 1.35},
            "time_limit_s": time_limit,
            "seed": seed,
        }
    )


def run_day(seed: int = 7, n_stops: int = 150, short: float = 5.0, long: float = 30.0) -> dict[str, object]:
    base = make_day(seed, n_stops)

    def at(budget: float):
        req = base.model_copy(update={"time_limit_s": budget})
        t0 = time.perf_counter()
        p = plan(req)
        return p, time.perf_counter() - t0

    best, best_s = at(long)
    served_best = sum(1 for r in best.routes for _ in r.stops)
    first = None
    for budget in FIRST_PLAN_BUDGETS:
        p, wall = at(budget)
        if sum(1 for r in p.routes for _ in r.stops) >= served_best:
            first = {"budget_s": budget, "wall_s": round(wall, 3), "objective": p.objective, "engine": p.engine}
            break
    quick, quick_s = at(short)
    served_quick = sum(1 for r in quick.routes for _ in r.stops)
    return {
        "seed": seed,
        "stops": n_stops,
        "engine": best.engine,
        f"engine_{short:g}s": quick.engine,
        "first_complete_plan": first,
        f"objective_{short:g}s": quick.objective,
        f"objective_{long:g}s": best.objective,
        f"served_{short:g}s": served_quick,
        f"served_{long:g}s": served_best,
        "gap_percent": round(100.0 * (quick.objective - best.objective) / best.objective, 3),
        "wall_s": {f"{short:g}": round(quick_s, 2), f"{long:g}": round(best_s, 2)},
        "unserved": [u.model_dump() for u in best.unserved],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_day(), indent=2))
