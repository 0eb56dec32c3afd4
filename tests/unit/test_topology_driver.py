"""The shipped scan-pipeline topology through the local driver: no broker, the real steps, the real
rule-based ETA estimator, in-memory facility and shipment directories."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from models.domain import Facility, FacilityType, ShipmentSnapshot, Status
from models.eta.rules import RuleEstimator
from operators.metrics import PipelineMetrics
from operators.ports import InMemoryFacilities, InMemoryShipments
from operators.registry import Emit, Registry, Resources, StepConfig, load_components
from operators.transition import AcceptedScan
from topologies.driver import TopologyTestDriver
from topologies.spec import TopologySpec
from topologies.testing import DEFAULT_NOW, FrozenClock, scan_payload

SCAN_PIPELINE = Path(__file__).resolve().parents[2] / "topologies" / "scan_pipeline.yaml"
SECRET = "driver-test-secret-0123456789"
ENVELOPE_KEYS = {
    "topology",
    "step",
    "reason",
    "detail",
    "source",
    "key",
    "value",
    "value_encoding",
    "value_truncated",
    "failed_at",
}
NORMALIZED_KEYS = {
    "event_id",
    "shipment_id",
    "tracking_number",
    "event_type",
    "status",
    "previous_status",
    "reason_code",
    "attempt_count",
    "facility",
    "created_at",
    "eta",
    "return_shipment",
}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry(), "scan-pipeline")


@pytest.fixture
def shipments() -> InMemoryShipments:
    return InMemoryShipments()


@pytest.fixture
def driver(clock: FrozenClock, metrics: PipelineMetrics, shipments: InMemoryShipments) -> TopologyTestDriver:
    facilities = InMemoryFacilities(
        [
            Facility(
                facility_id="HUB-1", name="Lyon Hub", city="Lyon", type=FacilityType.HUB, lat=45.7, lng=4.8
            ),
            Facility(
                facility_id="DS-9",
                name="Villeurbanne",
                city="Villeurbanne",
                type=FacilityType.DELIVERY_STATION,
            ),
        ]
    )
    resources = Resources(
        clock=clock,
        facilities=facilities,
        facility_lookup=facilities,
        shipments=shipments,
        estimator=RuleEstimator(),
        metrics=metrics,
        secrets={"PARCEL_TRACKING_SECRET": SECRET},
    )
    return TopologyTestDriver(SCAN_PIPELINE, resources)


def scan(et: str, sid: uuid.UUID, hours: float = 0, **kw: Any) -> dict[str, Any]:
    return scan_payload(et, sid, created_at=DEFAULT_NOW + timedelta(hours=hours), **kw)


def send(driver: TopologyTestDriver, clock: FrozenClock, body: Any, key: Any) -> Any:
    # The records reach Kafka a little after the (simulated) scans were made.
    return driver.pipe(body, key=key, timestamp_ms=clock.ms + 12 * 3_600_000)


LIFE = [
    ("LABEL_CREATED", {}),
    ("PICKUP", {}),
    ("ARRIVAL", {}),
    ("DEPARTURE", {}),
    ("ARRIVAL", {"facility_id": "DS-9"}),
    ("OUT_FOR_DELIVERY", {"facility_id": "DS-9", "driver_id": "drv-7"}),
    ("DELIVERED", {"facility_id": None}),
]


def test_a_whole_life_is_persisted_enriched_and_published(
    driver: TopologyTestDriver, clock: FrozenClock
) -> None:
    sid = uuid.uuid4()
    for i, (et, kw) in enumerate(LIFE):
        send(driver, clock, scan(et, sid, i, **kw), sid)

    published = driver.output_values("notifications")
    assert [p["status"] for p in published] == [
        "LABEL_CREATED",
        "PICKED_UP",
        "IN_TRANSIT",
        "IN_TRANSIT",
        "IN_TRANSIT",
        "OUT_FOR_DELIVERY",
        "DELIVERED",
    ]
    assert all(NORMALIZED_KEYS <= set(p) for p in published)
    assert [r.key for r in driver.outputs["notifications"]] == [str(sid).encode()] * 7
    first, ofd, delivered = published[0], published[5], published[6]
    assert first["previous_status"] is None and first["tracking_number"].startswith("PT")
    assert ofd["facility"] == {"id": "DS-9", "name": "Villeurbanne", "city": "Villeurbanne"}
    assert ofd["driver_id"] == "drv-7"
    assert ofd["eta"]["source"] == "rule" and ofd["eta"]["at"] is not None
    assert delivered["facility"] is None and delivered["return_shipment"] is None

    # Both sinks got every accepted scan; the shipment sink sits after eta and sees the ETA.
    events = [r.value for r in driver.sinks["persist_events"]]
    rows = [r.value for r in driver.sinks["persist_shipment"]]
    assert len(events) == len(rows) == 7
    assert all(isinstance(v, AcceptedScan) for v in events + rows)
    assert all(v.eta is None for v in events) and all(v.eta is not None for v in rows)
    assert driver.dead_letters == []
    assert set(driver.state(sid)) == {"transition:shipment.v2"}


def test_bad_input_is_dead_lettered_and_valid_scans_around_it_flow_on(
    driver: TopologyTestDriver, clock: FrozenClock, metrics: PipelineMetrics
) -> None:
    sid = uuid.uuid4()
    good = [scan("LABEL_CREATED", sid, 0), scan("PICKUP", sid, 1), scan("ARRIVAL", sid, 2)]
    bad = [
        (b"\x00\xffnot json", sid, "malformed_json", "validate"),
        (orjson.dumps({**scan("ARRIVAL", sid), "event_type": "BEAMED"}), sid, "invalid_payload", "validate"),
        (scan("ARRIVAL", sid, facility_id="ATLANTIS"), sid, "unknown_facility", "validate"),
        (scan("ARRIVAL", sid), uuid.uuid4(), "key_mismatch", "validate"),
        (scan("DELIVERED", sid), sid, "invalid_transition", "transition"),
    ]
    stream = [good[0], bad[0], good[1], bad[1], bad[2], bad[3], bad[4], good[2]]
    for body in stream:
        if isinstance(body, tuple):
            send(driver, clock, body[0], body[1])
        else:
            send(driver, clock, body, sid)

    assert [p["event_type"] for p in driver.output_values()] == ["LABEL_CREATED", "PICKUP", "ARRIVAL"]
    assert [(d["reason"], d["step"]) for d in driver.dead_letters] == [(b[2], b[3]) for b in bad]
    for envelope in driver.dead_letters:
        assert set(envelope) == ENVELOPE_KEYS
        assert envelope["topology"] == "scan-pipeline"
        assert (
            envelope["source"]["topic"] == "scan-events" and envelope["failed_at"] == "2026-03-02T12:00:00Z"
        )
    offsets = [d["source"]["offset"] for d in driver.dead_letters]
    assert offsets == [1, 3, 4, 5, 6]
    assert driver.dead_letters[0]["value_encoding"] == "base64"
    transition = driver.dead_letters[-1]
    assert transition["detail"] == {
        "shipment_id": str(sid),
        "current": "PICKED_UP",
        "requested": "DELIVERED",
        "event_type": "DELIVERED",
    }
    assert transition["value"]["event_type"] == "DELIVERED" and transition["value_encoding"] == "json"
    # Rejected scans never reach a sink.
    assert len(driver.sinks["persist_events"]) == len(driver.sinks["persist_shipment"]) == 3

    g = metrics.registry.get_sample_value
    assert (
        g("parcel_step_records_total", {"topology": "scan-pipeline", "step": "validate", "outcome": "reject"})
        == 4
    )
    assert (
        g("parcel_step_records_total", {"topology": "scan-pipeline", "step": "validate", "outcome": "emit"})
        == 4
    )
    assert (
        g("parcel_step_records_total", {"topology": "scan-pipeline", "step": "normalize", "outcome": "emit"})
        == 3
    )
    assert (
        g(
            "parcel_dead_letters_total",
            {"topology": "scan-pipeline", "step": "transition", "reason": "invalid_transition"},
        )
        == 1
    )
    assert (
        g(
            "parcel_transitions_total",
            {"topology": "scan-pipeline", "from_status": "NONE", "to_status": "LABEL_CREATED"},
        )
        == 1
    )
    assert g("parcel_step_seconds_count", {"topology": "scan-pipeline", "step": "transition"}) == 4


def test_a_duplicate_is_neither_stored_nor_published_twice(
    driver: TopologyTestDriver, clock: FrozenClock, metrics: PipelineMetrics
) -> None:
    sid = uuid.uuid4()
    label = scan("LABEL_CREATED", sid)
    pickup = scan("PICKUP", sid, 1)
    for body in (label, pickup, pickup, label):
        send(driver, clock, body, sid)
    assert len(driver.output_values()) == 2
    assert len(driver.sinks["persist_events"]) == 2
    assert [(d.step, d.reason) for d in driver.dropped] == [("transition", "duplicate_event")] * 2
    assert driver.dead_letters == []
    assert (
        metrics.registry.get_sample_value(
            "parcel_dropped_records_total",
            {"topology": "scan-pipeline", "step": "transition", "reason": "duplicate_event"},
        )
        == 2
    )


def test_third_attempt_publishes_return_to_sender_with_the_linked_return(
    driver: TopologyTestDriver, clock: FrozenClock, shipments: InMemoryShipments
) -> None:
    sid = uuid.uuid4()
    shipments.add(
        ShipmentSnapshot(
            shipment_id=sid,
            tracking_number="1ZORIGINAL",
            created_at=DEFAULT_NOW - timedelta(days=3),
            status=Status.IN_TRANSIT,
            last_event_at=DEFAULT_NOW - timedelta(days=1),
        )
    )
    scans = []
    for attempt in range(3):
        scans.append(scan("OUT_FOR_DELIVERY", sid, 2 * attempt, facility_id="DS-9"))
        scans.append(scan("DELIVERY_ATTEMPTED", sid, 2 * attempt + 1, reason_code="recipient_unavailable"))
    for body in scans:
        send(driver, clock, body, sid)
    last = driver.output_values()[-1]
    assert (last["event_type"], last["status"], last["attempt_count"]) == (
        "DELIVERY_ATTEMPTED",
        "RETURN_TO_SENDER",
        3,
    )
    assert last["tracking_number"] == "1ZORIGINAL"
    assert last["return_shipment"]["tracking_number"].startswith("RT")
    assert last["eta"]["at"] is None  # nothing to predict once returned
    stored = driver.sinks["persist_shipment"][-1].value
    assert stored.return_shipment is not None and stored.return_shipment.return_of == sid
    assert shipments.loads == [sid]  # rebuilt once, then from stream state


def test_unknown_shipment_and_oversized_payload(driver: TopologyTestDriver, clock: FrozenClock) -> None:
    sid = uuid.uuid4()
    send(driver, clock, scan("PICKUP", sid), sid)
    big = orjson.dumps(scan("LABEL_CREATED", sid, raw_scan_data="x" * 70_000))
    send(driver, clock, big, sid)
    unknown, oversized = driver.dead_letters
    assert unknown["reason"] == "unknown_shipment" and unknown["step"] == "transition"
    assert oversized["reason"] == "oversized_payload"
    assert oversized["value_truncated"] is True and oversized["value_encoding"] == "text"
    assert len(oversized["value"].encode()) == 64 * 1024


def test_a_step_that_returns_a_non_outcome_is_a_bug_that_raises() -> None:
    reg: Registry = load_components().copy()

    class NoKnobs(StepConfig):
        pass

    @reg.operator("broken_step", config=NoKnobs)
    def broken(ctx: Any, config: NoKnobs) -> Any:
        """Returns a bare value instead of Emit (a bug)."""
        return lambda value, sctx: value

    @reg.operator("pass_step", config=NoKnobs)
    def passing(ctx: Any, config: NoKnobs) -> Any:
        """Emits its input."""
        return lambda value, sctx: Emit(value)

    spec = TopologySpec.model_validate(
        {
            "name": "t",
            "app": {"consumer_group": "t"},
            "input": {"topic": "in"},
            "dead_letter": {"topic": "dlq"},
            "steps": [{"id": "ok", "use": "pass_step"}, {"id": "bug", "use": "broken_step"}],
            "outputs": [{"topic": "out"}],
        }
    )
    d = TopologyTestDriver(spec, Resources(), reg)
    with pytest.raises(TypeError, match="step 'bug' returned bytes"):
        d.pipe(b"{}", key="k")
