"""transition: the whole state machine of DESIGN.md section 5, duplicates, attempt counting with
the linked return, and rebuilding missing state from the shipment directory."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from models.domain import (
    AttemptPolicy,
    EventType,
    ReasonCode,
    ScanEvent,
    ServiceLevel,
    ShipmentSnapshot,
    Status,
)
from operators.metrics import PipelineMetrics
from operators.ports import InMemoryShipments
from operators.registry import (
    BuildContext,
    DictState,
    Drop,
    Emit,
    MessageMeta,
    PrefixedState,
    Reject,
    ResourceError,
    Resources,
    StepContext,
)
from operators.transition import (
    RETURN_NAMESPACE,
    AcceptedScan,
    ShipmentIdentity,
    TransitionConfig,
    apply_scan,
    build_transition,
)
from topologies.testing import DEFAULT_NOW, scan_payload

SECRET = b"test-secret-0123456789abcdef"
IDENTITY = ShipmentIdentity(SECRET)
SHIPMENT = uuid.UUID("0b7e6a52-2f43-4f7e-9d6a-5b1c2d3e4f60")
ET = EventType
S = Status

# DESIGN.md section 5, written out here on purpose (not imported) so the test checks the code's
# tables against the contract rather than against themselves.
TARGET = {
    "LABEL_CREATED": "LABEL_CREATED",
    "PICKUP": "PICKED_UP",
    "ARRIVAL": "IN_TRANSIT",
    "DEPARTURE": "IN_TRANSIT",
    "OUT_FOR_DELIVERY": "OUT_FOR_DELIVERY",
    "DELIVERED": "DELIVERED",
    "DELIVERY_ATTEMPTED": "DELIVERY_ATTEMPTED",
    "EXCEPTION": "EXCEPTION",
    "RETURN_TO_SENDER": "RETURN_TO_SENDER",
}
ALLOWED = {
    "LABEL_CREATED": {"PICKED_UP", "EXCEPTION"},
    "PICKED_UP": {"IN_TRANSIT", "EXCEPTION"},
    "IN_TRANSIT": {"IN_TRANSIT", "OUT_FOR_DELIVERY", "EXCEPTION"},
    "OUT_FOR_DELIVERY": {"DELIVERED", "DELIVERY_ATTEMPTED", "EXCEPTION"},
    "DELIVERY_ATTEMPTED": {"OUT_FOR_DELIVERY", "IN_TRANSIT", "EXCEPTION", "RETURN_TO_SENDER"},
    "EXCEPTION": {"EXCEPTION", "IN_TRANSIT", "OUT_FOR_DELIVERY", "RETURN_TO_SENDER"},
    "DELIVERED": set(),
    "RETURN_TO_SENDER": set(),
}


def event(
    event_type: EventType | str,
    *,
    shipment_id: uuid.UUID = SHIPMENT,
    at: datetime | None = None,
    reason: ReasonCode | str | None = None,
    event_id: uuid.UUID | None = None,
) -> ScanEvent:
    body = scan_payload(
        event_type, shipment_id, created_at=at or DEFAULT_NOW, reason_code=reason, event_id=event_id
    )
    return ScanEvent.model_validate(body)


def snapshot(status: Status, **kw: Any) -> ShipmentSnapshot:
    base: dict[str, Any] = {
        "shipment_id": SHIPMENT,
        "tracking_number": "1ZTESTTRACK0001",
        "service_level": ServiceLevel.EXPRESS,
        "created_at": DEFAULT_NOW - timedelta(days=2),
        "status": status,
        "attempt_count": 0,
        "last_event_at": DEFAULT_NOW - timedelta(hours=1),
    }
    base.update(kw)
    return ShipmentSnapshot(**base)


class Harness:
    """One shipment's dict-backed state, namespaced like the engine does, plus a directory."""

    def __init__(
        self,
        config: TransitionConfig | None = None,
        snapshots: list[ShipmentSnapshot] | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.raw = DictState()
        self.state = PrefixedState(self.raw, "transition")
        self.config = config or TransitionConfig()
        self.directory = InMemoryShipments(snapshots)
        self.metrics = metrics

    def apply(self, ev: ScanEvent) -> Any:
        return apply_scan(
            self.state,
            ev,
            config=self.config,
            identity=IDENTITY,
            shipments=self.directory,
            metrics=self.metrics,
        )

    def accept(self, ev: ScanEvent) -> AcceptedScan:
        out = self.apply(ev)
        assert isinstance(out, Emit), out
        return out.value

    def put(self, status: Status, attempts: int = 0) -> None:
        """Start the shipment in `status` (as if rebuilt from the directory)."""
        self.directory.add(snapshot(status, attempt_count=attempts))

    @property
    def status(self) -> str:
        return self.raw.data["transition:shipment.v2"]["shipment"]["status"]


def any_event_for(event_type: str, **kw: Any) -> ScanEvent:
    # A reason that does not count as a delivery attempt, so the plain table is what is tested.
    reason = ReasonCode.WEATHER_DELAY if event_type in ("EXCEPTION", "DELIVERY_ATTEMPTED") else None
    if event_type == "DELIVERY_ATTEMPTED":
        reason = ReasonCode.RECIPIENT_UNAVAILABLE
    return event(event_type, reason=reason, **kw)


# --- the whole table ------------------------------------------------------------------------------

TABLE = [(s, e) for s in ALLOWED for e in TARGET]


@pytest.mark.parametrize(("current", "event_type"), TABLE, ids=[f"{s}-{e}" for s, e in TABLE])
def test_every_status_by_every_event_type(current: str, event_type: str) -> None:
    h = Harness()
    h.put(Status(current))
    out = h.apply(any_event_for(event_type))
    requested = TARGET[event_type]
    allowed = event_type != "LABEL_CREATED" and requested in ALLOWED[current]
    if current == "LABEL_CREATED" and event_type == "LABEL_CREATED":
        # The label API wrote the row first, then published the label scan: it creates the state.
        assert isinstance(out, Emit)
        assert out.value.previous_status is None and out.value.status is S.LABEL_CREATED
        assert out.value.created_by_scan is False
        return
    if allowed:
        assert isinstance(out, Emit), out
        acc = out.value
        assert acc.previous_status == Status(current)
        assert acc.scan_status == Status(requested)
        assert acc.status == Status(requested)
        assert h.status == requested
        assert (acc.return_shipment is not None) == (requested == "RETURN_TO_SENDER")
    else:
        assert isinstance(out, Reject), out
        assert out.reason == "invalid_transition"
        assert out.detail["shipment_id"] == str(SHIPMENT)
        assert out.detail["current"] == current
        assert out.detail["requested"] == requested
        # Nothing moved: the cached state (if any) equals the directory's row.
        assert h.raw.data.get("transition:shipment.v2", {}).get("shipment", {}).get("status", current) == current


@pytest.mark.parametrize(("current", "event_type"), TABLE, ids=[f"{s}-{e}" for s, e in TABLE])
def test_table_holds_with_stream_state_too(current: str, event_type: str) -> None:
    # Same table, but the state already lives in the stream (no directory involved).
    h = Harness()
    h.put(Status(current))
    h.apply(event("EXCEPTION", reason="weather_delay"))  # any scan, just to load state
    h.raw.data["transition:shipment.v2"]["shipment"]["status"] = current
    h.directory = InMemoryShipments()  # the directory must not be asked again
    out = h.apply(any_event_for(event_type))
    requested = TARGET[event_type]
    if event_type != "LABEL_CREATED" and requested in ALLOWED[current]:
        assert isinstance(out, Emit) and out.value.status == Status(requested)
    else:
        assert isinstance(out, Reject) and out.reason == "invalid_transition"
        assert h.status == current
    assert h.directory.loads == []


def test_code_tables_match_the_contract() -> None:
    from models.domain import ALLOWED as CODE_ALLOWED
    from models.domain import TARGET_STATUS

    assert {k.value: v.value for k, v in TARGET_STATUS.items()} == TARGET
    assert {k.value: {t.value for t in v} for k, v in CODE_ALLOWED.items()} == ALLOWED


def test_invalid_transition_is_logged_with_the_three_fields(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.put(S.PICKED_UP)
    with caplog.at_level(logging.WARNING, logger="operators.transition"):
        out = h.apply(event("DELIVERED"))
    assert isinstance(out, Reject)
    rec = next(r for r in caplog.records if r.name == "operators.transition")
    assert (rec.shipment_id, rec.current, rec.requested) == (str(SHIPMENT), "PICKED_UP", "DELIVERED")
    assert "current=PICKED_UP requested=DELIVERED" in rec.getMessage()


# --- a whole life ---------------------------------------------------------------------------------


def test_happy_path_from_label_to_delivered() -> None:
    h = Harness()
    t = DEFAULT_NOW
    steps = [
        ("LABEL_CREATED", None, S.LABEL_CREATED),
        ("PICKUP", None, S.PICKED_UP),
        ("ARRIVAL", None, S.IN_TRANSIT),
        ("DEPARTURE", None, S.IN_TRANSIT),
        ("ARRIVAL", None, S.IN_TRANSIT),
        ("OUT_FOR_DELIVERY", None, S.OUT_FOR_DELIVERY),
        ("DELIVERED", None, S.DELIVERED),
    ]
    previous = None
    for i, (et, reason, expected) in enumerate(steps):
        acc = h.accept(event(et, at=t + timedelta(hours=i), reason=reason))
        assert acc.status is expected
        assert acc.previous_status is previous
        previous = expected
    assert acc.attempt_count == 0 and acc.return_shipment is None
    assert acc.last_hub_scan_at == t + timedelta(hours=4)
    assert acc.last_event_at == t + timedelta(hours=6)


def test_label_created_for_an_unknown_shipment_creates_it_with_a_derived_tracking_number() -> None:
    h = Harness()
    acc = h.accept(event("LABEL_CREATED"))
    assert acc.created_by_scan is True
    assert acc.previous_status is None
    assert acc.shipment.tracking_number == IDENTITY.label_tracking_number(SHIPMENT)
    assert acc.shipment.tracking_number.startswith("PT") and len(acc.shipment.tracking_number) == 20
    assert acc.shipment.service_level is ServiceLevel.STANDARD
    assert acc.shipment.created_at == DEFAULT_NOW
    assert h.directory.loads == [SHIPMENT]


def test_label_created_twice_is_an_invalid_transition() -> None:
    h = Harness()
    h.accept(event("LABEL_CREATED"))
    out = h.apply(event("LABEL_CREATED"))
    assert isinstance(out, Reject) and out.reason == "invalid_transition"
    assert out.detail["current"] == "LABEL_CREATED" and out.detail["requested"] == "LABEL_CREATED"


def test_label_created_after_the_label_api_keeps_the_stored_facts() -> None:
    h = Harness(snapshots=[snapshot(S.LABEL_CREATED, last_event_at=None)])
    acc = h.accept(event("LABEL_CREATED"))
    assert acc.created_by_scan is False
    assert acc.shipment.tracking_number == "1ZTESTTRACK0001"
    assert acc.shipment.service_level is ServiceLevel.EXPRESS


# --- duplicates ---------------------------------------------------------------------------------------


def test_a_resent_event_id_is_dropped_and_changes_nothing() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "t")
    h = Harness(metrics=metrics)
    h.accept(event("LABEL_CREATED"))
    pickup = event("PICKUP")
    h.accept(pickup)
    state_before = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in h.raw.data.items()}
    out = h.apply(pickup)
    assert out == Drop("duplicate_event")
    assert h.raw.data == state_before
    assert (
        metrics.registry.get_sample_value(
            "parcel_duplicate_scans_total", {"topology": "t", "step": "transition"}
        )
        == 1
    )


