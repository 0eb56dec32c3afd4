"""`route_app`: bench on a directory laid out like a set, plan from a JSON file."""

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from routing.cli import route_app
from tests.shared_data import DATA  # noqa: E402  (the workplace benchmark data)

runner = CliRunner()


def small_tsplib(tmp: Path) -> Path:
    (tmp / "instances").mkdir()
    for name in ("burma14", "gr17"):
        shutil.copy(DATA / "tsplib" / "instances" / f"{name}.tsp", tmp / "instances")
    (tmp / "optima.csv").write_text(
        "name,dimension,edge_weight_type,optimal,opt_tour_file,opt_tour_length_equals_optimal\n"
        "burma14,14,GEO,3323,,\ngr17,17,EXPLICIT,2085,,\n"
    )
    return tmp


def test_bench_prints_one_json_object_per_instance_and_solver(tmp_path: Path) -> None:
    d = small_tsplib(tmp_path)
    res = runner.invoke(
        route_app, ["bench", str(d), "--time-limit", "0.5", "--json", "--solver", "lkh", "--solver", "vroom=0.3"]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith('{"name"')]
    assert [(r["name"], r["solver"]) for r in rows] == [
        ("burma14", "lkh"),
        ("burma14", "vroom"),
        ("gr17", "lkh"),
        ("gr17", "vroom"),
    ]
    lkh = [r for r in rows if r["solver"] == "lkh"]
    assert all(r["feasible"] and r["gap"] == 0.0 and r["cost"] == r["reference"] for r in lkh)
    assert {"name", "solver", "cost", "reference", "gap", "seconds", "feasible"} <= set(rows[0])


def test_bench_rejects_an_unknown_solver(tmp_path: Path) -> None:
    res = runner.invoke(route_app, ["bench", str(small_tsplib(tmp_path)), "--solver", "cplex"])
    assert res.exit_code != 0
    assert "unknown engine 'cplex'" in res.output


def test_plan_prints_the_plan_as_json(tmp_path: Path) -> None:
    req = {
        "depot": {"lat": 52.52, "lng": 13.405},
        "shift": {"start": "2024-03-12T08:00:00+01:00", "end": "2024-03-12T12:00:00+01:00"},
        "stops": [
            {"stop_id": "a", "location": {"lat": 52.53, "lng": 13.41}},
            {
                "stop_id": "b",
                "location": {"lat": 52.51, "lng": 13.39},
                "windows": [{"start": "2024-03-12T09:00:00+01:00", "end": "2024-03-12T09:30:00+01:00"}],
            },
            {
                "stop_id": "c",
                "location": {"lat": 52.50, "lng": 13.42},
                "windows": [{"start": "2024-03-12T07:00:00+01:00", "end": "2024-03-12T07:30:00+01:00"}],
            },
        ],
        "time_limit_s": 0.3,
    }
    f = tmp_path / "req.json"
    f.write_text(json.dumps(req))
    res = runner.invoke(route_app, ["plan", str(f)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [s["stop_id"] for s in out["routes"][0]["stops"]] in (["a", "b"], ["b", "a"])
    assert out["unserved"] == [{"stop_id": "c", "reason": "window_passed", "detail": out["unserved"][0]["detail"]}]


def test_plan_reports_invalid_input(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(
        json.dumps(
            {
                "depot": {"lat": 52.5, "lng": 13.4},
                "shift": {"start": "2024-03-12T08:00:00+01:00", "end": "2024-03-12T12:00:00+01:00"},
                "stops": [{"stop_id": "a", "location": {"lat": 52.5, "lng": 13.4}, "service_s": -1}],
            }
        )
    )
    res = runner.invoke(route_app, ["plan", str(f)])
    assert res.exit_code == 2
    assert "service time must be zero or positive" in res.output
