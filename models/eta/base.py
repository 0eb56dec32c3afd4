"""The estimator interface the ETA-enrich step calls: a batch of requests in, one Eta per request out.

Implementations: `rules.RuleEstimator` (business-day rules, holiday calendar) and the XGBoost model
with its fallback. The pipeline only ever sees this module's types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from models.domain import EtaSource, EventType, ServiceLevel, Status


@dataclass(slots=True)
class EtaRequest:
    """What is known about a shipment at the moment of one accepted scan.

    Not frozen: one is built per accepted scan on the pipeline's hot path, and a frozen dataclass
    pays an `object.__setattr__` per field (3.0 vs 1.2 µs for these 26 fields). Treat it as read-only.
    """

    shipment_id: str
    service_level: ServiceLevel
    status: Status                    # status after the scan
    event_type: EventType
    event_at: datetime                # scan time (zoned)
    shipment_created_at: datetime     # label time (zoned)
    origin_lat: float | None = None
    origin_lng: float | None = None
    dest_lat: float | None = None
    dest_lng: float | None = None
    origin_zip: str | None = None
    dest_zip: str | None = None
    facility_id: str | None = None    # facility of this scan, if any
    facility_type: str | None = None  # origin | hub | sort_center | delivery_station
    facility_lat: float | None = None
    facility_lng: float | None = None
    last_hub_scan_at: datetime | None = None
    attempt_count: int = 0
    remaining_stops: int | None = None
    carrier: str = "parcel"
    extra: dict[str, float] = field(default_factory=dict)  # optional online features (weather, ...)
    promised_at: datetime | None = None  # delivery date promised at purchase (seller/carrier commitment)
    pickup_due_at: datetime | None = None  # deadline for the origin to hand the parcel to the carrier
    weight_kg: float | None = None       # declared parcel weight
    # Out for delivery on a planned route: when the driver is planned to reach this stop
    # (routing/store.py StopProgress.planned_arrival); with `remaining_stops`, the stops before it.
    planned_arrival: datetime | None = None


@dataclass(frozen=True, slots=True)
class Eta:
    at: datetime | None               # None once delivered / returned (nothing to predict)
    source: EtaSource
    low: datetime | None = None       # P10
    high: datetime | None = None      # P90
    model_version: str | None = None
    confidence: float | None = None

    def body(self) -> dict[str, object]:
        """The published shape, times left as datetimes (the scan pipeline's orjson pass writes
        them as RFC 3339, as `isoformat` does)."""
        return {
            "at": self.at,
            "source": self.source,
            "interval": {"low": self.low, "high": self.high},
            "model_version": self.model_version,
        }

    def to_json(self) -> dict[str, object]:
        """`body()` with the times as RFC 3339 strings."""
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {**self.body(), "at": iso(self.at), "interval": {"low": iso(self.low), "high": iso(self.high)}}


class Estimator(Protocol):
    name: str

    def estimate(self, requests: Sequence[EtaRequest]) -> list[Eta]:
        """One Eta per request, in order. Must never raise for a single bad row."""
        ...