def test_a_duplicate_terminal_scan_is_a_duplicate_not_an_invalid_transition() -> None:
    h = Harness()
    h.put(S.OUT_FOR_DELIVERY)
    delivered = event("DELIVERED")
    h.accept(delivered)
    assert h.apply(delivered) == Drop("duplicate_event")


def test_seen_ids_are_bounded_per_shipment() -> None:
    h = Harness(config=TransitionConfig(remember_event_ids=2))
    h.put(S.IN_TRANSIT)
    first = event("ARRIVAL")
    h.accept(first)
    h.accept(event("DEPARTURE"))
    h.accept(event("ARRIVAL"))
    assert len(h.raw.data["transition:shipment.v2"]["seen"]) == 2
    assert str(first.event_id) not in h.raw.data["transition:shipment.v2"]["seen"]
    # Forgotten: judged by the state machine again (IN_TRANSIT -> IN_TRANSIT is allowed).
    assert isinstance(h.apply(first), Emit)


def test_duplicates_survive_a_rebuild_when_the_directory_lists_recent_event_ids() -> None:
    seen = uuid.uuid4()
    h = Harness(snapshots=[snapshot(S.IN_TRANSIT, recent_event_ids=(seen,))])
    assert h.apply(event("ARRIVAL", event_id=seen)) == Drop("duplicate_event")
    assert h.status == "IN_TRANSIT"  # the rebuilt state was cached
    assert str(seen) in h.raw.data["transition:shipment.v2"]["seen"]


