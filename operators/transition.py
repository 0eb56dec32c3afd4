"""transition: a validated `ScanEvent` in, an `AcceptedScan` (or Drop/Reject) out; stateful per
shipment_id (the Kafka key), enforcing DESIGN.md section 5 before anything is written.

State (per shipment, one key namespaced by the step id through the engine's PrefixedState, so a
scan costs one state read and one write):
  "shipment.v2" -> {"shipment": ShipmentState as JSON (status, attempt_count, last_event_at,
                    shipment facts), "seen": the last `remember_event_ids` accepted event ids}
A layout change gets a new key name: state under an old name is simply missing, and missing state
is rebuilt from the system of record, never guessed.

Ordering: the order of arrival on the shipment's partition is the order of the state machine.
Device clocks are not trusted to reorder scans; a scan older than the shipment's last event is
judged against the current status like any other, accepted or rejected, and flagged
`out_of_order` when accepted. `last_event_at` only moves forward (max), so the PostgreSQL sink's
guard `WHERE last_event_at <= EXCLUDED.last_event_at` never moves a row backwards on replay, and
Cassandra's clustering by (created_at, event_id) still shows the history in scan-time order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.domain import (
    TARGET_STATUS,
    AttemptPolicy,
    EventType,
    Facility,
    ReasonCode,
    ReturnShipment,
    ScanEvent,
    ServiceLevel,
    ShipmentInfo,
    ShipmentSnapshot,
    Status,
    is_allowed,
)
from models.eta.base import Eta
from operators.metrics import PipelineMetrics
from operators.ports import ShipmentDirectory
from operators.registry import (
    BuildContext,
    Drop,
    Emit,
    Outcome,
    Reject,
    StateLike,
    StepConfig,
    StepContext,
    operator,
)

log = logging.getLogger(__name__)

REJECT_REASONS = ("invalid_transition", "unknown_shipment")
DUPLICATE = "duplicate_event"

# Fixed namespace for ids derived from a shipment id (uuid5): the same shipment always yields the
# same return shipment, so replays upsert instead of creating a second return.
RETURN_NAMESPACE = uuid.UUID("6f1c2a4e-3b8d-5e7f-9a10-2c4b6d8e0f13")

STATE_KEY = "shipment.v2"
_HUB_SCANS = frozenset({EventType.ARRIVAL, EventType.DEPARTURE})


class TransitionConfig(StepConfig):
    attempt_policy: AttemptPolicy = Field(default_factory=AttemptPolicy)
    # Accepted event ids remembered per shipment; a shipment's whole life is usually < 30 scans.
    remember_event_ids: int = Field(default=128, ge=1, le=10_000)
    # Name of the secret (environment variable) keying the HMAC that derives tracking numbers.
    tracking_secret_env: str = Field(default="PARCEL_TRACKING_SECRET", pattern=r"^[A-Z][A-Z0-9_]*$")
    return_tracking_prefix: str = Field(default="RT", pattern=r"^[A-Z]{1,4}$")
    # Used when a scanner's LABEL_CREATED names a shipment the directory does not know.
    label_tracking_prefix: str = Field(default="PT", pattern=r"^[A-Z]{1,4}$")
    default_service_level: ServiceLevel = ServiceLevel.STANDARD


class AcceptedScan(BaseModel):
    """One accepted scan and what it did to its shipment: the value sinks and later steps get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: ScanEvent
    shipment: ShipmentInfo
    previous_status: Status | None  # None when this scan created the shipment's state
    scan_status: Status  # TARGET_STATUS of the scan itself
    status: Status  # status after the step (RETURN_TO_SENDER on the last counted attempt)
    attempt_count: int
    attempt_counted: bool
    last_event_at: datetime  # max(created_at) over accepted scans: never moves backwards
    last_hub_scan_at: datetime | None = None
    out_of_order: bool = False
    # True when no store knew the shipment (a scanner's LABEL_CREATED): the sink inserts the row.
    created_by_scan: bool = False
    return_shipment: ReturnShipment | None = None
    # Filled by eta_enrich.
    facility: Facility | None = None
    eta: Eta | None = None

    @property
    def shipment_id(self) -> uuid.UUID:
        return self.event.shipment_id

    @property
    def auto_returned(self) -> bool:
        return self.return_shipment is not None and self.return_shipment.trigger == "max_attempts"


