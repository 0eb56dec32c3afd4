"""Every engine on small problems with known optima, behind the neutral Problem (no solver types)."""


import numpy as np
import pytest

from routing.engines import ENGINE_NAMES, get_engine
from routing.instances import read_tsplib
from routing.problem import Job, Problem, Vehicle, evaluate
from tests.shared_data import DATA  # noqa: E402  (the workplace benchmark data)


def grid_tsp() -> Problem:
    """12 points on the border of a 3 x 4 block grid with unit spacing 10: the optimal tour is the
    border itself, length 2 * (30 + 40) = 140."""
    pts = [(x, 0) for x in range(0, 50, 10)] + [(40, y) for y in (10, 20, 30)]
    pts += [(x, 30) for x in range(30, -10, -10)] + [(0, y) for y in (20, 10)]
    xy = np.array(pts, dtype=float)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(xy))  # hide the answer from the engines
    xy = xy[order]
    d = np.rint(np.sqrt(((xy[:, None] - xy[None, :]) ** 2).sum(-1))).astype(np.int64)
    return Problem("grid12", d, d, [Job(location=i) for i in range(1, len(xy))], [Vehicle(0, 0)])


def line_tsptw() -> Problem:
    """Depot at 0, stops at 10, 20, 30 on a line, windows forcing the far stop first: 30 -> 10 -> 20."""
    pos = np.array([0, 10, 20, 30])
    d = np.abs(pos[:, None] - pos[None, :]).astype(np.int64)
    jobs = [Job(1, windows=((40, 50),)), Job(2, windows=((60, 80),)), Job(3, windows=((0, 30),))]
    return Problem("line", d, d, jobs, [Vehicle(0, 0, 0, 200)])


def two_truck_vrp() -> Problem:
    """Two clusters far apart, capacity forces one truck per cluster: optimum 2 * (100 + 100 + 2) = 404."""
    pos = np.array([0, 100, 101, -100, -101])
    d = np.abs(pos[:, None] - pos[None, :]).astype(np.int64)
    jobs = [Job(i, demand=5) for i in range(1, 5)]
    return Problem("clusters", d, d, jobs, [Vehicle(0, 0, 0, 1000, capacity=10) for _ in range(3)])


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_engine_finds_the_grid_tour(name: str) -> None:
    p = grid_tsp()
    ev = evaluate(p, get_engine(name).solve(p, 0.5).routes)
    assert ev.feasible and ev.cost == 140


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_engine_respects_tight_windows(name: str) -> None:
    p = line_tsptw()
    routes = get_engine(name).solve(p, 0.5).routes
    ev = evaluate(p, routes)
    assert ev.feasible
    assert routes[0] == [2, 0, 1]


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_engine_splits_by_capacity(name: str) -> None:
    p = two_truck_vrp()
    routes = get_engine(name).solve(p, 0.5).routes
    ev = evaluate(p, routes)
    assert ev.feasible and ev.cost == 404
    assert sorted(sorted(r) for r in routes if r) == [[0, 1], [2, 3]]


@pytest.mark.parametrize("name", ["lkh", "pyvrp"])
def test_berlin52_optimum(name: str) -> None:
    p = read_tsplib(DATA / "tsplib" / "instances" / "berlin52.tsp")
    assert evaluate(p, get_engine(name).solve(p, 1.0).routes).cost == 7542


def test_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: pyvrp, ortools, vroom, lkh"):
        get_engine("gurobi")


def test_lkh_refuses_what_it_cannot_model() -> None:
    p = grid_tsp()
    p.jobs[0] = Job(p.jobs[0].location, windows=((0, 5), (50, 60)))
    assert get_engine("lkh").supports(p) is not None
    with pytest.raises(ValueError, match="lkh cannot model"):
        get_engine("lkh").solve(p, 0.2)


def multi_window_day() -> Problem:
    """Depot at 0, stops at 10..60 on a line; stop 60 has a morning window it cannot reach and an
    afternoon one, stop 10 a single early window. Optimum: out and back, 60 served last in the afternoon."""
    pos = np.array([0, 10, 20, 30, 40, 50, 60])
    d = np.abs(pos[:, None] - pos[None, :]).astype(np.int64)
    jobs = [Job(1, windows=((0, 15),))] + [Job(i) for i in range(2, 6)]
    jobs.append(Job(6, windows=((0, 20), (100, 130))))
    return Problem("multi", d, d, jobs, [Vehicle(0, 0, 0, 400)])


def test_hybrid_handles_a_stop_with_two_windows_and_keeps_the_optimum() -> None:
    p = multi_window_day()
    res = get_engine("hybrid").solve(p, 1.0)
    ev = evaluate(p, res.routes)
    assert ev.feasible and ev.cost == 120 and res.routes[0][0] == 0  # stop 10 first, in its early window
    assert next(s for s in ev.routes[0].stops if s.job == 5).start >= 100  # the afternoon window


def test_hybrid_gives_the_tight_window_tour() -> None:
    p = line_tsptw()
    res = get_engine("hybrid").solve(p, 1.0)
    assert evaluate(p, res.routes).feasible and res.routes[0] == [2, 0, 1]


def test_hybrid_refuses_several_drivers() -> None:
    assert get_engine("hybrid").supports(two_truck_vrp()) is not None