# --- attempts and return to sender ---------------------------------------------------------------


def run_attempts(h: Harness, scans: list[tuple[str, str | None]]) -> list[AcceptedScan]:
    out = []
    for i, (et, reason) in enumerate(scans):
        out.append(h.accept(event(et, reason=reason, at=DEFAULT_NOW + timedelta(hours=i))))
    return out


def test_third_delivery_attempt_returns_to_sender_in_the_same_step() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "t")
    h = Harness(metrics=metrics)
    h.put(S.OUT_FOR_DELIVERY)
    accepted = run_attempts(
        h,
        [
            ("DELIVERY_ATTEMPTED", "recipient_unavailable"),
            ("OUT_FOR_DELIVERY", None),
            ("DELIVERY_ATTEMPTED", "access_denied"),
            ("OUT_FOR_DELIVERY", None),
            ("DELIVERY_ATTEMPTED", "recipient_unavailable"),
        ],
    )
    assert [a.attempt_count for a in accepted] == [1, 1, 2, 2, 3]
    assert [a.status for a in accepted[:4]] == [S.DELIVERY_ATTEMPTED, S.OUT_FOR_DELIVERY] * 2
    last = accepted[-1]
    assert last.scan_status is S.DELIVERY_ATTEMPTED
    assert last.status is S.RETURN_TO_SENDER
    assert last.previous_status is S.OUT_FOR_DELIVERY
    assert last.attempt_counted and last.auto_returned
    ret = last.return_shipment
    assert ret is not None
    assert ret.return_of == SHIPMENT
    assert ret.shipment_id == uuid.uuid5(RETURN_NAMESPACE, f"return-shipment:{SHIPMENT}")
    assert ret.tracking_number == IDENTITY.return_tracking_number(SHIPMENT)
    assert ret.tracking_number.startswith("RT") and ret.tracking_number != "1ZTESTTRACK0001"
    assert ret.original_tracking_number == "1ZTESTTRACK0001"
    assert ret.reason_code is ReasonCode.MAX_ATTEMPTS_REACHED
    assert ret.trigger == "max_attempts" and ret.event_id is not None
    assert ret.service_level is ServiceLevel.EXPRESS
    assert h.status == "RETURN_TO_SENDER"
    # Terminal afterwards.
    out = h.apply(event("OUT_FOR_DELIVERY"))
    assert isinstance(out, Reject) and out.detail["current"] == "RETURN_TO_SENDER"
    g = metrics.registry.get_sample_value
    assert g("parcel_returns_to_sender_total", {"topology": "t", "trigger": "max_attempts"}) == 1
    assert (
        g(
            "parcel_transitions_total",
            {"topology": "t", "from_status": "DELIVERY_ATTEMPTED", "to_status": "RETURN_TO_SENDER"},
        )
        == 1
    )
    assert (
        g(
            "parcel_transitions_total",
            {"topology": "t", "from_status": "OUT_FOR_DELIVERY", "to_status": "DELIVERY_ATTEMPTED"},
        )
        == 3
    )


