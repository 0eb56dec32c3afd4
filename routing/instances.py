"""Benchmark instance readers: a set directory in, `Problem`s with their reference values out.

Solomon and Dumas files go through vrplib. TSPLIB goes through the reader below: vrplib computes float
Euclidean distances and knows only two explicit layouts, and tsplib95 (which does follow the TSPLIB
functions) pins Deprecated~=1.2 against cassandra-driver's >=1.3.1, so it cannot live in this venv. The
reader below was checked against tsplib95 0.7.1 on every matrix of the set (docs/bench/routing.md) and the
tests re-check it on the supplied optimal tours.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vrplib
from vrplib.parse import parse_solomon

from routing.problem import Job, Problem, Vehicle

SETS = ("tsplib", "solomon", "tsptw_dumas")


# ---------------------------------------------------------------------------------------------- TSPLIB
def _tsplib_sections(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    spec: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line == "EOF":
            break
        head = line.split(":", 1)[0].strip()
        if head.endswith("_SECTION"):
            current = sections.setdefault(head.removesuffix("_SECTION"), [])
            rest = line[len(head) :].lstrip(" :")
            if rest:
                current.append(rest)
        elif ":" in line and not line[0].isdigit() and line[0] not in "-.":
            key, value = line.split(":", 1)
            spec[key.strip().upper()] = value.strip()
            current = None
        elif current is not None:
            current.append(line)
        else:
            raise ValueError(f"unexpected line outside a section: {line!r}")
    return spec, sections


def _explicit(fmt: str, values: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    if fmt == "FULL_MATRIX":
        return values[: n * n].reshape(n, n).astype(np.int64)
    # Row-major fill of one triangle; *_COL layouts are the transposed row layouts.
    diag = "DIAG" in fmt
    upper = fmt.startswith("UPPER")
    if fmt.endswith("_COL"):
        upper = not upper
    if upper:
        rows, cols = np.triu_indices(n, k=0 if diag else 1)
    else:
        rows, cols = np.tril_indices(n, k=0 if diag else -1)
    m[rows, cols] = values[: len(rows)]
    m[cols, rows] = values[: len(rows)]
    return m


def _geo_radians(coord: np.ndarray) -> np.ndarray:
    deg = np.trunc(coord)
    return 3.141592 * (deg + 5.0 * (coord - deg) / 3.0) / 180.0


def tsplib_matrix(spec: dict[str, str], sections: dict[str, list[str]]) -> np.ndarray:
    """The TSPLIB95 distance functions (Reinelt 1995, section 2): nint for EUC_2D, ceil for CEIL_2D, the
    pseudo-Euclidean ATT, GEO with PI=3.141592 and RRR=6378.388, and the explicit layouts."""
    n = int(spec["DIMENSION"])
    kind = spec["EDGE_WEIGHT_TYPE"].split()[0]
    if kind == "EXPLICIT":
        values = np.array(" ".join(sections["EDGE_WEIGHT"]).split(), dtype=np.float64)
        return _explicit(spec["EDGE_WEIGHT_FORMAT"].split()[0], values, n)
    rows = np.array([ln.split() for ln in sections["NODE_COORD"]], dtype=np.float64)
    xy = rows[:n, 1:3]
    dx = xy[:, None, 0] - xy[None, :, 0]
    dy = xy[:, None, 1] - xy[None, :, 1]
    if kind == "EUC_2D":
        return (np.sqrt(dx * dx + dy * dy) + 0.5).astype(np.int64)
    if kind == "CEIL_2D":
        return np.ceil(np.sqrt(dx * dx + dy * dy)).astype(np.int64)
    if kind == "ATT":
        r = np.sqrt((dx * dx + dy * dy) / 10.0)
        t = (r + 0.5).astype(np.int64)
        return np.where(t < r, t + 1, t)
    if kind == "GEO":
        lat, lng = _geo_radians(xy[:, 0]), _geo_radians(xy[:, 1])
        q1 = np.cos(lng[:, None] - lng[None, :])
        q2 = np.cos(lat[:, None] - lat[None, :])
        q3 = np.cos(lat[:, None] + lat[None, :])
        inner = np.clip(0.5 * ((1.0 + q1) * q2 - (1.0 - q1) * q3), -1.0, 1.0)
        d = (6378.388 * np.arccos(inner) + 1.0).astype(np.int64)
        np.fill_diagonal(d, 0)
        return d
    raise ValueError(f"EDGE_WEIGHT_TYPE {kind} is not supported")


def read_tsplib(path: Path) -> Problem:
    spec, sections = _tsplib_sections(path.read_text())
    matrix = tsplib_matrix(spec, sections)
    np.fill_diagonal(matrix, 0)
    n = matrix.shape[0]
    jobs = [Job(location=i) for i in range(1, n)]
    return Problem(spec.get("NAME", path.stem), matrix, matrix, jobs, [Vehicle(start=0, end=0)])


def read_tour(path: Path) -> list[int]:
    """A TSPLIB .tour file as 0-based node ids."""
    _, sections = _tsplib_sections(path.read_text())
    ids = [int(x) for x in " ".join(sections["TOUR"]).split()]
    return [i - 1 for i in ids[: ids.index(-1)]] if -1 in ids else [i - 1 for i in ids]


def tour_length(matrix: np.ndarray, tour: list[int]) -> int:
    return int(sum(matrix[a, b] for a, b in zip(tour, tour[1:] + tour[:1], strict=True)))


# --------------------------------------------------------------------------------------------- Solomon
def _solomon_header(name: str, capacity: int) -> str:
    # The set's files are Solomon's customer table without the text header (data README); put the header
    # back so vrplib's Solomon parser reads them as published.
    return (
        f"{name}\n\nVEHICLE\nNUMBER     CAPACITY\n  25         {capacity}\n\nCUSTOMER\n"
        "CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME\n\n"
    )


def read_solomon(path: Path) -> Problem:
    """Distance-only VRPTW in DIMACS units: arcs floor(10*d), times x10 (distance_min_bks.csv)."""
    lines = path.read_text().splitlines()
    capacity = int(lines[0].split()[0])
    data = parse_solomon(_solomon_header(path.stem, capacity) + "\n".join(lines[1:]))
    xy = np.asarray(data["node_coord"], dtype=np.int64)
    sq = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)
    # floor(10*sqrt(s)) == isqrt(100*s) exactly, with no floating-point edge cases.
    arcs = np.vectorize(math.isqrt, otypes=[np.int64])(100 * sq)
    tw = np.asarray(data["time_window"], dtype=np.int64) * 10
    service = np.asarray(data["service_time"], dtype=np.int64) * 10
    demand = np.asarray(data["demand"], dtype=np.int64)
    jobs = [
        Job(location=i, service=int(service[i]), windows=((int(tw[i, 0]), int(tw[i, 1])),), demand=int(demand[i]))
        for i in range(1, len(xy))
    ]
    fleet = int(data["vehicles"])
    vehicles = [Vehicle(0, 0, int(tw[0, 0]), int(tw[0, 1]), int(data["capacity"])) for _ in range(fleet)]
    return Problem(path.stem, arcs, arcs, jobs, vehicles, cost_scale=10)


# ----------------------------------------------------------------------------------------------- Dumas
def read_tsptw(path: Path) -> Problem:
    """LKH-3 TSPTW format: node 1 is the depot, FULL_MATRIX travel times, `node ready due` windows."""
    data = vrplib.read_instance(path)
    matrix = np.asarray(data["edge_weight"], dtype=np.int64)
    tw = np.asarray(data["time_window"], dtype=np.int64)
    jobs = [Job(location=i, windows=((int(tw[i, 0]), int(tw[i, 1])),)) for i in range(1, len(matrix))]
    vehicle = Vehicle(0, 0, int(tw[0, 0]), int(tw[0, 1]))
    return Problem(str(data.get("name", path.stem)), matrix, matrix, jobs, [vehicle], meta={"path": str(path)})


# ------------------------------------------------------------------------------------------ set layout
@dataclass(frozen=True)
class BenchCase:
    name: str
    path: Path
    reference: float


def detect_set(directory: Path) -> str:
    if (directory / "optima.csv").exists():
        return "tsplib"
    if (directory / "distance_min_bks.csv").exists():
        return "solomon"
    if (directory / "best_known.csv").exists() and any((directory / "instances").glob("*.tsptw")):
        return "tsptw_dumas"
    raise ValueError(
        f"{directory} is not laid out like a benchmark set: expected instances/ and one of optima.csv "
        "(tsplib), distance_min_bks.csv (solomon) or best_known.csv with *.tsptw (tsptw_dumas)"
    )


def cases(directory: Path) -> tuple[str, list[BenchCase]]:
    kind = detect_set(directory)
    inst = directory / "instances"
    out: list[BenchCase] = []
    if kind == "tsplib":
        with open(directory / "optima.csv") as fh:
            for row in csv.DictReader(fh):
                out.append(BenchCase(row["name"], inst / f"{row['name']}.tsp", float(row["optimal"])))
    elif kind == "solomon":
        with open(directory / "distance_min_bks.csv") as fh:
            for row in csv.DictReader(fh):
                out.append(
                    BenchCase(row["instance"], inst / f"{row['instance']}.txt", float(row["bks_distance_trunc1"]))
                )
    else:
        with open(directory / "best_known.csv") as fh:
            for row in csv.DictReader(fh):
                out.append(BenchCase(row["instance"], inst / f"{row['instance']}.tsptw", float(row["bks_tour_length"])))
    return kind, [c for c in out if c.path.exists()]


READERS = {"tsplib": read_tsplib, "solomon": read_solomon, "tsptw_dumas": read_tsptw}
