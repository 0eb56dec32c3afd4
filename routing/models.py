"""The planner's contract: a depot, a shift, stops and drivers in (PlanRequest); per-driver ordered
stops with planned times, and every unserved stop with its reason, out (Plan).

Times are timezone-aware datetimes at the edge; the planner works in whole seconds from the shift start.
Bad input is rejected here with the field and the reason in the message, before any solver runs.
"""

from __future__ import annotations

import enum
import math
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.domain import Location


def _zoned(v: datetime, what: str) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError(f"{what} must carry a time zone (RFC 3339)")
    return v


class GeoPoint(Location):
    """A WGS84 point (the domain's Location), refusing NaN, infinity and the 0,0 placeholder."""

    @model_validator(mode="after")
    def _real(self) -> GeoPoint:
        if not (math.isfinite(self.lat) and math.isfinite(self.lng)):
            raise ValueError("coordinates must be finite numbers")
        if self.lat == 0 and self.lng == 0:
            raise ValueError("coordinates 0,0 are a missing-geocode placeholder, not a delivery address")
        return self


class TimeWindow(BaseModel):
    """Service must start inside [start, end]. Soft: may start later, at `late_penalty_per_minute`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: datetime
    end: datetime
    soft: bool = False

    @field_validator("start", "end")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _zoned(v, "window times")

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end < self.start:
            raise ValueError(f"window end {self.end.isoformat()} is before its start {self.start.isoformat()}")
        return self


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stop_id: str = Field(min_length=1, max_length=128)
    location: GeoPoint
    service_s: int = Field(default=120, description="Seconds on site")
    windows: list[TimeWindow] = Field(default_factory=list, description="Any one of them; empty: any time")
    late_penalty_per_minute: float = Field(default=1.0, ge=0, description="Cost of one minute late (soft windows)")
    demand: int = Field(default=1, ge=0, description="Capacity units (parcels, kg, ...)")
    shipment_id: str | None = None

    @field_validator("service_s")
    @classmethod
    def _service(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"service time must be zero or positive, got {v} s")
        return v

    @model_validator(mode="after")
    def _windows(self) -> StopIn:
        ws = sorted(self.windows, key=lambda w: w.start)
        for a, b in zip(ws, ws[1:], strict=False):
            if b.start <= a.end:
                raise ValueError(
                    f"stop {self.stop_id}: windows overlap ({a.start.isoformat()} and {b.start.isoformat()})"
                )
        if len({w.soft for w in ws}) > 1:
            raise ValueError(f"stop {self.stop_id}: mix of soft and hard windows; make them all one kind")
        object.__setattr__(self, "windows", ws)
        return self


class Position(BaseModel):
    """Where a driver is now (re-planning): location and time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    location: GeoPoint
    at: datetime

    @field_validator("at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _zoned(v, "position time")


class DriverIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    driver_id: str = Field(min_length=1, max_length=64)
    capacity: int | None = Field(default=None, ge=0, description="None: unlimited")
    shift_start: datetime | None = None  # default: the request's shift
    shift_end: datetime | None = None
    start: GeoPoint | None = None  # default: the depot
    end: GeoPoint | None = None
    # Re-planning: stops already served, in order (kept fixed, never re-sequenced), and where the driver
    # is now. Without `position` the driver is at the last visited stop when the request is made.
    visited: list[str] = Field(default_factory=list)
    position: Position | None = None

    @field_validator("shift_start", "shift_end")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _zoned(v, "shift times")


class Shift(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: datetime
    end: datetime

    @field_validator("start", "end")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _zoned(v, "shift times")

    @model_validator(mode="after")
    def _ordered(self) -> Shift:
        if self.end <= self.start:
            raise ValueError(f"shift end {self.end.isoformat()} is not after its start {self.start.isoformat()}")
        if self.end - self.start > timedelta(hours=24):
            raise ValueError("a shift longer than 24 h is not a shift")
        return self


class SpeedProfile(BaseModel):
    """Haversine distance times a detour factor, driven at a speed that depends on the hour of day."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default_kmh: float = Field(default=30.0, gt=0)
    # Hour (0-23, local to the shift start) -> km/h; hours not listed use default_kmh.
    by_hour: dict[int, float] = Field(default_factory=dict)
    detour_factor: float = Field(default=1.3, ge=1.0, description="Road distance / straight-line distance")

    @field_validator("by_hour")
    @classmethod
    def _hours(cls, v: dict[int, float]) -> dict[int, float]:
        for h, kmh in v.items():
            if not 0 <= h <= 23 or kmh <= 0:
                raise ValueError(f"by_hour needs hours 0-23 and positive speeds, got {h}: {kmh}")
        return v


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    depot: GeoPoint
    shift: Shift
    stops: list[StopIn] = Field(min_length=1)
    drivers: list[DriverIn] = Field(default_factory=lambda: [DriverIn(driver_id="driver-1")], min_length=1)
    speed: SpeedProfile = Field(default_factory=SpeedProfile)
    time_limit_s: float = Field(default=5.0, gt=0, le=600)
    engine: str | None = Field(default=None, description="Force an engine; default: chosen by problem kind")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> PlanRequest:
        ids = [s.stop_id for s in self.stops]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate stop_id: {', '.join(sorted(dup))}")
        dids = [d.driver_id for d in self.drivers]
        if len(set(dids)) != len(dids):
            raise ValueError("duplicate driver_id")
        known = set(ids)
        seen: set[str] = set()
        for d in self.drivers:
            for v in d.visited:
                if v not in known:
                    raise ValueError(f"driver {d.driver_id}: visited stop {v!r} is not in stops")
                if v in seen:
                    raise ValueError(f"stop {v!r} is marked visited twice")
                seen.add(v)
            s0, s1 = d.shift_start or self.shift.start, d.shift_end or self.shift.end
            if s1 <= s0:
                raise ValueError(f"driver {d.driver_id}: shift end is not after its start")
        return self


class UnservedReason(enum.StrEnum):
    WINDOW_PASSED = "window_passed"  # every window closes before any driver can get there
    CAPACITY = "capacity"  # fits in time, not in any vehicle
    SHIFT_LENGTH = "shift_length"  # cannot be served and the driver back before the shift ends
    UNREACHABLE = "unreachable"  # the travel matrix has no path to or from it
    WINDOW_CONFLICT = "window_conflict"  # reachable alone, but its window collides with the served stops'


class PlannedStop(BaseModel):
    stop_id: str
    sequence: int  # 1-based, visited stops included
    arrival: datetime
    service_start: datetime
    departure: datetime
    late_minutes: float = 0.0
    visited: bool = False  # served before this (re-)plan: fixed


class DriverPlan(BaseModel):
    driver_id: str
    stops: list[PlannedStop]
    departure: datetime
    return_time: datetime
    travel_s: int
    load: int


class UnservedStop(BaseModel):
    stop_id: str
    reason: UnservedReason
    detail: str


class Plan(BaseModel):
    routes: list[DriverPlan]
    unserved: list[UnservedStop]
    engine: str
    objective: float  # travel seconds + lateness penalties, as planned
    solve_seconds: float