@pytest.mark.parametrize("reason", ["address_not_found", "access_denied", "recipient_unavailable", "refused"])
def test_exception_out_for_delivery_with_a_delivery_failure_reason_counts(reason: str) -> None:
    h = Harness()
    h.put(S.OUT_FOR_DELIVERY, attempts=2)
    acc = h.accept(event("EXCEPTION", reason=reason))
    assert acc.attempt_counted and acc.attempt_count == 3
    assert acc.scan_status is S.EXCEPTION and acc.status is S.RETURN_TO_SENDER
    assert acc.return_shipment is not None and acc.return_shipment.trigger == "max_attempts"


@pytest.mark.parametrize("reason", ["damaged", "weather_delay", "customs_hold", "vehicle_breakdown"])
def test_exception_with_another_reason_does_not_count(reason: str) -> None:
    h = Harness()
    h.put(S.OUT_FOR_DELIVERY, attempts=2)
    acc = h.accept(event("EXCEPTION", reason=reason))
    assert not acc.attempt_counted and acc.attempt_count == 2 and acc.status is S.EXCEPTION


def test_exception_outside_out_for_delivery_does_not_count() -> None:
    h = Harness()
    h.put(S.IN_TRANSIT, attempts=2)
    acc = h.accept(event("EXCEPTION", reason="recipient_unavailable"))
    assert not acc.attempt_counted and acc.status is S.EXCEPTION