def test_cheapest_insertion_keeps_windows_and_reports_what_does_not_fit() -> None:
    from routing.engines.hybrid_engine import insert_cheapest

    p = multi_window_day()
    tour, missing = insert_cheapest(p, [0, 1, 2, 3, 4], [5])
    assert missing == [] and sorted(tour) == [0, 1, 2, 3, 4, 5] and evaluate(p, [tour]).cost == 120
    p.jobs[5] = Job(6, windows=((0, 20), (30, 40)))  # unreachable in time from any position
    tour, missing = insert_cheapest(p, [0, 1, 2, 3, 4], [5])
    assert tour == [0, 1, 2, 3, 4] and missing == [5]


def _day_problem(monkeypatch: pytest.MonkeyPatch, seed: int) -> Problem:
    """The planner's Problem for the seeded 150-stop day of routing/bench_day.py (every stop optional)."""
    from routing import planner
    from routing.bench_day import make_day
    from routing.engines import EngineResult

    seen: list[Problem] = []

    class Capture:
        name = "capture"

        def supports(self, problem: Problem) -> None:
            return None

        def solve(self, problem: Problem, time_limit: float, seed: int = 0) -> EngineResult:
            seen.append(problem)
            return EngineResult([[] for _ in problem.vehicles])

    monkeypatch.setattr(planner, "get_engine", lambda name: Capture())
    planner.plan(make_day(seed))
    return seen[0]


def test_pyvrp_fits_every_stop_of_a_tight_day_within_few_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 5 is the tightest day: with PyVRP's default time-warp penalty it kept 149 of 150 stops for
    seconds; starting the penalty at the cost of travel fits all 150. Iterations, not seconds, bound the
    search, so the result does not depend on the machine's load."""
    import pyvrp
    from pyvrp.stop import MaxIterations

    from routing.engines.pyvrp_engine import _search, _time_unit_cost, build

    problem = _day_problem(monkeypatch, 5)
    assert _time_unit_cost(problem) == 600  # the planner's COST_SCALE
    data, client_job, _ = build(problem)
    res = _search(problem, data, MaxIterations(300), 5, None, pyvrp.SolveParams())
    served = [client_job[a.idx] for r in res.best.routes() for a in r.schedule() if a.is_client()]
    assert res.is_feasible()
    assert sorted(served) == list(range(len(problem.jobs)))


def test_time_unit_cost_is_one_when_cost_is_travel_time() -> None:
    """Benchmark problems cost travel time itself (Solomon, Dumas), and keep every stop required, so
    `_search` leaves PyVRP's default penalties for them."""
    from routing.engines.pyvrp_engine import _time_unit_cost

    problem = line_tsptw()
    assert all(j.required for j in problem.jobs)
    assert _time_unit_cost(problem) == 1.0


def _optional(p: Problem, prize: int = 10_000) -> Problem:
    from dataclasses import replace

    return Problem(p.name, p.distance, p.duration, [replace(j, required=False, prize=prize) for j in p.jobs],
                   p.vehicles)


def test_pyvrp_portfolio_runs_two_searches_then_polishes_and_keeps_the_optimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One driver, optional stops (a planner request), a budget from PORTFOLIO_FROM_S: two searches from
    different seeds, then warm-started ones from the best; the answer is the best of them."""
    from routing.engines import pyvrp_engine

    monkeypatch.setattr(pyvrp_engine, "PORTFOLIO_FROM_S", 0.4)
    monkeypatch.setattr(pyvrp_engine, "POLISH_SEGMENT_S", 0.1)
    # Small shares leave most of the budget to polishing, so a loaded machine (searches running to
    # their time limit) still gets to a warm-started search.
    monkeypatch.setattr(pyvrp_engine, "PORTFOLIO_SHARES", (0.2, 0.2))
    # The sequential portfolio (one core); the two-core one is in test_pyvrp_portfolio.py.
    monkeypatch.setattr(pyvrp_engine, "_cpus", lambda: 1)
    p = _optional(multi_window_day())
    res = get_engine("pyvrp").solve(p, 1.0)
    ev = evaluate(p, res.routes)
    assert len(res.info["searches"]) >= 3  # type: ignore[arg-type]
    assert ev.feasible and ev.dropped_prize == 0 and ev.cost == 120
    assert res.first_feasible_seconds is not None and res.first_feasible_seconds < 1.0


@pytest.mark.parametrize("problem", [line_tsptw, lambda: _optional(two_truck_vrp())])
def test_pyvrp_keeps_one_search_for_required_stops_or_several_drivers(
    monkeypatch: pytest.MonkeyPatch, problem
) -> None:
    """The benchmark sets (every stop required) and several drivers keep the single search."""
    from routing.engines import pyvrp_engine

    monkeypatch.setattr(pyvrp_engine, "PORTFOLIO_FROM_S", 0.1)
    p = problem()
    res = get_engine("pyvrp").solve(p, 0.3)
    assert "searches" not in res.info and evaluate(p, res.routes).feasible


def test_pyvrp_portfolio_prefers_feasible_then_cheaper() -> None:
    import pyvrp

    from routing.engines.pyvrp_engine import _better, build

    p = _optional(line_tsptw())
    data, _, _ = build(p)
    right = pyvrp.Solution(data, [[2, 0, 1]])  # client c is stop c here (one window each)
    wrong = pyvrp.Solution(data, [[0, 1, 2]])  # the far stop last: misses its window
    short = pyvrp.Solution(data, [[2, 0]])  # stop 1 left out: feasible, but its prize is lost
    assert right.is_feasible() and not wrong.is_feasible() and short.is_feasible()
    assert _better(p, data, right, wrong) and not _better(p, data, wrong, right)
    assert _better(p, data, right, short) and not _better(p, data, short, right)
    assert _better(p, data, wrong, None)