class ShipmentState(BaseModel):
    """What the step keeps per shipment (stored as JSON in the state store)."""

    model_config = ConfigDict(extra="forbid")

    info: ShipmentInfo
    status: Status
    attempt_count: int = 0
    last_event_at: datetime | None = None
    last_hub_scan_at: datetime | None = None

    @classmethod
    def from_snapshot(cls, snap: ShipmentSnapshot) -> ShipmentState:
        info = ShipmentInfo.model_validate(
            snap.model_dump(include=set(ShipmentInfo.model_fields), mode="python")
        )
        return cls(
            info=info,
            status=snap.status,
            attempt_count=snap.attempt_count,
            last_event_at=snap.last_event_at,
            last_hub_scan_at=snap.last_hub_scan_at,
        )


class ShipmentIdentity:
    """Deterministic ids and tracking numbers derived from a shipment id.

    Tracking numbers are an HMAC-SHA256 of the shipment id under a secret, base32, 18 characters
    (90 bits): the same on every replay, impossible to guess from the shipment id.
    """

    def __init__(self, secret: bytes, *, return_prefix: str = "RT", label_prefix: str = "PT") -> None:
        self._secret = secret
        self.return_prefix = return_prefix
        self.label_prefix = label_prefix

    def _code(self, purpose: str, shipment_id: uuid.UUID) -> str:
        digest = hmac.new(self._secret, f"{purpose}:{shipment_id}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii")[:18]

    def return_shipment_id(self, shipment_id: uuid.UUID) -> uuid.UUID:
        return uuid.uuid5(RETURN_NAMESPACE, f"return-shipment:{shipment_id}")

    def return_event_id(self, shipment_id: uuid.UUID) -> uuid.UUID:
        return uuid.uuid5(RETURN_NAMESPACE, f"return-to-sender-event:{shipment_id}")

    def return_tracking_number(self, shipment_id: uuid.UUID) -> str:
        return self.return_prefix + self._code("return", shipment_id)

    def label_tracking_number(self, shipment_id: uuid.UUID) -> str:
        return self.label_prefix + self._code("label", shipment_id)