def test_mixed_attempts_count_together() -> None:
    h = Harness()
    h.put(S.OUT_FOR_DELIVERY)
    accepted = run_attempts(
        h,
        [
            ("DELIVERY_ATTEMPTED", "recipient_unavailable"),
            ("OUT_FOR_DELIVERY", None),
            ("EXCEPTION", "damaged"),  # not counted
            ("OUT_FOR_DELIVERY", None),
            ("EXCEPTION", "refused"),
            ("OUT_FOR_DELIVERY", None),
            ("DELIVERY_ATTEMPTED", "address_not_found"),
        ],
    )
    assert [a.attempt_count for a in accepted] == [1, 1, 1, 1, 2, 2, 3]
    assert accepted[-1].status is S.RETURN_TO_SENDER


def test_attempt_policy_is_configuration() -> None:
    h = Harness(config=TransitionConfig(attempt_policy=AttemptPolicy(max_attempts=2)))
    h.put(S.OUT_FOR_DELIVERY, attempts=1)
    assert h.accept(event("DELIVERY_ATTEMPTED")).status is S.RETURN_TO_SENDER

    h = Harness(config=TransitionConfig(attempt_policy=AttemptPolicy(count_delivery_attempted=False)))
    h.put(S.OUT_FOR_DELIVERY, attempts=2)
    acc = h.accept(event("DELIVERY_ATTEMPTED"))
    assert acc.attempt_count == 2 and acc.status is S.DELIVERY_ATTEMPTED

    policy = AttemptPolicy(exception_reasons=frozenset({ReasonCode.DAMAGED}))
    h = Harness(config=TransitionConfig(attempt_policy=policy))
    h.put(S.OUT_FOR_DELIVERY, attempts=2)
    assert h.accept(event("EXCEPTION", reason="damaged")).status is S.RETURN_TO_SENDER


