"""Test helpers shared by the three test tiers (bytewax's `testing` idea): a frozen clock and a scan
payload builder. Directories and the driver live in operators.ports / topologies.driver."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from models.domain import FACILITY_REQUIRED, REASON_REQUIRED, EventType, ReasonCode

DEFAULT_NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, at: datetime = DEFAULT_NOW) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now

    @property
    def ms(self) -> int:
        return int(self.now.timestamp() * 1000)


def scan_payload(
    event_type: EventType | str,
    shipment_id: uuid.UUID | str,
    *,
    created_at: datetime = DEFAULT_NOW,
    event_id: uuid.UUID | str | None = None,
    facility_id: str | None = "HUB-1",
    reason_code: ReasonCode | str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid scan as JSON-ready dict; facility and reason are filled where the type needs them."""
    et = EventType(event_type)
    body: dict[str, Any] = {
        "event_id": str(event_id or uuid.uuid4()),
        "shipment_id": str(shipment_id),
        "event_type": et.value,
        "scan_device_id": "scanner-7",
        "created_at": created_at.isoformat(),
    }
    if et in FACILITY_REQUIRED or facility_id is not None and et is not EventType.LABEL_CREATED:
        body["facility_id"] = facility_id
    if et in REASON_REQUIRED or reason_code is not None:
        body["reason_code"] = str(ReasonCode(reason_code or ReasonCode.RECIPIENT_UNAVAILABLE))
    body.update(extra)
    return body
