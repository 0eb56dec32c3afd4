"""validate: a raw `scan-events` record (bytes, str or dict) in, a `ScanEvent` or a Reject out.

Checks run cheapest first: size, JSON, shape, required-by-type fields, schema, times, the Kafka
key, then the facility directory (the only lookup). Time checks are made against the record's
Kafka timestamp by default, not the wall clock, so a replay days later judges a scan the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError

from models.domain import FACILITY_REQUIRED, REASON_REQUIRED, ScanEvent
from operators.ports import Clock, FacilityDirectory, as_facility_directory
from operators.registry import (
    BuildContext,
    Emit,
    MessageMeta,
    Outcome,
    Reject,
    StepConfig,
    StepContext,
    operator,
)

REJECT_REASONS = (
    "oversized_payload",
    "malformed_json",
    "invalid_payload",
    "missing_reason_code",
    "missing_facility",
    "time_in_future",
    "time_too_old",
    "key_mismatch",
    "unknown_facility",
)

_REASON_REQUIRED = frozenset(e.value for e in REASON_REQUIRED)
_FACILITY_REQUIRED = frozenset(e.value for e in FACILITY_REQUIRED)
_MAX_ERRORS_IN_DETAIL = 10


class ValidateConfig(StepConfig):
    max_payload_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    # Device clocks drift; a scan up to this far in the future of the reference time is accepted.
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_past_age_days: float = Field(default=30.0, gt=0)
    # "message_timestamp": the Kafka record timestamp (deterministic on replay; falls back to the
    # clock when the record has none). "clock": the injected wall clock.
    reference_time: Literal["message_timestamp", "clock"] = "message_timestamp"
    # The Kafka key must be the canonical shipment_id: per-shipment order and state depend on it.
    require_key: bool = True
    check_facility: bool = True


def validate_scan(
    raw: Any,
    message: MessageMeta,
    *,
    config: ValidateConfig,
    clock: Clock,
    facilities: FacilityDirectory | None,
) -> Emit[ScanEvent] | Reject:
    """The whole check as a pure function (facilities and clock injected)."""
    parsed = _parse(raw, config.max_payload_bytes)
    if isinstance(parsed, Reject):
        return parsed
    data = parsed

    event_type = data.get("event_type")
    if isinstance(event_type, str):
        if event_type in _REASON_REQUIRED and not data.get("reason_code"):
            return Reject("missing_reason_code", {"event_type": event_type})
        if event_type in _FACILITY_REQUIRED and not data.get("facility_id"):
            return Reject("missing_facility", {"event_type": event_type})

    if "created_at" in data and not isinstance(data["created_at"], str):
        # pydantic would read a number as epoch seconds; the contract says RFC 3339 with a zone.
        return Reject(
            "invalid_payload",
            {"errors": [{"field": "created_at", "error": "must be an RFC 3339 string with zone"}]},
        )
    try:
        event = ScanEvent.model_validate(data)
    except ValidationError as exc:
        return Reject("invalid_payload", _summarise(exc))

    reference = _reference_time(message, config, clock)
    if event.created_at > reference + timedelta(seconds=config.max_future_skew_s):
        return Reject(
            "time_in_future",
            {
                "created_at": event.created_at.isoformat(),
                "reference_time": reference.isoformat(),
                "max_future_skew_s": config.max_future_skew_s,
            },
        )
    if event.created_at < reference - timedelta(days=config.max_past_age_days):
        return Reject(
            "time_too_old",
            {
                "created_at": event.created_at.isoformat(),
                "reference_time": reference.isoformat(),
                "max_past_age_days": config.max_past_age_days,
            },
        )

    key = message.key
    if config.require_key or key is not None:
        key_text = _key_text(key)
        if key_text != str(event.shipment_id):
            return Reject(
                "key_mismatch",
                {"key": key_text, "shipment_id": str(event.shipment_id)},
            )

    if config.check_facility and event.facility_id is not None:
        assert facilities is not None  # the factory requires it when check_facility is on
        if not facilities.exists(event.facility_id):
            return Reject(
                "unknown_facility",
                {"facility_id": event.facility_id, "event_type": event.event_type.value},
            )
    return Emit(event)


def _parse(raw: Any, max_bytes: int) -> dict[str, Any] | Reject:
    if isinstance(raw, Mapping):
        return dict(raw)
    if raw is None:
        return Reject("malformed_json", {"error": "empty value (tombstone)"})
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        return Reject("invalid_payload", {"error": f"unsupported value type {type(raw).__name__}"})
    if len(raw) > max_bytes:
        return Reject("oversized_payload", {"size_bytes": len(raw), "max_payload_bytes": max_bytes})
    if not raw.strip():
        return Reject("malformed_json", {"error": "empty value"})
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Reject("malformed_json", {"error": str(exc)})
    if not isinstance(data, dict):
        return Reject("invalid_payload", {"error": f"expected a JSON object, got {_json_type(data)}"})
    return data


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _summarise(exc: ValidationError) -> dict[str, Any]:
    """Field paths and messages only: never echo the input values (they may hold personal data)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return {
        "error_count": len(errors),
        "errors": [
            {"field": ".".join(str(p) for p in e["loc"]) or "(root)", "error": e["msg"]}
            for e in errors[:_MAX_ERRORS_IN_DETAIL]
        ],
    }


def _reference_time(message: MessageMeta, config: ValidateConfig, clock: Clock) -> datetime:
    if config.reference_time == "message_timestamp":
        ts = message.timestamp
        if ts is not None:
            return ts
    return clock()


def _key_text(key: bytes | str | None) -> str | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return key.decode("utf-8", errors="replace")
    if isinstance(key, uuid.UUID):
        return str(key)
    return str(key)


class ValidateStep:
    def __init__(self, config: ValidateConfig, clock: Clock, facilities: FacilityDirectory | None) -> None:
        self.config = config
        self._clock = clock
        self._facilities = facilities

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        return validate_scan(
            value, ctx.message, config=self.config, clock=self._clock, facilities=self._facilities
        )


@operator("validate", config=ValidateConfig, rejects=REJECT_REASONS)
def build_validate(ctx: BuildContext, config: ValidateConfig) -> ValidateStep:
    """Parse and check a raw scan (size, JSON, schema, times, key, facility) into a ScanEvent."""
    facilities: FacilityDirectory | None = None
    if config.check_facility:
        lookup: FacilityDirectory | Callable[[str], bool] = ctx.require("facilities")
        facilities = as_facility_directory(lookup)
    return ValidateStep(config, ctx.resources.clock, facilities)


__all__ = ["REJECT_REASONS", "ValidateConfig", "ValidateStep", "build_validate", "validate_scan"]