def test_a_return_to_sender_scan_starts_the_linked_return_too() -> None:
    h = Harness()
    h.put(S.EXCEPTION)
    acc = h.accept(event("RETURN_TO_SENDER", reason="refused"))
    ret = acc.return_shipment
    assert acc.status is S.RETURN_TO_SENDER and ret is not None
    assert ret.trigger == "scan" and ret.event_id is None and ret.reason_code is ReasonCode.REFUSED
    assert ret.shipment_id == IDENTITY.return_shipment_id(SHIPMENT)


def test_return_ids_are_deterministic_and_tracking_numbers_keyed_by_the_secret() -> None:
    other = uuid.uuid4()
    again = ShipmentIdentity(SECRET)
    assert again.return_shipment_id(SHIPMENT) == IDENTITY.return_shipment_id(SHIPMENT)
    assert again.return_tracking_number(SHIPMENT) == IDENTITY.return_tracking_number(SHIPMENT)
    assert IDENTITY.return_tracking_number(other) != IDENTITY.return_tracking_number(SHIPMENT)
    assert IDENTITY.return_shipment_id(other) != IDENTITY.return_shipment_id(SHIPMENT)
    other_secret = ShipmentIdentity(b"another-secret-0123456789")
    assert other_secret.return_tracking_number(SHIPMENT) != IDENTITY.return_tracking_number(SHIPMENT)
    assert other_secret.return_shipment_id(SHIPMENT) == IDENTITY.return_shipment_id(SHIPMENT)
    assert IDENTITY.return_tracking_number(SHIPMENT) != IDENTITY.label_tracking_number(SHIPMENT)


def test_replaying_the_same_scans_on_fresh_state_derives_the_same_return() -> None:
    scans = [("DELIVERY_ATTEMPTED", "refused"), ("OUT_FOR_DELIVERY", None)] * 2 + [
        ("DELIVERY_ATTEMPTED", "refused")
    ]
    results = []
    for _ in range(2):
        h = Harness()
        h.put(S.OUT_FOR_DELIVERY)
        results.append(run_attempts(h, scans)[-1].return_shipment)
    assert results[0] == results[1]


# --- missing state ----------------------------------------------------------------------------------


def test_missing_state_is_rebuilt_from_the_directory_once() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "t")
    h = Harness(snapshots=[snapshot(S.OUT_FOR_DELIVERY, attempt_count=2)], metrics=metrics)
    acc = h.accept(event("DELIVERY_ATTEMPTED"))
    assert acc.previous_status is S.OUT_FOR_DELIVERY
    assert acc.attempt_count == 3 and acc.status is S.RETURN_TO_SENDER
    assert acc.shipment.tracking_number == "1ZTESTTRACK0001"
    assert h.directory.loads == [SHIPMENT]
    h.apply(event("OUT_FOR_DELIVERY"))  # terminal now, from stream state: no second load
    assert h.directory.loads == [SHIPMENT]
    assert (
        metrics.registry.get_sample_value(
            "parcel_state_rebuilds_total", {"topology": "t", "step": "transition", "result": "found"}
        )
        == 1
    )


def test_rebuilt_state_keeps_last_event_at_and_marks_older_scans_out_of_order() -> None:
    h = Harness(snapshots=[snapshot(S.IN_TRANSIT, last_event_at=DEFAULT_NOW)])
    acc = h.accept(event("ARRIVAL", at=DEFAULT_NOW - timedelta(hours=3)))
    assert acc.out_of_order is True
    assert acc.last_event_at == DEFAULT_NOW  # never moves backwards


def test_an_invalid_scan_after_a_rebuild_caches_the_state_without_changing_it() -> None:
    h = Harness(snapshots=[snapshot(S.DELIVERED)])
    out = h.apply(event("OUT_FOR_DELIVERY"))
    assert isinstance(out, Reject) and out.reason == "invalid_transition"
    assert h.status == "DELIVERED"
    assert h.raw.data["transition:shipment.v2"]["seen"] == []