def apply_scan(
    state: StateLike,
    event: ScanEvent,
    *,
    config: TransitionConfig,
    identity: ShipmentIdentity,
    shipments: ShipmentDirectory | None,
    step_id: str = "transition",
    metrics: PipelineMetrics | None = None,
    position: tuple[int, int] | None = None,
) -> Outcome:
    """Apply one scan to one shipment's state. Writes state only when it accepts (or caches a
    rebuilt state); a Reject or Drop leaves the shipment as it was."""
    event_id = str(event.event_id)
    entry = state.get(STATE_KEY)
    seen: list[str] = list(entry["seen"]) if entry else []
    if event_id in seen:
        return _duplicate(step_id, metrics)

    doc = entry["shipment"] if entry else None
    current: ShipmentState | None
    rebuilt = False
    if doc is not None:
        current = ShipmentState.model_validate(doc)
    else:
        # No stream state: the shipment predates this job, or local state was lost. The system of
        # record decides; a store error propagates (the job stops, offsets stay uncommitted).
        snap = None
        if shipments is not None:
            load_label = getattr(shipments, "load_label", None)
            if event.event_type is EventType.LABEL_CREATED and load_label is not None:
                snap = load_label(event.shipment_id, before=position)  # one read per burst of labels
            else:
                snap = shipments.load(event.shipment_id, before=position)
        if metrics is not None:
            metrics.state_rebuild(step_id, "found" if snap is not None else "missing")
        if snap is None:
            if event.event_type is EventType.LABEL_CREATED:
                return _create(state, seen, event, config, identity, None, metrics)
            return Reject(
                "unknown_shipment",
                {"shipment_id": str(event.shipment_id), "event_type": event.event_type.value},
            )
        current = ShipmentState.from_snapshot(snap)
        rebuilt = True
        seen = _remember(seen, [str(e) for e in snap.recent_event_ids], config.remember_event_ids)
        if event_id in seen:
            _save(state, current, seen)
            return _duplicate(step_id, metrics)
        if event.event_type is EventType.LABEL_CREATED and current.status is Status.LABEL_CREATED:
            # The label API wrote PostgreSQL first and then published the label scan: this scan
            # creates the stream state for a row that already exists.
            return _create(state, seen, event, config, identity, current, metrics)

    requested = TARGET_STATUS[event.event_type]
    if event.event_type is EventType.LABEL_CREATED or not is_allowed(current.status, requested):
        if rebuilt:
            _save(state, current, seen)  # cache the lookup; the state equals the store's row
        log.warning(
            "invalid transition shipment_id=%s current=%s requested=%s",
            event.shipment_id,
            current.status.value,
            requested.value,
            extra={
                "shipment_id": str(event.shipment_id),
                "current": current.status.value,
                "requested": requested.value,
                "step": step_id,
            },
        )
        return Reject(
            "invalid_transition",
            {
                "shipment_id": str(event.shipment_id),
                "current": current.status.value,
                "requested": requested.value,
                "event_type": event.event_type.value,
            },
        )

    policy = config.attempt_policy
    counted = policy.counts(current.status, event)
    attempts = current.attempt_count + (1 if counted else 0)
    status = requested
    return_shipment: ReturnShipment | None = None
    if counted and attempts >= policy.max_attempts and is_allowed(requested, Status.RETURN_TO_SENDER):
        status = Status.RETURN_TO_SENDER
        return_shipment = _return_for(current.info, event, identity, trigger="max_attempts")
    elif requested is Status.RETURN_TO_SENDER:
        return_shipment = _return_for(current.info, event, identity, trigger="scan")

    out_of_order = current.last_event_at is not None and event.created_at < current.last_event_at
    last_event_at = _later(current.last_event_at, event.created_at)
    last_hub = current.last_hub_scan_at
    if event.event_type in _HUB_SCANS:
        last_hub = _later(last_hub, event.created_at)

    # Plain constructors, not model_construct: pydantic-core checks the already-built models and
    # enums here in ~2 µs, while model_construct's Python loop over fields and defaults took ~7 µs.
    new = ShipmentState(
        info=current.info,
        status=status,
        attempt_count=attempts,
        last_event_at=last_event_at,
        last_hub_scan_at=last_hub,
    )
    _save(state, new, _remember(seen, [event_id], config.remember_event_ids))
    accepted = AcceptedScan(
        event=event,
        shipment=current.info,
        previous_status=current.status,
        scan_status=requested,
        status=status,
        attempt_count=attempts,
        attempt_counted=counted,
        last_event_at=last_event_at,
        last_hub_scan_at=last_hub,
        out_of_order=out_of_order,
        return_shipment=return_shipment,
    )
    _observe(accepted, step_id, metrics)
    return Emit(accepted)


def _create(
    state: StateLike,
    seen: list[str],
    event: ScanEvent,
    config: TransitionConfig,
    identity: ShipmentIdentity,
    known: ShipmentState | None,
    metrics: PipelineMetrics | None,
) -> Emit[AcceptedScan]:
    if known is not None:
        info = known.info
        last_event_at = _later(known.last_event_at, event.created_at)
    else:
        info = ShipmentInfo(
            shipment_id=event.shipment_id,
            tracking_number=identity.label_tracking_number(event.shipment_id),
            service_level=config.default_service_level,
            created_at=event.created_at,
        )
        last_event_at = event.created_at
    new = ShipmentState(info=info, status=Status.LABEL_CREATED, attempt_count=0, last_event_at=last_event_at)
    _save(state, new, _remember(seen, [str(event.event_id)], config.remember_event_ids))
    accepted = AcceptedScan(
        event=event,
        shipment=info,
        previous_status=None,
        scan_status=Status.LABEL_CREATED,
        status=Status.LABEL_CREATED,
        attempt_count=0,
        attempt_counted=False,
        last_event_at=last_event_at,
        created_by_scan=known is None,
    )
    if metrics is not None:
        metrics.transition(None, Status.LABEL_CREATED.value)
    return Emit(accepted)


