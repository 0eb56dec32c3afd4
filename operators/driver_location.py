"""validate_heartbeat: a raw `driver-locations` record (a driver app's GPS heartbeat) in, a `Heartbeat`
or a Reject out. The HTTP ingest endpoint runs the same `parse_heartbeat`, so a driver app hears the
same reason (4xx) that the topology would dead-letter for a record that bypassed the API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from operators.registry import BuildContext, Emit, MessageMeta, Outcome, Reject, StepConfig, StepContext, operator

REJECT_REASONS = ("malformed_json", "invalid_payload", "invalid_coordinates", "key_mismatch", "time_in_future")

DRIVER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class Heartbeat(BaseModel):
    """One GPS fix from a driver app (DESIGN.md section 3, `driver-locations`, key driver_id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver_id: str = Field(pattern=DRIVER_ID)
    lat: float
    lng: float
    recorded_at: datetime
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000)
    speed_mps: float | None = Field(default=None, ge=0, le=120)
    heading_deg: float | None = Field(default=None, ge=0, lt=360)
    route_id: str | None = Field(default=None, max_length=64)

    @field_validator("recorded_at")
    @classmethod
    def _zoned(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("recorded_at must carry a time zone (RFC 3339)")
        return v.astimezone(UTC)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# Redis GEO accepts latitudes up to +-85.05112878 (Web Mercator); the rest of the globe is not
# delivered to by road anyway, and an out-of-range GEOADD would fail the whole pipeline batch.
MAX_GEO_LAT = 85.05112878


def coordinate_problem(lat: Any, lng: Any) -> str | None:
    """Why (lat, lng) is not a usable GPS fix, or None. Booleans and strings are not numbers."""
    for name, v in (("lat", lat), ("lng", lng)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{name} must be a number, got {type(v).__name__}"
        if not math.isfinite(v):
            return f"{name} must be finite, got {v}"
    if not -MAX_GEO_LAT <= lat <= MAX_GEO_LAT:
        return f"lat {lat} is outside [-{MAX_GEO_LAT}, {MAX_GEO_LAT}]"
    if not -180 <= lng <= 180:
        return f"lng {lng} is outside [-180, 180]"
    if lat == 0 and lng == 0:
        return "lat 0, lng 0 (null island) is a device without a fix"
    return None


def parse_heartbeat(raw: Any, *, key: str | None = None, now: datetime | None = None,
                    max_future_skew_s: float = 300.0) -> Heartbeat | Reject:
    """The whole check as a pure function: JSON, coordinates, shape, key, time."""
    data: Any = raw
    if isinstance(raw, (bytes, bytearray, memoryview, str)):
        try:
            data = orjson.loads(bytes(raw) if not isinstance(raw, str) else raw.encode())
        except orjson.JSONDecodeError as exc:
            return Reject("malformed_json", {"error": str(exc)})
    if not isinstance(data, Mapping):
        return Reject("invalid_payload", {"error": "expected a JSON object"})
    problem = coordinate_problem(data.get("lat"), data.get("lng"))
    if problem is not None:
        return Reject("invalid_coordinates", {"error": problem})
    if isinstance(data.get("recorded_at"), (int, float)):
        return Reject("invalid_payload", {"errors": [{"field": "recorded_at", "error": "must be an RFC 3339 string"}]})
    try:
        hb = Heartbeat.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return Reject("invalid_payload", {"errors": [{"field": ".".join(str(p) for p in e["loc"]) or "(root)",
                                                      "error": e["msg"]} for e in errors[:10]]})
    if key is not None and key != hb.driver_id:
        return Reject("key_mismatch", {"key": key, "driver_id": hb.driver_id})
    if now is not None and hb.recorded_at > now + timedelta(seconds=max_future_skew_s):
        return Reject("time_in_future", {"recorded_at": hb.recorded_at.isoformat(), "now": now.isoformat()})
    return hb


class ValidateHeartbeatConfig(StepConfig):
    max_future_skew_s: float = Field(default=300.0, ge=0)
    require_key: bool = True


class ValidateHeartbeatStep:
    def __init__(self, config: ValidateHeartbeatConfig) -> None:
        self.config = config

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        meta: MessageMeta = ctx.message
        key = meta.key_text if self.config.require_key or meta.key is not None else None
        if self.config.require_key and key is None:
            return Reject("key_mismatch", {"key": None, "error": "driver-locations records are keyed by driver_id"})
        # Judge the time against the record's Kafka timestamp: a replay decides the same way.
        out = parse_heartbeat(value, key=key, now=meta.timestamp, max_future_skew_s=self.config.max_future_skew_s)
        return out if isinstance(out, Reject) else Emit(out)


@operator("validate_heartbeat", config=ValidateHeartbeatConfig, rejects=REJECT_REASONS)
def build_validate_heartbeat(ctx: BuildContext, config: ValidateHeartbeatConfig) -> ValidateHeartbeatStep:
    """Parse and check a driver's GPS heartbeat (JSON, coordinates in range, key, time)."""
    return ValidateHeartbeatStep(config)


__all__ = ["Heartbeat", "REJECT_REASONS", "coordinate_problem", "parse_heartbeat", "build_validate_heartbeat"]
