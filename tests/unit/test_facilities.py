"""The shipped US facility network and its routing (simulator/facilities.py, make_network.py)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from models.domain import FacilityType  # noqa: E402
from simulator import make_network  # noqa: E402
from simulator.facilities import (  # noqa: E402
    TWO_HUB_MIN_KM,
    Facility,
    Network,
    default_path,
    haversine_km,
    load_network,
    nearest_delivery_station,
    route,
)

# (lat_min, lat_max, lng_min, lng_max)
BOUNDS = {
    "conus": (24.4, 49.5, -125.0, -66.9),
    "alaska": (51.0, 71.5, -180.0, -129.9),
    "hawaii": (18.9, 22.3, -160.3, -154.8),
}
ID_RE = re.compile(r"^US-(HUB-[A-Z]{3}|SC-[A-Z]{3}|OR-[A-Z]{3}-\d{2}|DS-[A-Z]{3}-\d{2})$")
PREFIX = {
    "HUB": FacilityType.HUB,
    "SC": FacilityType.SORT_CENTER,
    "OR": FacilityType.ORIGIN,
    "DS": FacilityType.DELIVERY_STATION,
}


@pytest.fixture(scope="module")
def facilities() -> list[Facility]:
    return load_network()


@pytest.fixture(scope="module")
def net(facilities: list[Facility]) -> Network:
    return Network(facilities)


def _inside(f: Facility) -> str | None:
    for name, (la0, la1, lo0, lo1) in BOUNDS.items():
        if la0 <= f.lat <= la1 and lo0 <= f.lng <= lo1:
            return name
    return None


def test_network_size_and_every_type(facilities: list[Facility]) -> None:
    counts = Counter(f.type for f in facilities)
    assert 300 <= len(facilities) <= 400
    assert set(counts) == set(FacilityType)
    assert 18 <= counts[FacilityType.HUB] <= 25
    assert 35 <= counts[FacilityType.SORT_CENTER] <= 50
    assert 50 <= counts[FacilityType.ORIGIN] <= 70
    assert counts[FacilityType.DELIVERY_STATION] >= 200


def test_ids_unique_well_formed_and_match_type(facilities: list[Facility]) -> None:
    ids = [f.facility_id for f in facilities]
    assert len(ids) == len(set(ids))
    for f in facilities:
        assert ID_RE.match(f.facility_id), f.facility_id
        assert PREFIX[f.facility_id.split("-")[1]] is f.type
        assert len(f.facility_id) <= 64  # ScanEvent.facility_id limit


def test_real_hub_cities_present(net: Network) -> None:
    for code, city in [
        ("MEM", "Memphis"),
        ("SDF", "Louisville"),
        ("IND", "Indianapolis"),
        ("ORD", "Chicago"),
        ("DFW", "Dallas"),
        ("ATL", "Atlanta"),
        ("ONT", "Ontario"),
        ("EWR", "Newark"),
    ]:
        hub = net[f"US-HUB-{code}"]
        assert hub.type is FacilityType.HUB and hub.city == city


def test_coordinates_inside_us_bounds(facilities: list[Facility]) -> None:
    where = Counter(_inside(f) for f in facilities)
    assert None not in where, [f.facility_id for f in facilities if _inside(f) is None]
    assert where["alaska"] >= 2 and where["hawaii"] >= 2


def test_fields_are_plausible(facilities: list[Facility]) -> None:
    regions = {"Northeast", "Midwest", "South", "West"}
    for f in facilities:
        assert re.fullmatch(r"\d{5}", f.zip), f
        assert re.fullmatch(r"[A-Z]{2}", f.state), f
        assert f.region in regions and make_network.CENSUS_REGION[f.state] == f.region
        assert re.fullmatch(r"\d+ [A-Za-z' .-]+", f.address), f.address
        assert f.name and f.city


def test_facilities_of_one_metro_are_distinct_and_close(facilities: list[Facility]) -> None:
    by_metro: dict[tuple[str, str], list[Facility]] = {}
    for f in facilities:
        if f.type is not FacilityType.HUB:
            by_metro.setdefault((f.city, f.state), []).append(f)
    for fs in by_metro.values():
        coords = {(f.lat, f.lng) for f in fs}
        assert len(coords) == len(fs)
        for a in fs:
            for b in fs:
                assert haversine_km(a.lat, a.lng, b.lat, b.lng) < 40


def test_csv_is_what_the_generator_writes() -> None:
    assert default_path().read_text() == make_network.render_csv(make_network.build_rows())
    assert make_network.build_rows() == make_network.build_rows()


def test_generator_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "net.csv"
    make_network.main(["--out", str(out)])
    assert load_network(out) == load_network()


def test_load_network_reports_bad_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(make_network.COLUMNS) + "\nUS-HUB-XXX,X,1 A Rd,X,TX,75001,north,-97,hub,South\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        load_network(bad)


def test_haversine_known_distances() -> None:
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, rel=0.01)  # NYC-LA
    assert haversine_km(35.0424, -89.9767, 38.1744, -85.7360) == pytest.approx(510, rel=0.03)  # MEM-SDF
    assert haversine_km(10, 20, 10, 20) == 0


def test_nearest_delivery_station(net: Network, facilities: list[Facility]) -> None:
    for ds in net.of_type(FacilityType.DELIVERY_STATION)[::17]:
        assert net.nearest_delivery_station(ds.lat, ds.lng) == ds
    assert nearest_delivery_station(facilities, 47.6097, -122.3331).facility_id == "US-DS-SEA-01"
    assert nearest_delivery_station(net, 21.30, -157.85).state == "HI"
    assert nearest_delivery_station(net, 64.84, -147.72).facility_id == "US-DS-FAI-01"


def _check_route(path: list[Facility], origin: Facility, dest: Facility) -> None:
    types = [f.type for f in path]
    assert path[0] == origin and path[-1] == dest
    assert types[0] is FacilityType.ORIGIN and types[-1] is FacilityType.DELIVERY_STATION
    assert types[1] is FacilityType.SORT_CENTER and types[-2] is FacilityType.SORT_CENTER
    assert all(t is FacilityType.HUB for t in types[2:-2])
    assert len(path) in (3, 5, 6)
    assert all(a != b for a, b in zip(path, path[1:], strict=False))


def test_every_route_goes_origin_sort_hubs_sort_station(net: Network) -> None:
    origins = net.of_type(FacilityType.ORIGIN)
    stations = net.of_type(FacilityType.DELIVERY_STATION)
    lengths: Counter[int] = Counter()
    for i, o in enumerate(origins):
        for d in stations[i % 7 :: 7]:
            path = list(net.route(o, d))
            _check_route(path, o, d)
            lengths[len(path)] += 1
            sc_a, sc_b = path[1], path[-2]
            assert sc_a == net.nearest(o.lat, o.lng, FacilityType.SORT_CENTER)
            assert sc_b == net.nearest(d.lat, d.lng, FacilityType.SORT_CENTER)
    assert lengths[3] and lengths[5] and lengths[6]  # local, one hub, two hubs all occur


def test_route_shapes(net: Network, facilities: list[Facility]) -> None:
    local = route(facilities, "US-OR-SEA-01", "US-DS-SEA-02")
    assert [f.facility_id for f in local] == ["US-OR-SEA-01", "US-SC-SEA", "US-DS-SEA-02"]
    cross = route(net, "US-OR-NYC-01", "US-DS-LAX-01")
    assert [f.type for f in cross][2:4] == [FacilityType.HUB, FacilityType.HUB]
    assert net.distance_km(cross[1], cross[-2]) > TWO_HUB_MIN_KM
    to_hawaii = route(net, "US-OR-SFO-01", "US-DS-ITO-01")
    assert to_hawaii[-2].facility_id == "US-SC-HNL"


def test_route_rejects_wrong_ends(net: Network) -> None:
    with pytest.raises(ValueError, match="origin"):
        net.route("US-HUB-MEM", "US-DS-SEA-01")
    with pytest.raises(ValueError, match="delivery station"):
        net.route("US-OR-SEA-01", "US-SC-SEA")
    with pytest.raises(KeyError):
        net.route("US-OR-NOPE-01", "US-DS-SEA-01")


def test_facility_code_and_lookup(net: Network) -> None:
    assert net["US-DS-SEA-03"].code == "SEA03"
    assert net["US-HUB-MEM"].code == "MEM"
    assert "US-HUB-MEM" in net and "US-HUB-XYZ" not in net
    assert net.get("US-HUB-XYZ") is None
    assert len(net) == len(list(net))