def _return_for(
    info: ShipmentInfo, event: ScanEvent, identity: ShipmentIdentity, *, trigger: str
) -> ReturnShipment:
    auto = trigger == "max_attempts"
    return ReturnShipment(
        shipment_id=identity.return_shipment_id(info.shipment_id),
        tracking_number=identity.return_tracking_number(info.shipment_id),
        return_of=info.shipment_id,
        original_tracking_number=info.tracking_number,
        service_level=info.service_level,
        reason_code=ReasonCode.MAX_ATTEMPTS_REACHED if auto else event.reason_code,
        trigger="max_attempts" if auto else "scan",
        event_id=identity.return_event_id(info.shipment_id) if auto else None,
        created_at=event.created_at,
    )


def _save(state: StateLike, shipment: ShipmentState, seen: list[str]) -> None:
    state.set(STATE_KEY, {"shipment": shipment.model_dump(mode="json"), "seen": seen})


def _remember(seen: list[str], new_ids: list[str], limit: int) -> list[str]:
    if len(new_ids) == 1 and new_ids[0] not in seen:  # the common case: one new accepted id
        merged = [*seen, new_ids[0]]
    else:
        merged = [s for s in seen if s not in new_ids] + [n for n in dict.fromkeys(new_ids)]
    return merged[-limit:]


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _duplicate(step_id: str, metrics: PipelineMetrics | None) -> Drop:
    if metrics is not None:
        metrics.duplicate(step_id)
    return Drop(DUPLICATE)


def _observe(accepted: AcceptedScan, step_id: str, metrics: PipelineMetrics | None) -> None:
    if metrics is None:
        return
    prev = accepted.previous_status.value if accepted.previous_status else None
    metrics.transition(prev, accepted.scan_status.value)
    if accepted.status is not accepted.scan_status:
        metrics.transition(accepted.scan_status.value, accepted.status.value)
    if accepted.return_shipment is not None:
        metrics.returned(accepted.return_shipment.trigger)
    if accepted.out_of_order:
        metrics.out_of_order_scan(step_id)


class TransitionStep:
    def __init__(
        self,
        step_id: str,
        config: TransitionConfig,
        identity: ShipmentIdentity,
        shipments: ShipmentDirectory | None,
        metrics: PipelineMetrics | None,
    ) -> None:
        self.step_id = step_id
        self.config = config
        self._identity = identity
        self._shipments = shipments
        self._metrics = metrics

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        if not isinstance(value, ScanEvent):
            raise TypeError(f"{self.step_id}: expected a ScanEvent (run validate first), got {type(value)}")
        if ctx.state is None:
            raise RuntimeError(f"{self.step_id}: stateful step called without state")
        return apply_scan(
            ctx.state,
            value,
            config=self.config,
            identity=self._identity,
            shipments=self._shipments,
            step_id=self.step_id,
            metrics=self._metrics,
            position=(ctx.message.partition, ctx.message.offset) if ctx.message is not None else None,
        )


@operator("transition", config=TransitionConfig, stateful=True, rejects=REJECT_REASONS)
def build_transition(ctx: BuildContext, config: TransitionConfig) -> TransitionStep:
    """Enforce the shipment state machine per shipment_id; dedupe event ids; count attempts."""
    identity = ShipmentIdentity(
        ctx.resources.secret(config.tracking_secret_env),
        return_prefix=config.return_tracking_prefix,
        label_prefix=config.label_tracking_prefix,
    )
    shipments: ShipmentDirectory = ctx.require("shipments")
    return TransitionStep(ctx.step_id, config, identity, shipments, ctx.resources.metrics)
