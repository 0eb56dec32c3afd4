"""Travel matrices: points in, travel seconds between every pair out (inf where there is no path).

The planner only calls `TravelMatrix.seconds`; the default is straight-line distance with a detour factor
and a speed profile. A road-network matrix (OSRM, Valhalla, a precomputed table) plugs in behind the same
method later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from routing.models import GeoPoint, SpeedProfile

EARTH_RADIUS_M = 6_371_000.0


class TravelMatrix(Protocol):
    def seconds(self, points: Sequence[GeoPoint], start: datetime, end: datetime) -> np.ndarray:
        """n x n travel seconds for a day from `start` to `end`; np.inf marks an unreachable pair."""


def haversine_m(points: Sequence[GeoPoint]) -> np.ndarray:
    lat = np.radians([p.lat for p in points])
    lng = np.radians([p.lng for p in points])
    dlat = lat[:, None] - lat[None, :]
    dlng = lng[:, None] - lng[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


class HaversineMatrix:
    """Great-circle metres x detour factor at the profile's speed.

    The solvers take one static matrix, so an hourly profile becomes one effective speed: the harmonic mean
    of the hourly speeds over the shift (the speed that gives the same time for the same distance spread
    evenly over those hours).
    """

    def __init__(self, profile: SpeedProfile | None = None) -> None:
        self.profile = profile or SpeedProfile()

    def effective_kmh(self, start: datetime, end: datetime) -> float:
        p = self.profile
        if not p.by_hour:
            return p.default_kmh
        hours = max(1, int((end - start).total_seconds() // 3600))
        speeds = [p.by_hour.get((start + timedelta(hours=h)).hour, p.default_kmh) for h in range(hours)]
        return len(speeds) / sum(1.0 / s for s in speeds)

    def seconds(self, points: Sequence[GeoPoint], start: datetime, end: datetime) -> np.ndarray:
        metres = haversine_m(points) * self.profile.detour_factor
        return metres / (self.effective_kmh(start, end) / 3.6)


class FixedMatrix:
    """A precomputed table in the order the points are given (tests, or a road matrix fetched elsewhere)."""

    def __init__(self, seconds: np.ndarray) -> None:
        self._seconds = np.asarray(seconds, dtype=float)

    def seconds(self, points: Sequence[GeoPoint], start: datetime, end: datetime) -> np.ndarray:
        if self._seconds.shape != (len(points), len(points)):
            raise ValueError(f"matrix is {self._seconds.shape}, the plan has {len(points)} points")
        return self._seconds
