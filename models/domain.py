"""The tracking domain: scan events in, statuses out (DESIGN.md sections 4 and 5).

Pure types and tables, no I/O. Every other layer (operators, sinks, API, notifier) speaks these.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EventType(enum.StrEnum):
    LABEL_CREATED = "LABEL_CREATED"
    PICKUP = "PICKUP"
    ARRIVAL = "ARRIVAL"
    DEPARTURE = "DEPARTURE"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    DELIVERY_ATTEMPTED = "DELIVERY_ATTEMPTED"
    EXCEPTION = "EXCEPTION"
    RETURN_TO_SENDER = "RETURN_TO_SENDER"


class Status(enum.StrEnum):
    LABEL_CREATED = "LABEL_CREATED"
    PICKED_UP = "PICKED_UP"
    IN_TRANSIT = "IN_TRANSIT"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    DELIVERY_ATTEMPTED = "DELIVERY_ATTEMPTED"
    EXCEPTION = "EXCEPTION"
    RETURN_TO_SENDER = "RETURN_TO_SENDER"


class ServiceLevel(enum.StrEnum):
    STANDARD = "STANDARD"
    EXPRESS = "EXPRESS"
    OVERNIGHT = "OVERNIGHT"
    ECONOMY = "ECONOMY"


class FacilityType(enum.StrEnum):
    ORIGIN = "origin"
    HUB = "hub"
    SORT_CENTER = "sort_center"
    DELIVERY_STATION = "delivery_station"


class ReasonCode(enum.StrEnum):
    ADDRESS_NOT_FOUND = "address_not_found"
    ACCESS_DENIED = "access_denied"
    RECIPIENT_UNAVAILABLE = "recipient_unavailable"
    REFUSED = "refused"
    DAMAGED = "damaged"
    WEATHER_DELAY = "weather_delay"
    CUSTOMS_HOLD = "customs_hold"
    MISSORTED = "missorted"
    VEHICLE_BREAKDOWN = "vehicle_breakdown"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"  # set by the pipeline on the automatic return


# Section 5, first table: the status an accepted event moves the shipment to.
TARGET_STATUS: dict[EventType, Status] = {
    EventType.LABEL_CREATED: Status.LABEL_CREATED,
    EventType.PICKUP: Status.PICKED_UP,
    EventType.ARRIVAL: Status.IN_TRANSIT,
    EventType.DEPARTURE: Status.IN_TRANSIT,
    EventType.OUT_FOR_DELIVERY: Status.OUT_FOR_DELIVERY,
    EventType.DELIVERED: Status.DELIVERED,
    EventType.DELIVERY_ATTEMPTED: Status.DELIVERY_ATTEMPTED,
    EventType.EXCEPTION: Status.EXCEPTION,
    EventType.RETURN_TO_SENDER: Status.RETURN_TO_SENDER,
}

# Section 5, second table: the allowed edges. LABEL_CREATED only ever creates the state.
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.LABEL_CREATED: frozenset({Status.PICKED_UP, Status.EXCEPTION}),
    Status.PICKED_UP: frozenset({Status.IN_TRANSIT, Status.EXCEPTION}),
    Status.IN_TRANSIT: frozenset({Status.IN_TRANSIT, Status.OUT_FOR_DELIVERY, Status.EXCEPTION}),
    Status.OUT_FOR_DELIVERY: frozenset({Status.DELIVERED, Status.DELIVERY_ATTEMPTED, Status.EXCEPTION}),
    Status.DELIVERY_ATTEMPTED: frozenset(
        {Status.OUT_FOR_DELIVERY, Status.IN_TRANSIT, Status.EXCEPTION, Status.RETURN_TO_SENDER}
    ),
    Status.EXCEPTION: frozenset(
        {Status.EXCEPTION, Status.IN_TRANSIT, Status.OUT_FOR_DELIVERY, Status.RETURN_TO_SENDER}
    ),
    Status.DELIVERED: frozenset(),
    Status.RETURN_TO_SENDER: frozenset(),
}

TERMINAL: frozenset[Status] = frozenset({Status.DELIVERED, Status.RETURN_TO_SENDER})

# Scans that happen at a facility and must name it (section 4).
FACILITY_REQUIRED: frozenset[EventType] = frozenset(
    {EventType.PICKUP, EventType.ARRIVAL, EventType.DEPARTURE, EventType.OUT_FOR_DELIVERY}
)
REASON_REQUIRED: frozenset[EventType] = frozenset({EventType.EXCEPTION, EventType.DELIVERY_ATTEMPTED})


def is_allowed(current: Status, target: Status) -> bool:
    return target in ALLOWED[current]


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class ScanEvent(BaseModel):
    """One barcode scan as it arrives on `scan-events` (DESIGN.md section 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    shipment_id: uuid.UUID
    event_type: EventType
    facility_id: str | None = Field(default=None, min_length=1, max_length=64)
    scan_device_id: str = Field(min_length=1, max_length=128)
    location: Location | None = None
    created_at: datetime
    reason_code: ReasonCode | None = None
    driver_id: str | None = Field(default=None, min_length=1, max_length=64)
    route_id: str | None = Field(default=None, min_length=1, max_length=64)
    raw_scan_data: str | dict[str, Any] | None = None

    @field_validator("created_at")
    @classmethod
    def _zoned(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("created_at must carry a time zone (RFC 3339)")
        return v

    @model_validator(mode="after")
    def _required_by_type(self) -> ScanEvent:
        if self.event_type in FACILITY_REQUIRED and not self.facility_id:
            raise ValueError(f"facility_id is required for {self.event_type}")
        if self.event_type in REASON_REQUIRED and self.reason_code is None:
            raise ValueError(f"reason_code is required for {self.event_type}")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


DeliveryFailureReasons = frozenset(
    {
        ReasonCode.ADDRESS_NOT_FOUND,
        ReasonCode.ACCESS_DENIED,
        ReasonCode.RECIPIENT_UNAVAILABLE,
        ReasonCode.REFUSED,
    }
)


class AttemptPolicy(BaseModel):
    """Which scans count as a failed delivery attempt (section 5); configuration, not code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1)
    count_delivery_attempted: bool = True
    # An EXCEPTION raised while OUT_FOR_DELIVERY counts when its reason is one of these.
    exception_reasons: frozenset[ReasonCode] = DeliveryFailureReasons

    def counts(self, current: Status, event: ScanEvent) -> bool:
        if event.event_type is EventType.DELIVERY_ATTEMPTED:
            return self.count_delivery_attempted
        return (
            event.event_type is EventType.EXCEPTION
            and current is Status.OUT_FOR_DELIVERY
            and event.reason_code in self.exception_reasons
        )


EtaSource = Literal["model", "rule", "route"]  # route: the planned arrival on a driver route


# --- Additions for the scan pipeline (operators/transition.py, sinks, notifier) --------------------


class Facility(BaseModel):
    """A facility as the pipeline sees it: enough for notifications (name, city) and ETA features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    facility_id: str = Field(min_length=1, max_length=64)
    name: str | None = None
    city: str | None = None
    type: FacilityType | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)


class ShipmentInfo(BaseModel):
    """What does not change while a shipment moves: carried by every accepted scan downstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shipment_id: uuid.UUID
    tracking_number: str = Field(min_length=1, max_length=64)
    service_level: ServiceLevel = ServiceLevel.STANDARD
    created_at: datetime  # label time (zoned)
    return_of: uuid.UUID | None = None  # set on a return shipment: the shipment it sends back
    origin_lat: float | None = None
    origin_lng: float | None = None
    dest_lat: float | None = None
    dest_lng: float | None = None
    origin_zip: str | None = None
    dest_zip: str | None = None
    weight_grams: int | None = None  # declared at label time (an ETA feature)


class ShipmentSnapshot(ShipmentInfo):
    """A shipment as the system of record (PostgreSQL) knows it; rebuilds lost stream state.

    `recent_event_ids` lets duplicate detection survive a rebuild when the store can list the
    last accepted event ids (e.g. from Cassandra); empty means "unknown", not "none".
    """

    status: Status
    attempt_count: int = Field(default=0, ge=0)
    last_event_at: datetime | None = None
    last_hub_scan_at: datetime | None = None
    recent_event_ids: tuple[uuid.UUID, ...] = ()


class ReturnShipment(BaseModel):
    """The linked return shipment started when a shipment turns RETURN_TO_SENDER.

    Every id here is derived deterministically from the original shipment, so a replay derives the
    same return shipment and the sinks' upserts stay idempotent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shipment_id: uuid.UUID
    tracking_number: str
    return_of: uuid.UUID
    original_tracking_number: str
    service_level: ServiceLevel
    reason_code: ReasonCode | None
    trigger: Literal["max_attempts", "scan"]
    # Id of the RETURN_TO_SENDER tracking event the pipeline records on the original shipment when
    # the move was automatic (the scan itself was a DELIVERY_ATTEMPTED/EXCEPTION); None for a scan.
    event_id: uuid.UUID | None
    created_at: datetime


class DeadLetterSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """The dead-letter envelope on `scan-events-dlq` (DESIGN.md section 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topology: str
    step: str
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    detail: str | dict[str, Any]
    source: DeadLetterSource
    key: str | None
    value: Any
    # "json" (value is the parsed document), "text" (not JSON), "base64" (not UTF-8).
    value_encoding: Literal["json", "text", "base64"] = "json"
    value_truncated: bool = False
    failed_at: datetime
