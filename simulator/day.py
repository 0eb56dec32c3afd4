"""A day of scan traffic: shipments and knobs in; time-ordered `scan-events` messages and the exact
outcome the scan pipeline must reach for them out.

Pure and deterministic from `DayKnobs.seed`: no clock, no I/O. Journeys are built with the domain's
TARGET_STATUS/ALLOWED tables and AttemptPolicy (models/domain.py), so a generated "valid" scan is
legal by construction, and the faults injected around them (duplicates, invalid transitions,
malformed messages) are placed where their expected dead-letter reason is unambiguous.
"""

from __future__ import annotations

import base64
import math
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.domain import (
    ALLOWED,
    TARGET_STATUS,
    TERMINAL,
    AttemptPolicy,
    EventType,
    FacilityType,
    ReasonCode,
    ScanEvent,
    ServiceLevel,
    Status,
    is_allowed,
)
from simulator.facilities import Facility, Network, haversine_km

Kind = Literal["valid", "duplicate", "invalid_transition", "malformed"]
KINDS: tuple[Kind, ...] = ("valid", "duplicate", "invalid_transition", "malformed")

# Dead-letter reasons this module predicts (DESIGN.md section 3; snake_case).
MALFORMED_JSON = "malformed_json"
INVALID_PAYLOAD = "invalid_payload"
OVERSIZED_PAYLOAD = "oversized_payload"
UNKNOWN_FACILITY = "unknown_facility"
TIME_IN_FUTURE = "time_in_future"
INVALID_TRANSITION = "invalid_transition"
MISSING_REASON_CODE = "missing_reason_code"
MALFORMED_REASONS = (
    MALFORMED_JSON,
    INVALID_PAYLOAD,
    MISSING_REASON_CODE,
    UNKNOWN_FACILITY,
    TIME_IN_FUTURE,
    OVERSIZED_PAYLOAD,
)

MAX_PAYLOAD_BYTES = 64 * 1024  # larger values are `oversized_payload`
FUTURE_MIN = timedelta(days=1, hours=1)  # a time_in_future scan is at least this far past the day
FUTURE_MAX = timedelta(days=30)


