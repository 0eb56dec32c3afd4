"""The day simulator and the producer helper (simulator/day.py, simulator/produce.py).

The referee below is an independent reading of DESIGN.md sections 4-5 (validate, dedupe by
event_id, ALLOWED, AttemptPolicy): it classifies every message by its bytes alone and must agree
with the simulator's labels and expected outcome.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]

from models.domain import (  # noqa: E402
    ALLOWED,
    TARGET_STATUS,
    TERMINAL,
    AttemptPolicy,
    EventType,
    ReasonCode,
    ScanEvent,
    ServiceLevel,
    Status,
)
from simulator.day import (  # noqa: E402
    MAX_PAYLOAD_BYTES,
    DayKnobs,
    SimDay,
    SimMessage,
    SimShipment,
    accepted_counts,
    ending_before,
    expected_final,
    generate_day,
    random_shipments,
)
from simulator.facilities import Network, haversine_km  # noqa: E402
from simulator.produce import ProduceError, Restamper, produce  # noqa: E402

START = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)  # a Monday
FAULTY = DayKnobs(
    seed=7,
    exception_share=0.10,
    failed_attempt_share=0.15,
    return_share=0.05,
    duplicate_share=0.05,
    invalid_transition_share=0.04,
    malformed_share=0.06,
)


@pytest.fixture(scope="module")
def net() -> Network:
    return Network.load()


@pytest.fixture(scope="module")
def ships(net: Network) -> list[SimShipment]:
    return random_shipments(net, 400, seed=11, start=START)


@pytest.fixture(scope="module")
def day(net: Network, ships: list[SimShipment]) -> SimDay:
    return generate_day(net, ships, FAULTY)


# ------------------------------------------------------------------------------------------------
# Referee


def _created_at(d: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))


def referee(
    messages: list[SimMessage],
    net: Network,
    shipment_ids: list[str],
    clock: datetime,
    policy: AttemptPolicy | None = None,
    initial: Status | None = Status.LABEL_CREATED,
) -> tuple[list[tuple[str, str | None]], dict[str, tuple[Status | None, int]], dict[str, int]]:
    policy = policy or AttemptPolicy()
    status: dict[str, Status | None] = {s: initial for s in shipment_ids}
    attempts = dict.fromkeys(shipment_ids, 0)
    accepted = dict.fromkeys(shipment_ids, 0)
    seen: set[str] = set()
    verdicts: list[tuple[str, str | None]] = []
    for m in messages:
        if len(m.value) > MAX_PAYLOAD_BYTES:
            verdicts.append(("malformed", "oversized_payload"))
            continue
        try:
            raw = json.loads(m.value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            verdicts.append(("malformed", "malformed_json"))
            continue
        try:
            if not isinstance(raw, dict):
                raise TypeError
            ev = ScanEvent.model_validate(raw)
        except (ValidationError, TypeError) as exc:
            missing_reason = isinstance(exc, ValidationError) and any(
                "reason_code is required" in e["msg"] for e in exc.errors()
            )
            verdicts.append(("malformed", "missing_reason_code" if missing_reason else "invalid_payload"))
            continue
        if ev.facility_id is not None and ev.facility_id not in net:
            verdicts.append(("malformed", "unknown_facility"))
            continue
        if ev.created_at > clock + timedelta(hours=1):
            verdicts.append(("malformed", "time_in_future"))
            continue
        if str(ev.event_id) in seen:
            verdicts.append(("duplicate", None))
            continue
        sid = str(ev.shipment_id)
        current = status[sid]
        target = TARGET_STATUS[ev.event_type]
        legal = ev.event_type is EventType.LABEL_CREATED if current is None else target in ALLOWED[current]
        if not legal:
            verdicts.append(("invalid_transition", "invalid_transition"))
            continue
        seen.add(str(ev.event_id))
        if current is not None and policy.counts(current, ev):
            attempts[sid] += 1
        if attempts[sid] >= policy.max_attempts and target not in TERMINAL:
            assert Status.RETURN_TO_SENDER in ALLOWED[target]
            target = Status.RETURN_TO_SENDER
        status[sid] = target
        accepted[sid] += 1
        verdicts.append(("valid", None))
    return verdicts, {s: (status[s], attempts[s]) for s in shipment_ids}, accepted


def _referee_day(d: SimDay, net: Network, **kw: Any) -> None:
    valid_times = [m.at for m in d.messages if m.kind != "malformed" and m.at is not None]
    clock = max(valid_times) if valid_times else START
    verdicts, final, accepted = referee(d.messages, net, [s.shipment_id for s in d.shipments], clock, **kw)
    for m, v in zip(d.messages, verdicts, strict=True):
        assert (m.kind, m.expected_reason) == v, (m, v)
    assert d.expected == final
    assert d.accepted_counts == accepted


# ------------------------------------------------------------------------------------------------
# Determinism and shape


def test_same_seed_same_day(net: Network, ships: list[SimShipment], day: SimDay) -> None:
    again = generate_day(net, random_shipments(net, 400, seed=11, start=START), FAULTY)
    assert again.messages == day.messages
    assert again.expected == day.expected
    other = generate_day(net, ships, FAULTY.model_copy(update={"seed": 8}))
    assert other.messages != day.messages


def test_random_shipments(net: Network, ships: list[SimShipment]) -> None:
    assert ships == random_shipments(net, 400, seed=11, start=START)
    assert len({s.shipment_id for s in ships}) == 400
    assert {s.service_level for s in ships} == set(ServiceLevel)
    for s in ships:
        assert START <= s.created_at <= START + timedelta(hours=10)
        station = net[s.destination_facility_id]
        assert net.nearest_delivery_station(s.recipient_lat, s.recipient_lng) == station
        assert haversine_km(s.recipient_lat, s.recipient_lng, station.lat, station.lng) < 10


def test_messages_are_time_ordered_and_per_key_strictly_increasing(day: SimDay) -> None:
    ats = [m.at for m in day.messages]
    assert all(a is not None for a in ats)
    assert ats == sorted(ats)  # type: ignore[type-var]
    last: dict[bytes, datetime] = {}
    last_created: dict[bytes, datetime] = {}
    for m in day.messages:
        if m.key is None:
            continue
        assert m.at is not None
        assert m.key not in last or m.at > last[m.key]
        last[m.key] = m.at
        if m.kind in ("valid", "invalid_transition"):
            created = _created_at(json.loads(m.value))
            assert created == m.at  # a device stamps its scan when it sends it
            assert m.key not in last_created or created > last_created[m.key]
            last_created[m.key] = created


def test_every_valid_message_is_a_scan_event(day: SimDay) -> None:
    for m in day.messages:
        if m.kind in ("valid", "duplicate", "invalid_transition"):
            ev = ScanEvent.model_validate_json(m.value)
            assert m.key == str(ev.shipment_id).encode()
            assert m.event_id == str(ev.event_id) and m.event_type == ev.event_type
            assert ev.event_type is not EventType.LABEL_CREATED  # the label API sends those


def test_labels_and_outcome_agree_with_the_referee(net: Network, day: SimDay) -> None:
    _referee_day(day, net)


def test_expected_final_replays_the_valid_messages(day: SimDay) -> None:
    assert expected_final(day.shipments, day.messages) == day.expected
    assert day.expected_final() == day.expected
    some = day.shipments[:5]
    assert day.expected_final(some) == {s.shipment_id: day.expected[s.shipment_id] for s in some}
    assert accepted_counts(day.shipments, day.messages) == day.accepted_counts
    for o in day.expected.values():  # Outcome is a (status, attempt_count) tuple
        assert o == (o.status, o.attempt_count)


def test_requested_shares_roughly_respected(day: SimDay) -> None:
    n = len(day.messages)
    kinds = Counter(m.kind for m in day.messages)
    assert kinds == day.kinds
    assert kinds["duplicate"] / n == pytest.approx(FAULTY.duplicate_share, abs=0.01)
    assert kinds["invalid_transition"] / n == pytest.approx(FAULTY.invalid_transition_share, abs=0.01)
    assert kinds["malformed"] / n == pytest.approx(FAULTY.malformed_share, abs=0.01)
    reasons = Counter(m.expected_reason for m in day.messages if m.kind == "malformed")
    assert set(reasons) == {
        "malformed_json",
        "invalid_payload",
        "missing_reason_code",
        "unknown_facility",
        "time_in_future",
        "oversized_payload",
    }

    ships = len(day.shipments)
    outcomes = Counter(o.status for o in day.expected.values())
    assert outcomes[Status.RETURN_TO_SENDER] == round(FAULTY.return_share * ships)
    assert outcomes[Status.DELIVERED] == ships - outcomes[Status.RETURN_TO_SENDER]
    failed = sum(1 for o in day.expected.values() if o.attempt_count > 0)
    assert failed == round(FAULTY.failed_attempt_share * ships)

    failure_reasons = {"address_not_found", "access_denied", "recipient_unavailable", "refused"}
    operational = set()
    for m in day.messages:
        if m.kind == "valid" and m.event_type == "EXCEPTION":
            d = json.loads(m.value)
            if d["reason_code"] not in failure_reasons or d.get("driver_id") is None:
                operational.add(m.shipment_id)
    assert len(operational) == round(FAULTY.exception_share * ships)


def test_clean_day_has_only_valid_messages(net: Network, ships: list[SimShipment]) -> None:
    d = generate_day(
        net,
        ships[:50],
        DayKnobs(
            seed=1,
            duplicate_share=0,
            invalid_transition_share=0,
            malformed_share=0,
            exception_share=0,
            failed_attempt_share=0,
            return_share=0,
        ),
    )
    assert {m.kind for m in d.messages} == {"valid"}
    assert all(o == (Status.DELIVERED, 0) for o in d.expected.values())


# ------------------------------------------------------------------------------------------------
# Journeys


def _valid_by_shipment(d: SimDay) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in d.messages:
        if m.kind == "valid":
            out[m.shipment_id or ""].append(json.loads(m.value))
    return out


def test_journeys_follow_the_route(net: Network, day: SimDay) -> None:
    journeys = _valid_by_shipment(day)
    for s in day.shipments:
        evs = journeys[s.shipment_id]
        assert evs[0]["event_type"] == "PICKUP" and evs[0]["facility_id"] == s.origin_facility_id
        path = [f.facility_id for f in net.route(s.origin_facility_id, s.destination_facility_id)]
        hops = [(e["event_type"], e["facility_id"]) for e in evs if e["event_type"] in ("ARRIVAL", "DEPARTURE")]
        # Each route facility is arrived at (except the origin) and left (except the station), in order;
        # a missorted parcel additionally visits one wrong sort center.
        expected = [("DEPARTURE", path[0])]
        for f in path[1:-1]:
            expected += [("ARRIVAL", f), ("DEPARTURE", f)]
        expected.append(("ARRIVAL", path[-1]))
        it = iter(hops)
        assert all(h in it for h in expected), (s.shipment_id, hops)
        assert len(hops) in (len(expected), len(expected) + 2)
        final = day.expected[s.shipment_id]
        last = evs[-1]
        if final.status is Status.DELIVERED:
            assert last["event_type"] == "DELIVERED"
            assert (
                haversine_km(last["location"]["lat"], last["location"]["lng"], s.recipient_lat, s.recipient_lng) < 0.1
            )
        else:
            assert final == (Status.RETURN_TO_SENDER, 3)
            assert last["event_type"] in ("DELIVERY_ATTEMPTED", "EXCEPTION")
        for e in evs:
            if e["event_type"] in ("OUT_FOR_DELIVERY", "DELIVERED", "DELIVERY_ATTEMPTED"):
                assert e["driver_id"].startswith("DRV-") and e["route_id"].startswith("RTE-")
                assert e["facility_id"] == s.destination_facility_id


def test_nothing_is_sent_after_the_returning_attempt(day: SimDay) -> None:
    returned = {sid for sid, o in day.expected.items() if o.status is Status.RETURN_TO_SENDER}
    assert returned
    last_valid: dict[str, datetime] = {}
    for m in day.messages:
        if m.kind == "valid" and m.shipment_id in returned and m.at is not None:
            last_valid[m.shipment_id] = m.at
    for m in day.messages:
        if m.shipment_id in returned and m.key is not None:
            assert m.at is not None and m.at <= last_valid[m.shipment_id]


def test_attempts_count_as_the_policy_says(day: SimDay) -> None:
    journeys = _valid_by_shipment(day)
    kinds: Counter[str] = Counter()
    for sid, evs in journeys.items():
        counted = 0
        state = Status.LABEL_CREATED
        for e in evs:
            if e["event_type"] == "DELIVERY_ATTEMPTED":
                counted += 1
                kinds["attempted"] += 1
            elif e["event_type"] == "EXCEPTION" and state is Status.OUT_FOR_DELIVERY:
                if e["reason_code"] in (
                    "address_not_found",
                    "access_denied",
                    "recipient_unavailable",
                    "refused",
                ):
                    counted += 1
                    kinds["exception_counted"] += 1
                else:
                    kinds["exception_not_counted"] += 1
            state = TARGET_STATUS[EventType(e["event_type"])]
        assert day.expected[sid].attempt_count == counted
    assert kinds["attempted"] and kinds["exception_counted"] and kinds["exception_not_counted"]


def test_service_levels_have_plausible_transit_times(day: SimDay) -> None:
    journeys = _valid_by_shipment(day)
    days: dict[ServiceLevel, list[float]] = defaultdict(list)
    for s in day.shipments:
        if day.expected[s.shipment_id] != (Status.DELIVERED, 0):
            continue
        evs = journeys[s.shipment_id]
        if any(e["event_type"] == "EXCEPTION" for e in evs):
            continue
        days[s.service_level].append((_created_at(evs[-1]) - s.created_at).total_seconds() / 86400)
    med = {k: statistics.median(v) for k, v in days.items()}
    assert med[ServiceLevel.OVERNIGHT] < med[ServiceLevel.EXPRESS] < med[ServiceLevel.STANDARD]
    assert med[ServiceLevel.STANDARD] < med[ServiceLevel.ECONOMY]
    overnight = sorted(days[ServiceLevel.OVERNIGHT])
    assert overnight[int(0.9 * len(overnight))] < 1.5 and overnight[-1] < 2.5
    assert 1.5 < med[ServiceLevel.STANDARD] < 5.5
    assert max(max(v) for v in days.values()) < 12


def test_out_for_delivery_leaves_in_the_local_morning(net: Network, day: SimDay) -> None:
    for m in day.messages:
        if m.kind == "valid" and m.event_type == "OUT_FOR_DELIVERY":
            d = json.loads(m.value)
            f = net[d["facility_id"]]
            local = _created_at(d) + timedelta(hours=round(f.lng / 15))
            assert 6 <= local.hour <= 11


# ------------------------------------------------------------------------------------------------
# Faults


def test_duplicates_resend_an_accepted_scan_byte_for_byte(day: SimDay) -> None:
    sent: dict[str | None, SimMessage] = {}
    for m in day.messages:
        if m.kind == "valid":
            sent[m.event_id] = m
        elif m.kind == "duplicate":
            orig = sent[m.event_id]
            assert (m.key, m.value) == (orig.key, orig.value)
            assert m.expected_reason is None


def test_malformed_messages_are_what_they_claim(net: Network, day: SimDay) -> None:
    horizon = max(m.at for m in day.messages if m.at is not None)
    seen: Counter[str | None] = Counter()
    for m in day.messages:
        if m.kind != "malformed":
            continue
        seen[m.expected_reason] += 1
        if m.expected_reason == "oversized_payload":
            assert len(m.value) > MAX_PAYLOAD_BYTES
            ScanEvent.model_validate_json(m.value)  # otherwise a perfectly good scan
        elif m.expected_reason == "time_in_future":
            ev = ScanEvent.model_validate_json(m.value)
            assert ev.created_at >= horizon + timedelta(days=1)
        elif m.expected_reason == "unknown_facility":
            ev = ScanEvent.model_validate_json(m.value)
            assert ev.facility_id is not None and ev.facility_id not in net
        elif m.expected_reason == "malformed_json":
            with pytest.raises(ValueError):
                json.loads(m.value.decode("utf-8"))
    assert seen["malformed_json"] and seen["oversized_payload"]
    assert any(m.key is None for m in day.messages if m.kind == "malformed")


def test_invalid_transitions_cover_the_classic_mistakes(day: SimDay) -> None:
    kinds: Counter[tuple[Status, str | None]] = Counter()
    status: dict[str | None, Status] = defaultdict(lambda: Status.LABEL_CREATED)
    for m in day.messages:
        if m.kind == "valid":
            status[m.shipment_id] = TARGET_STATUS[EventType(m.event_type or "")]
        elif m.kind == "invalid_transition":
            kinds[(status[m.shipment_id], m.event_type)] += 1
    assert kinds[(Status.IN_TRANSIT, "DELIVERED")]  # DELIVERED before OUT_FOR_DELIVERY
    assert sum(v for (s, _), v in kinds.items() if s is Status.DELIVERED)  # scans after DELIVERED


# ------------------------------------------------------------------------------------------------
# Knobs


def test_speedup_and_start_move_only_the_clock(net: Network, ships: list[SimShipment], day: SimDay) -> None:
    start = datetime(2026, 1, 5, 12, tzinfo=UTC)
    fast = generate_day(net, ships, FAULTY.model_copy(update={"speedup": 60.0, "start": start}))
    assert fast.expected == day.expected
    assert [(m.kind, m.expected_reason, m.key) for m in fast.messages] == [
        (m.kind, m.expected_reason, m.key) for m in day.messages
    ]
    assert fast.shipments[0].created_at == start
    span = (day.last_at - day.first_at).total_seconds()  # type: ignore[operator]
    fast_span = (fast.last_at - fast.first_at).total_seconds()  # type: ignore[operator]
    assert fast_span == pytest.approx(span / 60, rel=0.01)
    _referee_day(fast, net)
    test_messages_are_time_ordered_and_per_key_strictly_increasing(fast)


def test_huge_speedup_keeps_per_key_order(net: Network, ships: list[SimShipment]) -> None:
    d = generate_day(net, ships[:60], FAULTY.model_copy(update={"speedup": 10_000_000.0}))
    test_messages_are_time_ordered_and_per_key_strictly_increasing(d)
    _referee_day(d, net)


def test_until_cuts_the_day(net: Network, ships: list[SimShipment], day: SimDay) -> None:
    until = START + timedelta(days=2)
    cut = generate_day(net, ships, FAULTY.model_copy(update={"until": until}))
    assert cut.messages == [m for m in day.messages if m.at is not None and m.at < until]
    assert Counter(o.status for o in cut.expected.values())[Status.IN_TRANSIT] > 0
    _referee_day(cut, net)


def test_now_pushes_future_scans_past_the_real_clock(net: Network, ships: list[SimShipment]) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    d = generate_day(
        net,
        ships[:100],
        FAULTY.model_copy(update={"now": now, "malformed_share": 0.3, "malformed_mix": {"time_in_future": 1.0}}),
    )
    future = [m for m in d.messages if m.expected_reason == "time_in_future"]
    assert future
    for m in future:
        assert ScanEvent.model_validate_json(m.value).created_at >= now + timedelta(days=1)


def test_ending_before_places_the_day_just_before_a_given_time(
    net: Network, ships: list[SimShipment], day: SimDay
) -> None:
    end = datetime(2026, 2, 1, 12, tzinfo=UTC)
    knobs = ending_before(net, ships, FAULTY, end)
    placed = generate_day(net, ships, knobs)
    assert placed.last_at is not None and end - timedelta(seconds=2) < placed.last_at < end
    assert placed.expected == day.expected
    assert knobs.now == end
    for m in placed.messages:
        if m.expected_reason == "time_in_future":
            assert ScanEvent.model_validate_json(m.value).created_at > end + timedelta(days=1)


def test_label_created_on_request(net: Network, ships: list[SimShipment]) -> None:
    d = generate_day(net, ships[:80], FAULTY.model_copy(update={"emit_label_created": True}))
    firsts: dict[str, str] = {}
    for m in d.messages:
        if m.kind == "valid" and m.shipment_id not in firsts:
            firsts[m.shipment_id or ""] = m.event_type or ""
    assert set(firsts.values()) == {"LABEL_CREATED"} and len(firsts) == 80
    assert all(d.accepted_counts[s] >= 7 for s in firsts)
    _referee_day(d, net, initial=None)
    assert expected_final(d.shipments, d.messages, initial=None) == d.expected


def test_attempt_policy_is_configuration(net: Network, ships: list[SimShipment]) -> None:
    policy = AttemptPolicy(max_attempts=2, exception_reasons=frozenset({ReasonCode.RECIPIENT_UNAVAILABLE}))
    d = generate_day(net, ships, FAULTY.model_copy(update={"policy": policy}))
    returned = [o for o in d.expected.values() if o.status is Status.RETURN_TO_SENDER]
    assert returned and all(o.attempt_count == 2 for o in returned)
    assert all(o.attempt_count < 2 for o in d.expected.values() if o.status is Status.DELIVERED)
    _referee_day(d, net, policy=policy)


def test_knob_validation() -> None:
    with pytest.raises(ValidationError, match="return_share"):
        DayKnobs(failed_attempt_share=0.01, return_share=0.02)
    with pytest.raises(ValidationError, match="time zone"):
        DayKnobs(start=datetime(2025, 1, 1))
    with pytest.raises(ValidationError, match="unknown malformed"):
        DayKnobs(malformed_mix={"gibberish": 1.0})
    with pytest.raises(ValidationError):
        DayKnobs(duplicate_share=0.4, invalid_transition_share=0.3, malformed_share=0.3)


def test_shipments_as_mappings_and_bad_facilities(net: Network, ships: list[SimShipment]) -> None:
    s = ships[0]
    as_dict = {
        "shipment_id": s.shipment_id,
        "tracking_number": s.tracking_number,
        "service_level": "EXPRESS",
        "origin_facility_id": s.origin_facility_id,
        "destination_facility_id": s.destination_facility_id,
        "recipient_lat": s.recipient_lat,
        "recipient_lng": s.recipient_lng,
        "created_at": s.created_at.isoformat().replace("+00:00", "Z"),
    }
    d = generate_day(net, [as_dict], DayKnobs(seed=1))
    assert d.shipments[0].service_level is ServiceLevel.EXPRESS
    with pytest.raises(ValueError, match="not a known delivery_station"):
        generate_day(net, [{**as_dict, "destination_facility_id": "US-SC-SEA"}])
    with pytest.raises(ValueError, match="duplicate"):
        generate_day(net, [as_dict, as_dict])
    assert generate_day(net, []).messages == []


# ------------------------------------------------------------------------------------------------
# Producer


class FakeProducer:
    def __init__(self, fail_every: int = 0, full_every: int = 0):
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.timestamps: list[int | None] = []
        self.pending: list[Any] = []
        self.fail_every, self.full_every = fail_every, full_every
        self.calls = 0

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        on_delivery: Any = None,
        timestamp: int | None = None,
    ) -> None:
        self.calls += 1
        if self.full_every and self.calls % self.full_every == 0:
            raise BufferError("queue full")
        self.records.append((topic, key, value))
        self.timestamps.append(timestamp)
        err = "broker down" if self.fail_every and len(self.records) % self.fail_every == 0 else None
        self.pending.append((on_delivery, err))

    def poll(self, timeout: float = 0) -> int:
        served, self.pending = self.pending, []
        for cb, err in served:
            cb(err, None)
        return len(served)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


def test_produce_sends_in_order_and_counts(day: SimDay) -> None:
    fake = FakeProducer(full_every=97)
    res = produce(day.messages, "unused:9092", "scan-events", progress=False, producer=fake)
    assert res.sent == res.delivered == len(day.messages) and res.failed == 0
    assert res.by_kind == day.kinds
    assert [(k, v) for _, k, v in fake.records] == [(m.key, m.value) for m in day.messages]
    # CreateTime = simulated send time, so a validator judging times by record timestamp agrees
    assert fake.timestamps == [int(m.at.timestamp() * 1000) for m in day.messages if m.at is not None]
    plain = FakeProducer()
    produce(day.messages[:10], "x:1", "t", progress=False, producer=plain, record_timestamps=False)
    assert plain.timestamps == [None] * 10


def test_produce_reports_failed_deliveries(day: SimDay) -> None:
    msgs = day.messages[:100]
    with pytest.raises(ProduceError, match="10 of 100"):
        produce(msgs, "x:1", "t", progress=False, producer=FakeProducer(fail_every=10))
    res = produce(msgs, "x:1", "t", progress=False, producer=FakeProducer(fail_every=10), raise_on_error=False)
    assert (res.delivered, res.failed, len(res.errors)) == (90, 10, 10)


def test_produce_rate_limit_paces_sends(day: SimDay) -> None:
    t = [0.0]
    res = produce(
        day.messages[:200],
        "x:1",
        "t",
        progress=False,
        producer=FakeProducer(),
        rate_per_s=100,
        clock=lambda: t[0],
        sleep=lambda s: t.__setitem__(0, t[0] + s),
    )
    assert res.elapsed_s == pytest.approx(1.99)
    with pytest.raises(ValueError):
        produce(day.messages[:1], "x:1", "t", progress=False, producer=FakeProducer(), rate_per_s=0)


def test_restamp_moves_created_at_to_send_time(day: SimDay) -> None:
    t0 = datetime(2031, 6, 1, tzinfo=UTC)
    real = [t0]

    def now() -> datetime:
        real[0] += timedelta(milliseconds=1)
        return real[0]

    fake = FakeProducer()
    produce(day.messages, "x:1", "t", progress=False, producer=fake, restamp=True, now=now)
    assert set(fake.timestamps) == {None}  # the producer's own clock is the send time
    first: dict[str, bytes] = {}
    last: dict[bytes, datetime] = {}
    for m, (_, key, value) in zip(day.messages, fake.records, strict=True):
        if m.kind == "malformed" and m.expected_reason in ("malformed_json", "invalid_payload"):
            continue
        d = json.loads(value)
        created = _created_at(d)
        if m.expected_reason == "time_in_future":
            assert created > real[0] + timedelta(days=1)
        else:
            assert t0 < created <= real[0]  # the (fake) wall clock while the day was being sent
        if m.kind == "valid":
            first[m.event_id or ""] = value
            assert key is not None and (key not in last or created > last[key])
            last[key] = created
        if m.kind == "duplicate":
            assert value == first[m.event_id or ""]
        if m.expected_reason == "oversized_payload":
            assert len(value) > MAX_PAYLOAD_BYTES


def test_restamper_leaves_unparseable_values_alone() -> None:
    stamp = Restamper(lambda: datetime(2031, 1, 1, tzinfo=UTC))
    m = SimMessage(b"k", b"{not json", "malformed", "malformed_json", at=START)
    assert stamp(m) == b"{not json"
    naive = SimMessage(b"k", b'{"created_at": "2025-01-01T00:00:00"}', "malformed", "invalid_payload", at=START)
    assert stamp(naive) == naive.value
