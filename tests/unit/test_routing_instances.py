"""Benchmark readers: TSPLIB distance functions reproduce the supplied optimal tours; Solomon arcs are
truncated to tenths as in DIMACS; Dumas files read as one-vehicle TSPTW."""


import numpy as np
import pytest

from routing.instances import (
    _explicit,
    cases,
    detect_set,
    read_solomon,
    read_tour,
    read_tsplib,
    read_tsptw,
    tour_length,
    tsplib_matrix,
)
from routing.problem import evaluate
from tests.shared_data import DATA  # noqa: E402  (the workplace benchmark data)


@pytest.mark.parametrize(
    ("name", "optimal"),
    [("gr24", 1272), ("bayg29", 1610), ("bays29", 2020), ("berlin52", 7542), ("gr96", 55209), ("st70", 675)],
)
def test_supplied_optimal_tours_have_the_listed_length(name: str, optimal: int) -> None:
    # Covers LOWER_DIAG_ROW (gr24), UPPER_ROW (bayg29), FULL_MATRIX (bays29), EUC_2D and GEO.
    inst = DATA / "tsplib" / "instances"
    problem = read_tsplib(inst / f"{name}.tsp")
    assert tour_length(problem.distance, read_tour(inst / f"{name}.opt.tour")) == optimal


def test_euc_2d_rounds_to_nearest_and_ceil_2d_rounds_up() -> None:
    spec = {"DIMENSION": "2", "EDGE_WEIGHT_TYPE": "EUC_2D"}
    sections = {"NODE_COORD": ["1 0 0", "2 1 1"]}  # sqrt(2) = 1.414
    assert tsplib_matrix(spec, sections)[0, 1] == 1
    assert tsplib_matrix({**spec, "EDGE_WEIGHT_TYPE": "CEIL_2D"}, sections)[0, 1] == 2


def test_att_pseudo_euclidean() -> None:
    # r = sqrt((30^2 + 40^2) / 10) = 15.81; nint 16 >= r so 16.
    spec = {"DIMENSION": "2", "EDGE_WEIGHT_TYPE": "ATT"}
    assert tsplib_matrix(spec, {"NODE_COORD": ["1 0 0", "2 30 40"]})[0, 1] == 16
    # r = sqrt(10/10) = 1 exactly: nint 1, not below r, stays 1.
    assert tsplib_matrix(spec, {"NODE_COORD": ["1 0 0", "2 1 3"]})[0, 1] == 1


def test_explicit_triangles_mirror() -> None:
    upper = _explicit("UPPER_ROW", np.array([1, 2, 3], dtype=float), 3)
    lower = _explicit("LOWER_DIAG_ROW", np.array([0, 1, 0, 2, 3, 0], dtype=float), 3)
    assert upper.tolist() == [[0, 1, 2], [1, 0, 3], [2, 3, 0]]
    assert lower.tolist() == [[0, 1, 2], [1, 0, 3], [2, 3, 0]]


def test_solomon_arcs_are_truncated_tenths() -> None:
    p = read_solomon(DATA / "solomon" / "instances" / "C101.txt")
    # depot (40, 50) to customer 1 (55, 85): sqrt(1450) = 38.079 -> 380 tenths, not 381.
    assert p.distance[0, 1] == 380
    assert p.cost_scale == 10
    assert len(p.jobs) == 100 and p.vehicles[0].capacity == 200
    assert p.jobs[0].windows == ((6470, 7260),) and p.jobs[0].service == 900
    assert p.kind == "vrptw"


def test_dumas_reads_as_single_vehicle_tsptw() -> None:
    p = read_tsptw(DATA / "tsptw_dumas" / "instances" / "n20w20.001.tsptw")
    assert p.kind == "tsptw" and len(p.jobs) == 20
    assert p.vehicles[0].latest_end == 408
    assert p.jobs[0].windows == ((62, 68),)


def test_evaluate_flags_a_late_arrival_on_a_hard_window() -> None:
    p = read_tsptw(DATA / "tsptw_dumas" / "instances" / "n20w20.001.tsptw")
    ev = evaluate(p, [list(reversed(range(20)))])
    assert not ev.feasible


def test_set_detection_and_cases() -> None:
    assert detect_set(DATA / "tsplib") == "tsplib"
    kind, found = cases(DATA / "solomon")
    assert kind == "solomon" and {c.name for c in found} >= {"C101", "R101"}
    with pytest.raises(ValueError, match="not laid out like a benchmark set"):
        detect_set(DATA)
