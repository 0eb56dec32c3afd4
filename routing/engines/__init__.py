"""Engine registry: a `Problem` and a time budget in, job sequences per vehicle out.

Each engine module registers itself once under its name (`@engine("pyvrp")`); callers resolve names only
through `get_engine`, so an unknown name fails with the list of known ones. Engines return plain job-index
lists; `routing.problem.evaluate` re-times and re-costs them, so no solver type leaves this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from routing.problem import Problem


@dataclass
class EngineResult:
    routes: list[list[int]]  # routes[v]: job indices in visiting order for vehicle v
    # Seconds from the call until the engine had its first feasible solution, where it reports one.
    first_feasible_seconds: float | None = None
    info: dict[str, object] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def supports(self, problem: Problem) -> str | None:
        """None when the engine can model `problem` exactly, else why not."""

    def solve(self, problem: Problem, time_limit: float, seed: int = 0) -> EngineResult: ...


_REGISTRY: dict[str, Callable[[], Engine]] = {}
_MODULES = {
    "pyvrp": "routing.engines.pyvrp_engine",
    "ortools": "routing.engines.ortools_engine",
    "vroom": "routing.engines.vroom_engine",
    "lkh": "routing.engines.lkh_engine",
    "hybrid": "routing.engines.hybrid_engine",
}
# The engines the benchmark runs side by side; "hybrid" (LKH-3 then PyVRP, for one driver's windowed day)
# is a combination of two of them, resolvable by name but not benchmarked as a separate solver.
ENGINE_NAMES = ("pyvrp", "ortools", "vroom", "lkh")


def engine(name: str) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if getattr(cls, "name", None) != name:
            raise TypeError(f"{cls.__name__}.name must be {name!r}")
        _REGISTRY[name] = cls
        return cls

    return register


def get_engine(name: str) -> Engine:
    if name not in _MODULES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
    if name not in _REGISTRY:
        # Solver packages load lazily: importing ortools costs ~1 s and nothing else needs it.
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]()
