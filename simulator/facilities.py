"""The facility network: config/facilities/us_network.csv in, Facility records and routes out.

Route rule: origin facility → its nearest sort center → hub(s) → the destination's nearest sort
center → delivery station. Two facilities served by the same sort center skip the hubs; short
trips use the one hub with the smallest detour, long ones the hub nearest each end.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from models.domain import Facility as DomainFacility
from models.domain import FacilityType

EARTH_RADIUS_KM = 6371.0088
# Above this sort-center-to-sort-center distance a parcel crosses two hubs (one near each end).
TWO_HUB_MIN_KM = 800.0


@dataclass(frozen=True, slots=True)
class Facility:
    facility_id: str
    name: str
    address: str
    city: str
    state: str
    zip: str
    lat: float
    lng: float
    type: FacilityType
    region: str

    def to_domain(self) -> DomainFacility:
        """The pipeline's view of this facility (models.domain.Facility)."""
        return DomainFacility(
            facility_id=self.facility_id,
            name=self.name,
            city=self.city,
            type=self.type,
            lat=self.lat,
            lng=self.lng,
        )

    @property
    def code(self) -> str:
        """Short form used in driver and route ids: US-DS-SEA-03 → SEA03, US-HUB-MEM → MEM."""
        parts = self.facility_id.split("-")
        return "".join(parts[2:]) if len(parts) > 2 else self.facility_id


def default_path() -> Path:
    return Path(str(resources.files("config.facilities").joinpath("us_network.csv")))


def load_network(path: str | Path | None = None) -> list[Facility]:
    """All facilities of the CSV (default: config/facilities/us_network.csv), in file order."""
    src = Path(path) if path is not None else default_path()
    out: list[Facility] = []
    with src.open(newline="") as fh:
        for lineno, rec in enumerate(csv.DictReader(fh), start=2):
            try:
                out.append(
                    Facility(
                        facility_id=rec["facility_id"],
                        name=rec["name"],
                        address=rec["address"],
                        city=rec["city"],
                        state=rec["state"],
                        zip=rec["zip"],
                        lat=float(rec["lat"]),
                        lng=float(rec["lng"]),
                        type=FacilityType(rec["type"]),
                        region=rec["region"],
                    )
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{src}:{lineno}: bad facility row ({exc})") from None
    return out


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _haversine_many(lat: float, lng: float, lats: np.ndarray, lngs: np.ndarray) -> np.ndarray:
    p1, p2 = math.radians(lat), np.radians(lats)
    dp, dl = p2 - p1, np.radians(lngs - lng)
    a = np.sin(dp / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


class Network:
    """Facilities indexed by id and type, with nearest-facility lookups and routing."""

    def __init__(self, facilities: Iterable[Facility]):
        self.facilities: tuple[Facility, ...] = tuple(facilities)
        self._by_id = {f.facility_id: f for f in self.facilities}
        if len(self._by_id) != len(self.facilities):
            raise ValueError("duplicate facility_id in network")
        self._by_type: dict[FacilityType, tuple[Facility, ...]] = {
            t: tuple(f for f in self.facilities if f.type is t) for t in FacilityType
        }
        self._coords = {
            t: (np.array([f.lat for f in fs]), np.array([f.lng for f in fs])) for t, fs in self._by_type.items()
        }
        self._route_cache: dict[tuple[str, str], tuple[Facility, ...]] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Network:
        return cls(load_network(path))

    def __len__(self) -> int:
        return len(self.facilities)

    def __iter__(self) -> Iterator[Facility]:
        return iter(self.facilities)

    def __contains__(self, facility_id: object) -> bool:
        return facility_id in self._by_id

    def __getitem__(self, facility_id: str) -> Facility:
        try:
            return self._by_id[facility_id]
        except KeyError:
            raise KeyError(f"unknown facility {facility_id!r}") from None

    def get(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

    def of_type(self, kind: FacilityType | str) -> tuple[Facility, ...]:
        return self._by_type[FacilityType(kind)]

    def nearest(self, lat: float, lng: float, kind: FacilityType | str) -> Facility:
        kind = FacilityType(kind)
        candidates = self._by_type[kind]
        if not candidates:
            raise LookupError(f"network has no {kind} facility")
        lats, lngs = self._coords[kind]
        return candidates[int(np.argmin(_haversine_many(lat, lng, lats, lngs)))]

    def nearest_delivery_station(self, lat: float, lng: float) -> Facility:
        return self.nearest(lat, lng, FacilityType.DELIVERY_STATION)

    def distance_km(self, a: Facility | str, b: Facility | str) -> float:
        fa = a if isinstance(a, Facility) else self[a]
        fb = b if isinstance(b, Facility) else self[b]
        return haversine_km(fa.lat, fa.lng, fb.lat, fb.lng)

    def route(self, origin: Facility | str, destination: Facility | str) -> tuple[Facility, ...]:
        """Facilities a parcel passes: origin, sort center, hub(s), sort center, delivery station."""
        o = origin if isinstance(origin, Facility) else self[origin]
        d = destination if isinstance(destination, Facility) else self[destination]
        key = (o.facility_id, d.facility_id)
        cached = self._route_cache.get(key)
        if cached is None:
            cached = self._route_cache[key] = self._route(o, d)
        return cached

    def _route(self, o: Facility, d: Facility) -> tuple[Facility, ...]:
        if o.type is not FacilityType.ORIGIN:
            raise ValueError(f"route must start at an origin facility, got {o.facility_id} ({o.type})")
        if d.type is not FacilityType.DELIVERY_STATION:
            raise ValueError(f"route must end at a delivery station, got {d.facility_id} ({d.type})")
        sc_a = self.nearest(o.lat, o.lng, FacilityType.SORT_CENTER)
        sc_b = self.nearest(d.lat, d.lng, FacilityType.SORT_CENTER)
        if sc_a == sc_b:
            return (o, sc_a, d)
        hub_a = self.nearest(sc_a.lat, sc_a.lng, FacilityType.HUB)
        hub_b = self.nearest(sc_b.lat, sc_b.lng, FacilityType.HUB)
        if hub_a != hub_b and self.distance_km(sc_a, sc_b) > TWO_HUB_MIN_KM:
            return (o, sc_a, hub_a, hub_b, sc_b, d)
        hub = min(
            self.of_type(FacilityType.HUB),
            key=lambda h: self.distance_km(sc_a, h) + self.distance_km(h, sc_b),
        )
        return (o, sc_a, hub, sc_b, d)


def _as_network(facilities: Network | Sequence[Facility]) -> Network:
    return facilities if isinstance(facilities, Network) else Network(facilities)


def nearest_delivery_station(facilities: Network | Sequence[Facility], lat: float, lng: float) -> Facility:
    """Pass a Network for repeated calls; a plain list is indexed on every call."""
    return _as_network(facilities).nearest_delivery_station(lat, lng)


def route(
    facilities: Network | Sequence[Facility], origin: Facility | str, destination: Facility | str
) -> list[Facility]:
    """origin → sort center → hub(s) → sort center → delivery station (see the module docstring)."""
    return list(_as_network(facilities).route(origin, destination))


@lru_cache(maxsize=4)
def default_network(path: str | None = None) -> Network:
    """The shipped network, loaded once per process."""
    return Network.load(path)
