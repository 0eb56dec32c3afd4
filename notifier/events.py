"""The normalized event as the notifier reads it from `notifications` (DESIGN.md section 3,
operators/normalize.py), validated once at the door: bad records are dead-lettered, not guessed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from models.domain import EventType, ReasonCode


class FacilityRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    name: str | None = None
    city: str | None = None


class ReturnRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    shipment_id: uuid.UUID | None = None
    tracking_number: str


class NotificationEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    shipment_id: uuid.UUID
    tracking_number: str
    event_type: EventType
    status: str
    previous_status: str | None = None
    reason_code: ReasonCode | None = None
    attempt_count: int = 0
    facility: FacilityRef | None = None
    created_at: datetime
    eta: dict[str, Any] | None = None
    return_shipment: ReturnRef | None = None
    service_level: str | None = None
    driver_id: str | None = None
    route_id: str | None = None

    @property
    def notify_type(self) -> str:
        """What the customer is told about. The 3rd failed attempt arrives as a DELIVERY_ATTEMPTED (or
        EXCEPTION) scan whose status the pipeline moved to RETURN_TO_SENDER: that is a return."""
        if self.status == "RETURN_TO_SENDER":
            return "RETURN_TO_SENDER"
        return self.event_type.value

    @property
    def eta_at(self) -> datetime | None:
        at = (self.eta or {}).get("at")
        if not at:
            return None
        try:
            return datetime.fromisoformat(str(at))
        except ValueError:
            return None
