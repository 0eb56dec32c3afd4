"""The PyVRP portfolio on two cores: the second search in a pyvrp_worker child process, then polishing in
both processes; and the fall-backs (one core, a worker that does not answer)."""

import numpy as np
import pytest

from routing.engines import get_engine
from routing.problem import Job, Problem, Vehicle, evaluate
from tests.unit.test_routing_engines import _optional, multi_window_day


def optional_multi_window_day() -> Problem:
    """test_routing_engines' multi-window day with every stop optional and a large prize.
    Optimum: out and back, cost 120, all served."""
    return _optional(multi_window_day())


@pytest.fixture
def small_portfolio(monkeypatch: pytest.MonkeyPatch):
    """The portfolio from 0.4 s with 0.1 s polishing segments, and a worker waited for as long as it takes
    to start (the test checks what it does, not how fast a loaded machine starts a process)."""
    from routing.engines import pyvrp_engine

    monkeypatch.setattr(pyvrp_engine, "PORTFOLIO_FROM_S", 0.4)
    monkeypatch.setattr(pyvrp_engine, "POLISH_SEGMENT_S", 0.1)
    monkeypatch.setattr(pyvrp_engine, "WORKER_GRACE_S", 60.0)
    monkeypatch.setattr(pyvrp_engine, "_cpus", lambda: 2)
    return pyvrp_engine


def test_parallel_portfolio_runs_the_second_search_in_a_worker_and_keeps_the_optimum(small_portfolio) -> None:
    p = optional_multi_window_day()
    res = get_engine("pyvrp").solve(p, 1.0)
    ev = evaluate(p, res.routes)
    assert res.info["parallel"] is True
    assert len(res.info["worker_searches"]) >= 1  # type: ignore[arg-type]
    assert len(res.info["worker_searches"]) == len(res.info["searches"])  # type: ignore[arg-type]
    assert ev.feasible and ev.dropped_prize == 0 and ev.cost == 120
    assert res.first_feasible_seconds is not None


def test_one_core_keeps_the_sequential_portfolio(small_portfolio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(small_portfolio, "_cpus", lambda: 1)
    monkeypatch.setattr(small_portfolio, "PORTFOLIO_SHARES", (0.2, 0.2))
    p = optional_multi_window_day()
    res = get_engine("pyvrp").solve(p, 1.0)
    assert "parallel" not in res.info and len(res.info["searches"]) >= 2  # type: ignore[arg-type]
    assert evaluate(p, res.routes).cost == 120


def test_a_worker_that_does_not_answer_is_dropped(small_portfolio, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that dies at start-up (here: a module that does not exist) costs nothing but the hedge."""
    monkeypatch.setattr(small_portfolio, "WORKER_MODULE", "routing.engines.no_such_worker")
    p = optional_multi_window_day()
    res = get_engine("pyvrp").solve(p, 1.0)
    ev = evaluate(p, res.routes)
    assert res.info["parallel"] is True and res.info["worker_searches"] == []
    assert ev.feasible and ev.dropped_prize == 0 and ev.cost == 120


def test_below_the_portfolio_budget_there_is_one_search_and_no_worker(small_portfolio) -> None:
    p = optional_multi_window_day()
    res = get_engine("pyvrp").solve(p, 0.3)
    assert "searches" not in res.info and evaluate(p, res.routes).cost == 120


def test_required_stops_keep_one_search_on_two_cores(small_portfolio) -> None:
    """The benchmark sets (every stop required) keep the single search whatever the cores."""
    pos = np.array([0, 10, 20, 30])
    d = np.abs(pos[:, None] - pos[None, :]).astype(np.int64)
    p = Problem("line", d, d, [Job(1), Job(2), Job(3)], [Vehicle(0, 0)])
    res = get_engine("pyvrp").solve(p, 1.0)
    assert "searches" not in res.info and evaluate(p, res.routes).cost == 60


def test_visits_round_trip_and_the_worker_protocol(small_portfolio) -> None:
    """A solution survives the pipe's (clients, vehicle type) form, and one worker answers two jobs in
    turn: a search from scratch and one warm-started from a given solution."""
    import time

    import pyvrp

    from routing.engines.pyvrp_engine import _Worker, build, from_visits, to_visits

    p = optional_multi_window_day()
    data, client_job, _ = build(p)
    # Client c is stop c except the two copies of stop 60 (clients 5 and 6: morning, afternoon).
    sol = pyvrp.Solution(data, [[0, 1, 2, 3, 4, 6]])
    back = from_visits(data, to_visits(sol))
    assert to_visits(back) == to_visits(sol) == [([0, 1, 2, 3, 4, 6], 0)]
    assert back.distance() == sol.distance() and back.is_feasible()

    worker = _Worker(p, data, 1000)
    try:
        worker.submit(3, time.monotonic() + 0.2, None)
        first = worker.result(data, 60.0)
        worker.submit(4, time.monotonic() + 0.2, sol)
        second = worker.result(data, 60.0)
    finally:
        worker.close()
    assert first is not None and second is not None
    for best, iterations, _runtime in (first, second):
        assert best.is_feasible() and iterations > 0
        assert sorted(client_job[c] for c in to_visits(best)[0][0]) == list(range(len(p.jobs)))
    assert worker.proc.returncode is not None  # closed: no process left behind
