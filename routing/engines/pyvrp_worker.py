"""Runs PyVRP searches in a child process for the parallel portfolio (`pyvrp_engine._parallel_portfolio`).

Protocol, pickles over the pipes: first (problem, data, patience) on stdin; then, repeatedly, a job
(seed, monotonic deadline, initial visits or None, granular neighbourhood size or None for PyVRP's)
on stdin and a result (visits, num_iterations, runtime) on stdout; the process ends at end of input.
Visits are per route (client indices, vehicle type), so no PyVRP object crosses the pipe. The deadline is
on `time.monotonic`, which is system-wide on Linux: the process start-up comes out of the job's budget.
"""

from __future__ import annotations

import pickle
import sys
import time
import warnings


def main() -> None:
    from pyvrp.exceptions import PenaltyBoundWarning
    from pyvrp.stop import MaxRuntime, MultipleCriteria, NoImprovement

    from routing.engines.pyvrp_engine import _search, from_visits, solve_params, to_visits

    warnings.simplefilter("ignore", PenaltyBoundWarning)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        problem, data, patience = pickle.load(stdin)
    except EOFError:
        return
    while True:
        try:
            seed, deadline, initial, num_neighbours = pickle.load(stdin)
        except EOFError:
            return
        t_job = time.monotonic()
        budget = max(0.05, deadline - t_job)
        stop = MultipleCriteria([MaxRuntime(budget), NoImprovement(patience)])
        start = from_visits(data, initial) if initial is not None else None
        res = _search(problem, data, stop, seed, start, solve_params(num_neighbours))
        pickle.dump((to_visits(res.best), res.num_iterations, res.runtime), stdout)
        stdout.flush()


if __name__ == "__main__":
    main()