def test_unknown_shipment_is_rejected_never_guessed() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "t")
    h = Harness(metrics=metrics)
    out = h.apply(event("PICKUP"))
    assert out == Reject("unknown_shipment", {"shipment_id": str(SHIPMENT), "event_type": "PICKUP"})
    assert h.raw.data == {}
    assert (
        metrics.registry.get_sample_value(
            "parcel_state_rebuilds_total", {"topology": "t", "step": "transition", "result": "missing"}
        )
        == 1
    )


def test_a_directory_error_propagates() -> None:
    class Down:
        def load(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
            raise ConnectionError("postgres is away")

    with pytest.raises(ConnectionError):
        apply_scan(
            DictState(), event("PICKUP"), config=TransitionConfig(), identity=IDENTITY, shipments=Down()
        )


# --- ordering -----------------------------------------------------------------------------------------


def test_out_of_order_scans_are_judged_in_arrival_order() -> None:
    h = Harness()
    h.put(S.IN_TRANSIT)
    late = h.accept(event("OUT_FOR_DELIVERY", at=DEFAULT_NOW + timedelta(hours=2)))
    # A hub scan made earlier on the device arrives after OUT_FOR_DELIVERY: OUT_FOR_DELIVERY ->
    # IN_TRANSIT is not an edge, so it is rejected rather than moving the shipment backwards.
    out = h.apply(event("ARRIVAL", at=DEFAULT_NOW + timedelta(hours=1)))
    assert isinstance(out, Reject) and out.reason == "invalid_transition"
    # An older EXCEPTION is a legal edge: accepted, flagged, last_event_at unchanged.
    acc = h.accept(event("EXCEPTION", reason="weather_delay", at=DEFAULT_NOW + timedelta(hours=1)))
    assert acc.out_of_order and acc.last_event_at == late.last_event_at


# --- the step as the engine calls it ------------------------------------------------------------------


def test_the_step_keeps_its_state_under_its_own_prefix() -> None:
    resources = Resources(shipments=InMemoryShipments(), secrets={"PARCEL_TRACKING_SECRET": SECRET})
    step = build_transition(BuildContext("t", "track", "transition", resources), TransitionConfig())
    raw = DictState()
    meta = MessageMeta("scan-events", 0, 0, str(SHIPMENT).encode(), 0)
    out = step(event("LABEL_CREATED"), StepContext(meta, PrefixedState(raw, "track")))
    assert isinstance(out, Emit)
    assert set(raw.data) == {"track:shipment.v2"}


def test_the_factory_needs_the_secret_and_the_directory() -> None:
    cfg = TransitionConfig()
    with pytest.raises(ResourceError, match="PARCEL_TRACKING_SECRET"):
        build_transition(
            BuildContext("t", "transition", "transition", Resources(shipments=InMemoryShipments())), cfg
        )
    with pytest.raises(ResourceError, match="shipments"):
        build_transition(
            BuildContext(
                "t", "transition", "transition", Resources(secrets={"PARCEL_TRACKING_SECRET": SECRET})
            ),
            cfg,
        )
    with pytest.raises(ResourceError, match="too short"):
        Resources(secrets={"X": "short"}).secret("X")


def test_a_label_without_state_asks_the_directory_for_a_label_and_other_scans_for_a_rebuild() -> None:
    class Labels(InMemoryShipments):
        def __init__(self) -> None:
            super().__init__([snapshot(S.LABEL_CREATED)])
            self.label_loads: list[uuid.UUID] = []

        def load_label(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
            self.label_loads.append(shipment_id)
            return super().load(shipment_id, before)

    directory = Labels()
    out = apply_scan(DictState(), event("LABEL_CREATED"), config=TransitionConfig(), identity=IDENTITY,
                     shipments=directory)
    assert isinstance(out, Emit) and directory.label_loads == [SHIPMENT]
    out = apply_scan(DictState(), event("PICKUP"), config=TransitionConfig(), identity=IDENTITY, shipments=directory)
    assert isinstance(out, Emit) and directory.label_loads == [SHIPMENT]  # a rebuild: `load`, not `load_label`