# --------------------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True, slots=True)
class SimShipment:
    shipment_id: str
    tracking_number: str
    service_level: ServiceLevel
    origin_facility_id: str
    destination_facility_id: str  # a delivery station
    recipient_lat: float
    recipient_lng: float
    created_at: datetime  # label time, zoned

    @classmethod
    def coerce(cls, obj: SimShipment | Mapping[str, Any]) -> SimShipment:
        """Accepts a SimShipment or a mapping with the same field names (ISO strings allowed)."""
        if isinstance(obj, SimShipment):
            sh = obj
        else:
            created = obj["created_at"]
            if isinstance(created, str):
                created = datetime.fromisoformat(created.replace("Z", "+00:00"))
            sh = cls(
                shipment_id=str(obj["shipment_id"]),
                tracking_number=str(obj["tracking_number"]),
                service_level=ServiceLevel(obj["service_level"]),
                origin_facility_id=str(obj["origin_facility_id"]),
                destination_facility_id=str(obj["destination_facility_id"]),
                recipient_lat=float(obj["recipient_lat"]),
                recipient_lng=float(obj["recipient_lng"]),
                created_at=created,
            )
        if sh.created_at.tzinfo is None or sh.created_at.utcoffset() is None:
            raise ValueError(f"shipment {sh.shipment_id}: created_at must carry a time zone")
        return sh


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka record for `scan-events`, with what the pipeline is expected to do with it."""

    key: bytes | None
    value: bytes
    kind: Kind
    expected_reason: str | None  # dead-letter reason for invalid_transition/malformed, else None
    at: datetime | None = None  # when the device sends it (the sort key of the day)
    shipment_id: str | None = None
    event_id: str | None = None
    event_type: str | None = None


class Outcome(NamedTuple):
    """Where a shipment must end: compares equal to a plain (status, attempt_count) tuple."""

    status: Status | None  # None only if the label was never created (emit_label_created + `until`)
    attempt_count: int


class DayKnobs(BaseModel):
    """What kind of day to simulate. Shares of shipments unless said otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    # The simulated clock: the earliest shipment created_at is mapped to `start` (default: itself),
    # then time runs `speedup` times faster, so scan time = start + (t - first_label) / speedup.
    start: datetime | None = None
    speedup: float = Field(default=1.0, gt=0)
    # Shipments with an operational EXCEPTION (weather, breakdown, damage, missort, address check).
    exception_share: float = Field(default=0.05, ge=0, le=1)
    # Shipments with at least one counted failed delivery attempt ...
    failed_attempt_share: float = Field(default=0.08, ge=0, le=1)
    # ... of which this share of all shipments reaches policy.max_attempts (pipeline returns them).
    return_share: float = Field(default=0.02, ge=0, le=1)
    # Shares of all emitted messages.
    duplicate_share: float = Field(default=0.02, ge=0, le=0.5)
    invalid_transition_share: float = Field(default=0.01, ge=0, le=0.5)
    malformed_share: float = Field(default=0.01, ge=0, le=0.5)
    # Relative weights of malformed reasons (keys from MALFORMED_REASONS).
    malformed_mix: dict[str, float] = Field(
        default_factory=lambda: {
            MALFORMED_JSON: 0.25,
            INVALID_PAYLOAD: 0.30,
            MISSING_REASON_CODE: 0.10,
            UNKNOWN_FACILITY: 0.15,
            TIME_IN_FUTURE: 0.10,
            OVERSIZED_PAYLOAD: 0.10,
        }
    )
    emit_label_created: bool = False  # normally the label API emits LABEL_CREATED, not scanners
    # Wall clock at which the pipeline will read the day: time_in_future scans are stamped at least
    # a day after max(now, the day's last scan). Pass it when the day ends before the real now.
    now: datetime | None = None
    until: datetime | None = None  # drop messages sent at or after this (scan-time) instant
    policy: AttemptPolicy = Field(default_factory=AttemptPolicy)

    @field_validator("start", "now", "until")
    @classmethod
    def _zoned(cls, v: datetime | None) -> datetime | None:
        if v is not None and (v.tzinfo is None or v.utcoffset() is None):
            raise ValueError("must carry a time zone")
        return v

    @field_validator("malformed_mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(MALFORMED_REASONS)
        if unknown:
            raise ValueError(f"unknown malformed reasons {sorted(unknown)}; known: {MALFORMED_REASONS}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v

    @model_validator(mode="after")
    def _shares(self) -> DayKnobs:
        if self.return_share > self.failed_attempt_share:
            raise ValueError("return_share must not exceed failed_attempt_share")
        if self.duplicate_share + self.invalid_transition_share + self.malformed_share >= 0.9:
            raise ValueError("duplicate + invalid_transition + malformed shares must stay below 0.9")
        return self


@dataclass(slots=True)
class SimDay:
    shipments: list[SimShipment]  # as given, with created_at moved onto the day's clock
    knobs: DayKnobs
    messages: list[SimMessage]
    expected: dict[str, Outcome]  # per shipment_id: final status and counted attempts
    accepted_counts: dict[str, int]  # per shipment_id: scans the pipeline must accept
    kinds: dict[str, int] = field(default_factory=dict)  # messages per kind
    reasons: dict[str, int] = field(default_factory=dict)  # rejects per expected dead-letter reason

    def expected_final(self, shipments: Iterable[SimShipment | str] | None = None) -> dict[str, Outcome]:
        if shipments is None:
            return dict(self.expected)
        ids = [s.shipment_id if isinstance(s, SimShipment) else str(s) for s in shipments]
        return {i: self.expected[i] for i in ids}

    @property
    def first_at(self) -> datetime | None:
        return self.messages[0].at if self.messages else None

    @property
    def last_at(self) -> datetime | None:
        return self.messages[-1].at if self.messages else None


# --------------------------------------------------------------------------------------------------
# Replaying the valid messages: the expected outcome


@lru_cache(maxsize=256)
def _probe(event_type: EventType, reason_code: str | None) -> ScanEvent:
    """A stand-in scan carrying what AttemptPolicy.counts reads (type and reason), cached."""
    return ScanEvent.model_construct(
        event_type=event_type, reason_code=ReasonCode(reason_code) if reason_code else None
    )


def _replay(
    shipment_ids: Iterable[str],
    messages: Iterable[SimMessage],
    policy: AttemptPolicy,
    initial: Status | None,
    validate: bool,
) -> tuple[dict[str, Outcome], dict[str, int]]:
    status: dict[str, Status | None] = {sid: initial for sid in shipment_ids}
    attempts = dict.fromkeys(status, 0)
    accepted = dict.fromkeys(status, 0)
    seen: set[str] = set()
    for m in messages:
        if m.kind != "valid":
            continue  # duplicates are dropped, the rest dead-lettered: neither moves the state
        if validate:
            ev = ScanEvent.model_validate_json(m.value)
            sid, eid, et, probe = str(ev.shipment_id), str(ev.event_id), ev.event_type, ev
        else:
            d = orjson.loads(m.value)
            sid, eid, et = d["shipment_id"], d["event_id"], EventType(d["event_type"])
            probe = _probe(et, d.get("reason_code"))
        if eid in seen:
            raise AssertionError(f"message labelled valid repeats event_id {eid}")
        seen.add(eid)
        if sid not in status:
            status[sid], attempts[sid], accepted[sid] = initial, 0, 0
        current = status[sid]
        target = TARGET_STATUS[et]
        if current is None:
            ok = et is EventType.LABEL_CREATED
        else:
            ok = is_allowed(current, target)
        if not ok:
            raise AssertionError(f"message labelled valid is illegal: {sid} {current} -> {target}")
        if current is not None and policy.counts(current, probe):
            attempts[sid] += 1
        new = target
        # The pipeline itself returns the shipment on the counted attempt that reaches the limit.
        if attempts[sid] >= policy.max_attempts and new not in TERMINAL:
            if not is_allowed(new, Status.RETURN_TO_SENDER):
                raise AssertionError(f"{sid}: cannot return from {new}")
            new = Status.RETURN_TO_SENDER
        status[sid] = new
        accepted[sid] += 1
    return {sid: Outcome(status[sid], attempts[sid]) for sid in status}, accepted


def expected_final(
    shipments: Iterable[SimShipment | str],
    messages: Iterable[SimMessage],
    *,
    policy: AttemptPolicy | None = None,
    initial: Status | None = Status.LABEL_CREATED,
    validate: bool = True,
) -> dict[str, Outcome]:
    """Final (status, attempt_count) per shipment after the pipeline consumed `messages`.

    Replays the messages labelled "valid" in order through TARGET_STATUS/ALLOWED and `policy`
    (default AttemptPolicy()); `initial` is the status the label API left (None when the day itself
    carries LABEL_CREATED). Raises AssertionError if a "valid" message is not legal.
    """
    ids = [s.shipment_id if isinstance(s, SimShipment) else str(s) for s in shipments]
    outcomes, _ = _replay(ids, messages, policy or AttemptPolicy(), initial, validate)
    return outcomes


def accepted_counts(
    shipments: Iterable[SimShipment | str],
    messages: Iterable[SimMessage],
    *,
    policy: AttemptPolicy | None = None,
    initial: Status | None = Status.LABEL_CREATED,
) -> dict[str, int]:
    """Scans the pipeline must accept per shipment (the automatic return is not a scan)."""
    ids = [s.shipment_id if isinstance(s, SimShipment) else str(s) for s in shipments]
    _, counts = _replay(ids, messages, policy or AttemptPolicy(), initial, validate=False)
    return counts


# --------------------------------------------------------------------------------------------------
# Journey model


@dataclass(frozen=True, slots=True)
class _Profile:
    pickup_h: tuple[float, float]
    dwell_h: Mapping[FacilityType, tuple[float, float]]
    truck_kmh: float
    air_min_km: float | None  # legs at least this long fly; None: ground only
    ofd_local_h: tuple[float, float]  # local clock window in which the vans leave
    late_wave_h: float | None  # a later van takes parcels that arrive before this local hour
    deliver_h: tuple[float, float]  # from OUT_FOR_DELIVERY to the stop
    sunday: bool  # delivers on Sundays


_O, _H, _S = FacilityType.ORIGIN, FacilityType.HUB, FacilityType.SORT_CENTER
PROFILES: dict[ServiceLevel, _Profile] = {
    ServiceLevel.OVERNIGHT: _Profile((1, 4), {_O: (0.5, 1.0), _S: (0.5, 1.0), _H: (0.75, 1.5)}, 75, 300,
                                     (6.5, 8.0), 11.0, (0.5, 3.0), True),
    ServiceLevel.EXPRESS: _Profile((1, 5), {_O: (1, 3), _S: (1, 3), _H: (1.5, 4)}, 70, 700,
                                   (7.0, 9.0), 10.0, (1, 6), False),
    ServiceLevel.STANDARD: _Profile((2, 8), {_O: (1, 4), _S: (2, 6), _H: (3, 8)}, 65, None,
                                    (7.5, 9.5), None, (1, 9), False),
    ServiceLevel.ECONOMY: _Profile((4, 24), {_O: (4, 12), _S: (6, 18), _H: (8, 24)}, 55, None,
                                   (8.0, 10.0), None, (1, 9), False),
}  # fmt: skip

_OFFSHORE = frozenset({"AK", "HI"})  # no trucks to or from these states

# (weight, value) tables
_EXC_PHASE = ((0.60, "transit"), (0.15, "station"), (0.25, "ofd"))
_TRANSIT_REASONS = (
    (0.35, ReasonCode.WEATHER_DELAY),
    (0.20, ReasonCode.VEHICLE_BREAKDOWN),
    (0.20, ReasonCode.DAMAGED),
    (0.25, ReasonCode.MISSORTED),
)
_TRANSIT_DELAY_H = {
    ReasonCode.WEATHER_DELAY: (6, 30),
    ReasonCode.VEHICLE_BREAKDOWN: (3, 10),
    ReasonCode.DAMAGED: (4, 16),
}
_STATION_REASONS = ((0.7, ReasonCode.ADDRESS_NOT_FOUND), (0.3, ReasonCode.DAMAGED))
_OFD_REASONS = ((0.5, ReasonCode.WEATHER_DELAY), (0.5, ReasonCode.VEHICLE_BREAKDOWN))
_FAILURE_REASONS = (
    (0.55, ReasonCode.RECIPIENT_UNAVAILABLE),
    (0.20, ReasonCode.ACCESS_DENIED),
    (0.15, ReasonCode.ADDRESS_NOT_FOUND),
    (0.10, ReasonCode.REFUSED),
)
_FAILURE_AS_EXCEPTION = 0.2  # failed stops reported as EXCEPTION while out for delivery


def _pick(rng: random.Random, table: Sequence[tuple[float, Any]]) -> Any:
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hours(rng: random.Random, lo_hi: tuple[float, float]) -> timedelta:
    return timedelta(hours=rng.uniform(*lo_hi))


def _local_offset(lng: float) -> timedelta:
    # Mean solar time zone (Eastern -5 ... Hawaii -10); good enough for "vans leave in the morning".
    return timedelta(hours=round(lng / 15.0))


class _At:
    """created_at placeholder: the message's own send time, known after the clock is mapped."""


class _Future:
    def __init__(self, offset: timedelta):
        self.offset = offset


class _Naive:
    """created_at placeholder: the send time without a zone (invalid_payload)."""


_AT = _At()


@dataclass(slots=True)
class _Draft:
    t: datetime  # simulation time, before the start/speedup mapping
    seq: int
    key: bytes | None
    kind: Kind
    reason: str | None
    shipment_id: str | None
    payload: dict[str, Any] | None  # the JSON object; created_at holds a placeholder
    render: Callable[[bytes], bytes] | None = None  # turns the JSON bytes into a malformed value
    dup_of: _Draft | None = None
    at: datetime | None = None
    value: bytes | None = None


@dataclass(slots=True)
class _Valid:
    draft: _Draft
    status_after: Status
    facility: Facility | None


@dataclass(slots=True)
class _Journey:
    shipment: SimShipment
    route: tuple[Facility, ...]
    initial: Status | None
    events: list[_Valid] = field(default_factory=list)
    attempts: int = 0

    @property
    def status(self) -> Status | None:
        return self.events[-1].status_after if self.events else self.initial


class _Builder:
    """Builds every draft of the day; one instance per generate_day call."""

    def __init__(self, network: Network, knobs: DayKnobs, rng: random.Random):
        self.net = network
        self.knobs = knobs
        self.policy = knobs.policy
        self.rng = rng
        self.seq = 0
        self.drafts: list[_Draft] = []
        self._wrong_sc: dict[str, Facility] = {}

    # -- small helpers

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _device(self, facility: Facility) -> str:
        return f"SCN-{facility.code}-{self.rng.randint(1, 24):02d}"

    def _facility_location(self, f: Facility) -> dict[str, float] | None:
        if self.rng.random() < 0.1:
            return None  # fixed scanners without GPS
        return {"lat": round(f.lat, 6), "lng": round(f.lng, 6)}

    def _near_recipient(self, sh: SimShipment) -> dict[str, float]:
        r = self.rng
        return {
            "lat": round(sh.recipient_lat + r.uniform(-0.0003, 0.0003), 6),
            "lng": round(sh.recipient_lng + r.uniform(-0.0003, 0.0003), 6),
        }

    def _raw(self, sh: SimShipment, **extra: Any) -> dict[str, Any]:
        return {"barcode": sh.tracking_number, "symbology": "CODE128", **extra}

    def _payload(
        self,
        sh: SimShipment,
        et: EventType,
        *,
        facility: Facility | None,
        device: str,
        location: dict[str, float] | None,
        reason: ReasonCode | None = None,
        driver: tuple[str, str] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        p: dict[str, Any] = {
            "event_id": _uuid(self.rng),
            "shipment_id": sh.shipment_id,
            "event_type": et.value,
        }
        if facility is not None:
            p["facility_id"] = facility.facility_id
        p["scan_device_id"] = device
        p["location"] = location
        p["created_at"] = _AT
        if reason is not None:
            p["reason_code"] = reason.value
        if driver is not None:
            p["driver_id"], p["route_id"] = driver
        p["raw_scan_data"] = raw if raw is not None else self._raw(sh)
        return p

    def _travel(self, a: Facility, b: Facility, prof: _Profile) -> timedelta:
        km = haversine_km(a.lat, a.lng, b.lat, b.lng)
        offshore = (a.state in _OFFSHORE or b.state in _OFFSHORE) and a.state != b.state
        if offshore or (prof.air_min_km is not None and km >= prof.air_min_km):
            hours = 1.5 + km / 850.0 + self.rng.uniform(0, 1.0)  # truck to the ramp, load, fly
        else:
            hours = max(0.3, 1.25 * km / prof.truck_kmh + self.rng.uniform(0.1, 0.6))
        return timedelta(hours=hours)

    def _morning(self, after: datetime, station: Facility, prof: _Profile) -> datetime:
        """Next time a van leaves `station` (local morning window), at least an hour after `after`."""
        off = _local_offset(station.lng)
        earliest = after + timedelta(hours=1)
        local = earliest + off
        day = datetime(local.year, local.month, local.day, tzinfo=UTC)
        cand = day + _hours(self.rng, prof.ofd_local_h)
        if cand <= local and prof.late_wave_h is not None and local < day + timedelta(hours=prof.late_wave_h):
            cand = local + timedelta(minutes=self.rng.uniform(5, 40))  # premium parcels catch a later van
        while cand <= local or (not prof.sunday and cand.weekday() == 6):
            cand += timedelta(days=1)
        return cand - off

    def _driver(self, station: Facility, ofd_at: datetime) -> tuple[str, str]:
        n = self.rng.randint(1, 40)
        local_day = (ofd_at + _local_offset(station.lng)).strftime("%Y%m%d")
        return f"DRV-{station.code}-{n:03d}", f"RTE-{station.code}-{local_day}-{n:03d}"

    def _wrong_sort_center(self, f: Facility) -> Facility:
        """Where a missorted parcel ends up: the sort center nearest to the right one."""
        if f.facility_id not in self._wrong_sc:
            others = [s for s in self.net.of_type(FacilityType.SORT_CENTER) if s != f]
            self._wrong_sc[f.facility_id] = min(others, key=lambda s: haversine_km(f.lat, f.lng, s.lat, s.lng))
        return self._wrong_sc[f.facility_id]

    # -- valid journeys

    def _emit(self, j: _Journey, t: datetime, payload: dict[str, Any], facility: Facility | None) -> datetime:
        """Appends a valid scan, advancing the journey's state exactly as the pipeline will."""
        if j.events and t <= j.events[-1].draft.t:
            t = j.events[-1].draft.t + timedelta(seconds=1)
        et = EventType(payload["event_type"])
        current = j.status
        target = TARGET_STATUS[et]
        if current is None:
            if et is not EventType.LABEL_CREATED:
                raise AssertionError("the first scan must be LABEL_CREATED")
        elif not is_allowed(current, target):
            raise AssertionError(f"journey bug: {current} -> {target} ({et})")
        if current is not None and self.policy.counts(current, _probe(et, payload.get("reason_code"))):
            j.attempts += 1
        after = target
        if j.attempts >= self.policy.max_attempts and after not in TERMINAL:
            after = Status.RETURN_TO_SENDER  # done by the pipeline in the same step
        draft = _Draft(
            t=t,
            seq=self._next_seq(),
            key=j.shipment.shipment_id.encode(),
            kind="valid",
            reason=None,
            shipment_id=j.shipment.shipment_id,
            payload=payload,
        )
        self.drafts.append(draft)
        j.events.append(_Valid(draft, after, facility))
        return t

    def journey(self, sh: SimShipment, exc_phase: str | None, failures: int) -> _Journey:
        rng, knobs = self.rng, self.knobs
        prof = PROFILES[sh.service_level]
        path = self.net.route(sh.origin_facility_id, sh.destination_facility_id)
        j = _Journey(sh, path, None if knobs.emit_label_created else Status.LABEL_CREATED)
        origin, station = path[0], path[-1]

        if knobs.emit_label_created:
            self._emit(
                j,
                sh.created_at,
                self._payload(
                    sh,
                    EventType.LABEL_CREATED,
                    facility=None,
                    device="label-api",
                    location=None,
                    raw=self._raw(sh, service_level=sh.service_level.value),
                ),
                None,
            )

        t = sh.created_at + _hours(rng, prof.pickup_h)
        t = self._emit(j, t, self._scan(sh, EventType.PICKUP, origin), origin)

        # Transit: DEPARTURE origin, then ARRIVAL (+ DEPARTURE) at each facility to the station.
        steps: list[tuple[EventType, Facility, timedelta]] = [
            (EventType.DEPARTURE, origin, _hours(rng, prof.dwell_h[FacilityType.ORIGIN]))
        ]
        for prev, f in zip(path, path[1:], strict=False):
            steps.append((EventType.ARRIVAL, f, self._travel(prev, f, prof)))
            if f is not station:
                steps.append((EventType.DEPARTURE, f, _hours(rng, prof.dwell_h[f.type])))

        exc_at_step: int | None = None
        exc_reason: ReasonCode | None = None
        if exc_phase == "transit":
            exc_reason = _pick(rng, _TRANSIT_REASONS)
            if exc_reason is ReasonCode.MISSORTED:
                sc_arrivals = [
                    i
                    for i, (et, f, _) in enumerate(steps)
                    if et is EventType.ARRIVAL and f.type is FacilityType.SORT_CENTER
                ]
                if sc_arrivals:
                    exc_at_step = rng.choice(sc_arrivals)
                else:
                    exc_reason = ReasonCode.WEATHER_DELAY
            if exc_at_step is None:
                exc_at_step = rng.randrange(len(steps))

        here: Facility = origin
        for i, (et, f, dur) in enumerate(steps):
            if i == exc_at_step and exc_reason is ReasonCode.MISSORTED:
                # Sorted to the wrong building: scanned there, flagged, trucked on to the right one.
                wrong = self._wrong_sort_center(f)
                t = self._emit(j, t + self._travel(here, wrong, prof), self._scan(sh, EventType.ARRIVAL, wrong), wrong)
                t = self._emit(
                    j,
                    t + _hours(rng, (0.3, 2)),
                    self._scan(sh, EventType.EXCEPTION, wrong, reason=exc_reason),
                    wrong,
                )
                t = self._emit(j, t + _hours(rng, (1, 4)), self._scan(sh, EventType.DEPARTURE, wrong), wrong)
                dur = self._travel(wrong, f, prof)
            elif i == exc_at_step:
                assert exc_reason is not None
                t_exc = t + dur * rng.uniform(0.2, 0.8)
                t_exc = self._emit(j, t_exc, self._scan(sh, EventType.EXCEPTION, here, reason=exc_reason), here)
                delay = _hours(rng, _TRANSIT_DELAY_H[exc_reason])
                if exc_reason is ReasonCode.WEATHER_DELAY and rng.random() < 0.15:
                    # The storm outlasts the first estimate: a second EXCEPTION (EXCEPTION -> EXCEPTION).
                    t_exc = self._emit(
                        j,
                        t_exc + delay / 2,
                        self._scan(sh, EventType.EXCEPTION, here, reason=exc_reason),
                        here,
                    )
                    delay += _hours(rng, (2, 8))
                dur = dur + delay  # t_exc < t + dur, so the next scan still follows the EXCEPTION
            t = self._emit(j, t + dur, self._scan(sh, et, f), f)
            here = f

        # At the delivery station.
        if exc_phase == "station":
            reason = _pick(rng, _STATION_REASONS)
            t = self._emit(
                j,
                t + _hours(rng, (0.5, 3)),
                self._scan(sh, EventType.EXCEPTION, station, reason=reason),
                station,
            )
            t += timedelta(hours=12)  # address fixed / parcel repacked: not before the next morning
        ofd_exception = exc_phase == "ofd"
        cycles = 0
        while True:
            t_ofd = self._morning(t, station, prof)
            driver = self._driver(station, t_ofd)
            t = self._emit(j, t_ofd, self._scan(sh, EventType.OUT_FOR_DELIVERY, station, driver=driver), station)
            if ofd_exception:
                ofd_exception = False
                reason = _pick(rng, _OFD_REASONS)
                t = self._emit(
                    j,
                    t + _hours(rng, (1, 5)),
                    self._stop(sh, EventType.EXCEPTION, station, driver, reason),
                    station,
                )
            elif j.attempts < failures and cycles <= self.policy.max_attempts + 2:
                cycles += 1
                reason = _pick(rng, _FAILURE_REASONS)
                et = EventType.EXCEPTION if rng.random() < _FAILURE_AS_EXCEPTION else EventType.DELIVERY_ATTEMPTED
                t = self._emit(j, t + _hours(rng, prof.deliver_h), self._stop(sh, et, station, driver, reason), station)
            else:
                proof = "signature" if rng.random() < 0.3 else "photo"
                self._emit(
                    j,
                    t + _hours(rng, prof.deliver_h),
                    self._stop(sh, EventType.DELIVERED, station, driver, None, proof=proof),
                    station,
                )
                break
            if j.status is Status.RETURN_TO_SENDER:
                break  # the pipeline returned it on that attempt; scanners send nothing more
        return j

    def _scan(
        self,
        sh: SimShipment,
        et: EventType,
        f: Facility,
        *,
        reason: ReasonCode | None = None,
        driver: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        device = f"HH-{driver[0]}" if driver else self._device(f)
        return self._payload(
            sh,
            et,
            facility=f,
            device=device,
            location=self._facility_location(f),
            reason=reason,
            driver=driver,
        )

    def _stop(
        self,
        sh: SimShipment,
        et: EventType,
        station: Facility,
        driver: tuple[str, str],
        reason: ReasonCode | None,
        **raw: Any,
    ) -> dict[str, Any]:
        return self._payload(
            sh,
            et,
            facility=station,
            device=f"HH-{driver[0]}",
            location=self._near_recipient(sh),
            reason=reason,
            driver=driver,
            raw=self._raw(sh, **raw),
        )

    # -- faults

    def slots(self, j: _Journey) -> list[tuple[Status, datetime, datetime, Facility]]:
        """(status, after, before, facility) windows between a shipment's valid scans.

        Nothing after a return (the brief: scanners go quiet); one window after DELIVERED.
        """
        out: list[tuple[Status, datetime, datetime, Facility]] = []
        evs = j.events
        if not evs:
            return out
        if j.initial is not None:
            out.append((j.initial, j.shipment.created_at, evs[0].draft.t, j.route[0]))
        for a, b in zip(evs, evs[1:], strict=False):
            out.append((a.status_after, a.draft.t, b.draft.t, a.facility or j.route[0]))
        last = evs[-1]
        if last.status_after is Status.DELIVERED:
            out.append((Status.DELIVERED, last.draft.t, last.draft.t + timedelta(hours=6), j.route[-1]))
        return [s for s in out if s[2] - s[1] > timedelta(seconds=4)]

    def _slot_time(self, lo: datetime, hi: datetime) -> datetime:
        return lo + (hi - lo) * self.rng.uniform(0.05, 0.95)

    def duplicate(self, j: _Journey, idx: int) -> None:
        ev = j.events[idx]
        nxt = j.events[idx + 1].draft.t if idx + 1 < len(j.events) else ev.draft.t + timedelta(minutes=10)
        room = min(timedelta(seconds=60), (nxt - ev.draft.t) / 2)
        t = ev.draft.t + max(timedelta(seconds=1), room * self.rng.random())
        self.drafts.append(
            _Draft(
                t=t,
                seq=self._next_seq(),
                key=ev.draft.key,
                kind="duplicate",
                reason=None,
                shipment_id=j.shipment.shipment_id,
                payload=None,
                dup_of=ev.draft,
            )
        )

    def invalid_transition(self, j: _Journey, slot: tuple[Status, datetime, datetime, Facility]) -> None:
        status, lo, hi, here = slot
        sh, station, driver = j.shipment, j.route[-1], None
        candidates = [
            et
            for et in EventType
            if et not in (EventType.LABEL_CREATED, EventType.RETURN_TO_SENDER)
            and TARGET_STATUS[et] not in ALLOWED[status]
        ]
        # Favour the classic mistakes: DELIVERED before OUT_FOR_DELIVERY, a second OFD, re-pickup.
        preferred = [
            et for et in (EventType.DELIVERED, EventType.OUT_FOR_DELIVERY, EventType.ARRIVAL) if et in candidates
        ]
        et = self.rng.choice(preferred) if preferred and self.rng.random() < 0.6 else self.rng.choice(candidates)
        if et in (EventType.OUT_FOR_DELIVERY, EventType.DELIVERED, EventType.DELIVERY_ATTEMPTED):
            driver = self._driver(station, lo)
        if et is EventType.PICKUP:
            payload = self._scan(sh, et, j.route[0])
        elif et in (EventType.ARRIVAL, EventType.DEPARTURE):
            payload = self._scan(sh, et, self.rng.choice(j.route[1:]))
        elif et is EventType.OUT_FOR_DELIVERY:
            payload = self._scan(sh, et, station, driver=driver)
        elif et is EventType.DELIVERED:
            assert driver is not None
            payload = self._stop(sh, et, station, driver, None, proof="photo")
        elif et is EventType.DELIVERY_ATTEMPTED:
            assert driver is not None
            payload = self._stop(sh, et, station, driver, ReasonCode.RECIPIENT_UNAVAILABLE)
        else:  # EXCEPTION, only ever illegal after a terminal status
            payload = self._scan(sh, et, here, reason=ReasonCode.DAMAGED)
        self.drafts.append(
            _Draft(
                t=self._slot_time(lo, hi),
                seq=self._next_seq(),
                key=sh.shipment_id.encode(),
                kind="invalid_transition",
                reason=INVALID_TRANSITION,
                shipment_id=sh.shipment_id,
                payload=payload,
            )
        )

    def _legal_base(self, j: _Journey, status: Status, here: Facility) -> dict[str, Any]:
        """A well-formed scan that would be accepted in `status`; faults are then applied to it."""
        sh = j.shipment
        if status is Status.LABEL_CREATED:
            return self._scan(sh, EventType.PICKUP, j.route[0])
        if Status.IN_TRANSIT in ALLOWED[status]:
            return self._scan(sh, EventType.ARRIVAL, here if here is not j.route[0] else j.route[1])
        return self._scan(sh, EventType.EXCEPTION, here, reason=ReasonCode.WEATHER_DELAY)

    def malformed(self, j: _Journey, slot: tuple[Status, datetime, datetime, Facility], reason: str) -> None:
        rng = self.rng
        status, lo, hi, here = slot
        sh = j.shipment
        key: bytes | None = sh.shipment_id.encode()
        p = self._legal_base(j, status, here)
        render: Callable[[bytes], bytes] | None = None

        if reason == MALFORMED_JSON:
            variant = rng.randrange(5)
            if rng.random() < 0.5:
                key = None  # a broken scanner that does not set the key either
            if variant == 0:
                render = _truncate(rng.uniform(0.2, 0.9))
            elif variant == 1:
                render = _py_repr
            elif variant == 2:
                render = _latin1_garbage
            elif variant == 3:
                render = _csv_line
            else:
                render = _trailing_garbage
        elif reason == INVALID_PAYLOAD:
            _break_payload(p, rng)
            if p.pop("__as_array__", False):
                render = _as_array
        elif reason == MISSING_REASON_CODE:
            if status is Status.OUT_FOR_DELIVERY and rng.random() < 0.5:
                p = self._stop(
                    sh,
                    EventType.DELIVERY_ATTEMPTED,
                    j.route[-1],
                    self._driver(j.route[-1], lo),
                    ReasonCode.RECIPIENT_UNAVAILABLE,
                )
            elif p["event_type"] != EventType.EXCEPTION.value:
                p = self._scan(sh, EventType.EXCEPTION, here, reason=ReasonCode.WEATHER_DELAY)
            del p["reason_code"]
        elif reason == UNKNOWN_FACILITY:
            p["facility_id"] = self._unknown_facility_id()
        elif reason == TIME_IN_FUTURE:
            span = (FUTURE_MAX - FUTURE_MIN).total_seconds()
            p["created_at"] = _Future(FUTURE_MIN + timedelta(seconds=rng.uniform(0, span)))
        elif reason == OVERSIZED_PAYLOAD:
            size = MAX_PAYLOAD_BYTES + rng.randint(512, 24 * 1024)
            blob = base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()[:size]
            p["raw_scan_data"] = {**p["raw_scan_data"], "image_jpeg_b64": blob}
        else:  # pragma: no cover - validated by DayKnobs
            raise ValueError(reason)
        self.drafts.append(
            _Draft(
                t=self._slot_time(lo, hi),
                seq=self._next_seq(),
                key=key,
                kind="malformed",
                reason=reason,
                shipment_id=sh.shipment_id,
                payload=p,
                render=render,
            )
        )

    def _unknown_facility_id(self) -> str:
        while True:
            kind = self.rng.choice(("DS", "SC", "HUB", "OR"))
            code = "".join(self.rng.choice("QXZJ") for _ in range(3))
            fid = f"US-{kind}-{code}" + (f"-{self.rng.randint(1, 9):02d}" if kind in ("DS", "OR") else "")
            if fid not in self.net:
                return fid


# Malformed renderings (value bytes from the JSON bytes of an otherwise legal scan).


def _truncate(frac: float) -> Callable[[bytes], bytes]:
    return lambda b: b[: max(1, int(len(b) * frac))]


def _py_repr(b: bytes) -> bytes:
    return repr(orjson.loads(b)).encode()  # single quotes, None, True: not JSON


def _latin1_garbage(b: bytes) -> bytes:
    return b"\xff\xfe" + b[2:]


def _csv_line(b: bytes) -> bytes:
    d = orjson.loads(b)
    return ",".join(str(d.get(k, "")) for k in ("event_id", "shipment_id", "event_type", "facility_id")).encode()


def _trailing_garbage(b: bytes) -> bytes:
    return b + b'}{"event_id":'


def _as_array(b: bytes) -> bytes:
    return b"[" + b + b"]"


def _break_payload(p: dict[str, Any], rng: random.Random) -> None:
    """One schema defect per message (wrong type, bad value, missing field, not an object)."""
    variant = rng.randrange(12)
    if variant == 0:
        p["event_id"] = rng.randint(1, 10**9)
    elif variant == 1:
        p["event_id"] = "not-a-uuid"
    elif variant == 2:
        p["created_at"] = "yesterday"
    elif variant == 3:
        p["created_at"] = _Naive()
    elif variant == 4:
        p["event_type"] = "TELEPORTED"
    elif variant == 5:
        p["location"] = {"lat": 123.4, "lng": -87.6}
    elif variant == 6:
        p["scan_device_id"] = rng.randint(1, 999)
    elif variant == 7:
        del p["event_id"]
    elif variant == 8:
        del p["created_at"]
    elif variant == 9:
        # (A facility scan without facility_id is left out: validators may call it missing_facility.)
        del p["shipment_id"]
    elif variant == 10:
        p["reason_code"] = "abducted_by_aliens"
    else:
        p["__as_array__"] = True


# --------------------------------------------------------------------------------------------------
# The day


def _fmt(dt: datetime) -> str:
    """RFC 3339 in UTC with microseconds: 2025-03-03T08:49:24.450318Z."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _fmt_naive(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _exact_sample(rng: random.Random, population: Sequence[int], share: float) -> list[int]:
    k = min(len(population), round(share * len(population)))
    return rng.sample(list(population), k)


def generate_day(
    network: Network | Sequence[Facility],
    shipments: Iterable[SimShipment | Mapping[str, Any]],
    knobs: DayKnobs | None = None,
) -> SimDay:
    """All scan-event messages of the given shipments' journeys, ordered by send time.

    Valid journeys run to DELIVERED or to the attempt that makes the pipeline return the shipment;
    duplicates, invalid transitions and malformed messages are mixed in at the requested shares
    of the output. Deterministic for a given network, shipment list and knobs.
    """
    knobs = knobs or DayKnobs()
    net = network if isinstance(network, Network) else Network(network)
    ships = [SimShipment.coerce(s) for s in shipments]
    if len({s.shipment_id for s in ships}) != len(ships):
        raise ValueError("duplicate shipment_id")
    for s in ships:
        for fid, want in (
            (s.origin_facility_id, FacilityType.ORIGIN),
            (s.destination_facility_id, FacilityType.DELIVERY_STATION),
        ):
            f = net.get(fid)
            if f is None or f.type is not want:
                raise ValueError(f"shipment {s.shipment_id}: {fid!r} is not a known {want} facility")
    rng = random.Random(knobs.seed)
    b = _Builder(net, knobs, rng)
    n = len(ships)
    idx = range(n)

    # Which shipments get trouble: exact counts, so the shares hold even for small days.
    exc_plan = dict.fromkeys(_exact_sample(rng, idx, knobs.exception_share), True)
    failing = _exact_sample(rng, idx, knobs.failed_attempt_share)
    n_return = min(len(failing), round(knobs.return_share * n))
    max_a = knobs.policy.max_attempts
    failures = {i: max_a for i in failing[:n_return]}
    for i in failing[n_return:]:
        failures[i] = rng.randint(1, max_a - 1) if max_a > 1 else 0

    journeys = [
        b.journey(s, _pick(rng, _EXC_PHASE) if i in exc_plan else None, failures.get(i, 0)) for i, s in enumerate(ships)
    ]

    # Faults, as shares of the whole output.
    n_valid = sum(len(j.events) for j in journeys)
    clean = 1.0 - knobs.duplicate_share - knobs.invalid_transition_share - knobs.malformed_share
    total = n_valid / clean if n_valid else 0
    n_dup = round(knobs.duplicate_share * total)
    n_inv = round(knobs.invalid_transition_share * total)
    n_mal = round(knobs.malformed_share * total)

    dup_pool = [
        (ji, ei)
        for ji, j in enumerate(journeys)
        for ei, ev in enumerate(j.events)
        if ev.status_after is not Status.RETURN_TO_SENDER  # nothing after the returning attempt
    ]
    for ji, ei in rng.sample(dup_pool, n_dup) if n_dup <= len(dup_pool) else rng.choices(dup_pool, k=n_dup):
        b.duplicate(journeys[ji], ei)

    slots = [(j, slot) for j in journeys for slot in b.slots(j)]
    after_delivered = [(j, slot) for j, slot in slots if slot[0] is Status.DELIVERED]
    open_slots = [(j, slot) for j, slot in slots if slot[0] not in TERMINAL]
    for _ in range(n_inv if slots else 0):
        pool = after_delivered if after_delivered and rng.random() < 0.4 else slots
        b.invalid_transition(*rng.choice(pool))
    mix = sorted(knobs.malformed_mix.items())
    for _ in range(n_mal if open_slots else 0):
        reason = rng.choices([r for r, _ in mix], weights=[w for _, w in mix])[0]
        j, slot = rng.choice(open_slots)
        b.malformed(j, slot, reason)

    clock = _clock(ships, knobs)
    messages = _render(b.drafts, clock, knobs)
    initial = None if knobs.emit_label_created else Status.LABEL_CREATED
    expected, accepted = _replay([s.shipment_id for s in ships], messages, knobs.policy, initial, validate=False)
    if knobs.until is None:
        for j in journeys:  # the builder's own state tracking must agree with the replay
            got = expected[j.shipment.shipment_id]
            if got != (j.status, j.attempts):
                raise AssertionError(f"{j.shipment.shipment_id}: built {j.status}/{j.attempts}, replayed {got}")
    kinds: dict[str, int] = {k: 0 for k in KINDS}
    reasons: dict[str, int] = {}
    for m in messages:
        kinds[m.kind] += 1
        if m.expected_reason:
            reasons[m.expected_reason] = reasons.get(m.expected_reason, 0) + 1
    mapped = [replace(s, created_at=clock(s.created_at)) for s in ships]  # labels on the same clock
    return SimDay(mapped, knobs, messages, expected, accepted, kinds, reasons)


def _clock(ships: Sequence[SimShipment], knobs: DayKnobs) -> Callable[[datetime], datetime]:
    """Simulation time -> send time: the first label lands on `start`, then `speedup` applies."""
    fallback = knobs.start or datetime(2000, 1, 1, tzinfo=UTC)  # no shipments, no messages: unused
    first_label = min((s.created_at for s in ships), default=fallback)
    start = knobs.start or first_label
    speed = knobs.speedup

    def clock(t: datetime) -> datetime:
        return start + (t - first_label) / speed

    return clock


def _render(drafts: list[_Draft], clock: Callable[[datetime], datetime], knobs: DayKnobs) -> list[SimMessage]:
    """Maps simulation time to send time, keeps each key strictly increasing, serializes."""
    if not drafts:
        return []
    by_key: dict[bytes | None, list[_Draft]] = {}
    for d in drafts:
        by_key.setdefault(d.key, []).append(d)
    tick = timedelta(microseconds=1)
    for key, group in by_key.items():
        group.sort(key=lambda d: (d.t, d.seq))
        prev: datetime | None = None
        for d in group:
            at = clock(d.t)
            if key is not None and prev is not None and at <= prev:
                at = prev + tick  # per-key order is time order, even when speed-up collapses gaps
            d.at = prev = at

    horizon = max(d.at for d in drafts if d.at is not None)
    if knobs.now is not None and knobs.now > horizon:
        horizon = knobs.now

    def created_at(d: _Draft, v: Any) -> Any:
        assert d.at is not None
        if isinstance(v, _At):
            return _fmt(d.at)
        if isinstance(v, _Future):
            return _fmt(horizon + v.offset)
        if isinstance(v, _Naive):
            return _fmt_naive(d.at)
        return v

    ordered = sorted(drafts, key=lambda d: (d.at, d.seq))
    out: list[SimMessage] = []
    for d in ordered:
        if d.dup_of is None:
            assert d.payload is not None
            p = dict(d.payload)
            if "created_at" in p:
                p["created_at"] = created_at(d, p["created_at"])
            raw = orjson.dumps(p)
            d.value = d.render(raw) if d.render else raw
    for d in ordered:
        assert d.at is not None
        if knobs.until is not None and d.at >= knobs.until:
            continue
        src = d.dup_of or d
        assert src.value is not None and src.payload is not None
        eid = src.payload.get("event_id")
        et = src.payload.get("event_type")
        out.append(
            SimMessage(
                key=d.key,
                value=src.value,
                kind=d.kind,
                expected_reason=d.reason,
                at=d.at,
                shipment_id=d.shipment_id,
                event_id=eid if isinstance(eid, str) else None,
                event_type=et if isinstance(et, str) else None,
            )
        )
    return out


def ending_before(
    network: Network | Sequence[Facility],
    shipments: Iterable[SimShipment | Mapping[str, Any]],
    knobs: DayKnobs,
    end: datetime,
) -> DayKnobs:
    """`knobs` with `start` (and `now`) chosen so the day's last message is sent just before `end`.

    For runs against a live pipeline: no valid scan then lies in the future of the wall clock, and
    the whole day is recent. `start` only moves the output clock, so one probe run measures it.
    """
    ships = [SimShipment.coerce(s) for s in shipments]
    probe = generate_day(network, ships, knobs.model_copy(update={"start": None, "now": None, "until": None}))
    if not probe.messages:
        return knobs.model_copy(update={"start": end, "now": end})
    first_label = min(s.created_at for s in probe.shipments)
    assert probe.last_at is not None
    span = probe.last_at - first_label
    return knobs.model_copy(update={"start": end - span - timedelta(seconds=1), "now": end})


# --------------------------------------------------------------------------------------------------
# Shipments


_SERVICE_MIX = (
    (0.55, ServiceLevel.STANDARD),
    (0.20, ServiceLevel.EXPRESS),
    (0.10, ServiceLevel.OVERNIGHT),
    (0.15, ServiceLevel.ECONOMY),
)


def random_shipments(
    network: Network | Sequence[Facility],
    n: int,
    *,
    seed: int = 0,
    start: datetime,
    window: timedelta = timedelta(hours=10),
    local_share: float = 0.3,
    service_mix: Mapping[ServiceLevel | str, float] | None = None,
) -> list[SimShipment]:
    """`n` labels created over `window` from `start`: random origin, a recipient within a few km
    of a delivery station (near the origin for `local_share` of them), served by its nearest one."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must carry a time zone")
    net = network if isinstance(network, Network) else Network(network)
    rng = random.Random(seed)
    origins = net.of_type(FacilityType.ORIGIN)
    stations = net.of_type(FacilityType.DELIVERY_STATION)
    mix = [(w, ServiceLevel(s)) for s, w in service_mix.items()] if service_mix else list(_SERVICE_MIX)
    nearby: dict[str, list[Facility]] = {}
    out: list[SimShipment] = []
    for _ in range(n):
        origin = rng.choice(origins)
        if rng.random() < local_share:
            if origin.facility_id not in nearby:
                nearby[origin.facility_id] = sorted(
                    stations, key=lambda s: haversine_km(origin.lat, origin.lng, s.lat, s.lng)
                )[:8]
            anchor = rng.choice(nearby[origin.facility_id])
        else:
            anchor = rng.choice(stations)
        r_km, bearing = 6.0 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        lat = anchor.lat + r_km * math.cos(bearing) / 111.32
        lng = anchor.lng + r_km * math.sin(bearing) / (111.32 * math.cos(math.radians(anchor.lat)))
        out.append(
            SimShipment(
                shipment_id=_uuid(rng),
                tracking_number=f"PT{rng.randrange(10**11, 10**12)}",
                service_level=_pick(rng, mix),
                origin_facility_id=origin.facility_id,
                destination_facility_id=net.nearest_delivery_station(lat, lng).facility_id,
                recipient_lat=round(lat, 6),
                recipient_lng=round(lng, 6),
                created_at=start + window * rng.random(),
            )
        )
    out.sort(key=lambda s: s.created_at)
    return out
