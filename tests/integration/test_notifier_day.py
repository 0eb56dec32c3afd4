"""A simulated carrier day through the real scan pipeline and the notifier: labels (api/labels.py,
with realistic preferences and merchant senders) and the simulator's scans go onto `scan-events`;
the pipeline publishes `notifications`; the notifier, started once the pipeline has stored the whole
day, catches up on it and sends to local providers. The expected messages per channel and recipient
are computed here, independently of the rule engine, from what the pipeline published, where each
shipment ended up and the recipients' preferences in PostgreSQL."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from api.labels import PUSH_BASE, emit_labels, store_labels
from config.settings import Settings
from simulator.live import labels_for, plan_day
from simulator.produce import produce
from tests.integration.pipeline import (
    PipelineProcess,
    committed_offsets,
    high_watermarks,
    read_topic,
    shipment_rows,
    start_group_at_end,
)
from tests.integration.providers import (
    SETTLE_S,
    TOPIC,
    NotifierProcess,
    Providers,
    cleanup_outbox,
    process_env,
    wait_for,
)

DELIVERY_FAILURES = {"address_not_found", "access_denied", "recipient_unavailable", "refused"}


def expected_channels(kind: str, reason: str | None, level: str) -> dict[str, list[str]]:
    """audience -> channels, written out from the product's notification policy (not the engine)."""
    if kind == "PICKUP":
        return {"recipient": ["email", "push"]}
    if kind == "OUT_FOR_DELIVERY":
        return {"recipient": ["sms", "email", "push"] if level in ("EXPRESS", "OVERNIGHT") else ["sms", "push"]}
    if kind in ("DELIVERED", "DELIVERY_ATTEMPTED"):
        return {"recipient": ["sms", "email", "push"]}
    if kind == "EXCEPTION":
        if reason in DELIVERY_FAILURES:
            return {"recipient": ["sms", "email", "push"]}
        return {"recipient": ["sms", "email"] if reason == "damaged" else ["email", "push"]}
    if kind == "RETURN_TO_SENDER":
        return {"recipient": ["sms", "email"], "sender": ["sms", "email"]}
    return {}


OUT_FOR_DELIVERY_EXPIRES = timedelta(hours=12)


def superseded_by(kind: str, reason: str | None) -> set[str]:
    """The shipment statuses that make a message stale once a later event left the shipment in one
    of them: the product's policy written out (docs/notifier.md, "Stale messages")."""
    if kind == "PICKUP":
        return {"OUT_FOR_DELIVERY", "DELIVERED", "DELIVERY_ATTEMPTED", "RETURN_TO_SENDER"}
    if kind == "OUT_FOR_DELIVERY":
        return {"IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED", "DELIVERY_ATTEMPTED", "EXCEPTION", "RETURN_TO_SENDER"}
    if kind == "DELIVERY_ATTEMPTED" or (kind == "EXCEPTION" and reason in DELIVERY_FAILURES):
        return {"DELIVERED", "DELIVERY_ATTEMPTED", "RETURN_TO_SENDER"}
    if kind == "EXCEPTION" and reason != "damaged":
        return {"OUT_FOR_DELIVERY", "DELIVERED", "RETURN_TO_SENDER"}
    return set()


def out_for_delivery_near_expiry(messages: list[Any], now: datetime, margin: timedelta) -> bool:
    """Whether an OUT_FOR_DELIVERY scan of the day turns 12 hours old within `margin` of `now`."""
    for m in messages:
        if m.event_type != "OUT_FOR_DELIVERY":
            continue
        try:
            at = datetime.fromisoformat(json.loads(m.value)["created_at"])
        except (ValueError, KeyError, TypeError):
            continue
        if abs(now - at - OUT_FOR_DELIVERY_EXPIRES) <= margin:
            return True
    return False


def in_quiet_hours(start: Any, end: Any, tz: str, now: datetime) -> bool:
    if start is None or end is None or start == end:
        return False
    t = now.astimezone(ZoneInfo(tz)).time()
    return start <= t < end if start < end else (t >= start or t < end)


@pytest.fixture(scope="module")
def providers() -> Iterator[Providers]:
    p = Providers().start()
    yield p
    p.stop()


def test_simulated_day_gives_exactly_the_expected_messages(stack: Settings, providers: Providers,
                                                           tmp_path: Path) -> None:
    def a_day() -> Any:
        return plan_day(40, seed=random.randrange(10**6), exception_share=0.25, failed_attempt_share=0.3,
                        return_share=0.12, duplicate_share=0.03, invalid_transition_share=0.0, malformed_share=0.0)

    day = a_day()
    # The test must not race the clock: no 'out for delivery' may expire while it runs.
    while out_for_delivery_near_expiry(day.messages, datetime.now(UTC), timedelta(minutes=15)):
        day = a_day()
    ids = {str(s.shipment_id) for s in day.shipments}
    scan_group, notify_group = (f"test-notifier-day-{k}-{uuid.uuid4().hex[:8]}" for k in ("pipeline", "notify"))
    scans = stack.kafka.topics["scan_events"]
    start_group_at_end(stack, scan_group, scans)
    start_group_at_end(stack, notify_group, TOPIC)
    notif_start = high_watermarks(stack, TOPIC)

    # Labels with realistic preferences; push endpoints re-pointed at the local push server, and
    # quiet hours that would start or end during the run dropped (the test must not race the clock).
    labels = labels_for(day)
    store_labels(stack, labels, seed=day.knobs.seed)
    now = datetime.now(UTC)
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as pg:
        pg.execute("UPDATE recipients SET push_endpoint = replace(push_endpoint, %s, %s) "
                   "WHERE recipient_id = ANY(%s) AND push_endpoint IS NOT NULL",
                   (PUSH_BASE, providers.base_url + "/push", [lb.recipient_id for lb in labels]))
        for rid, start, end, tz in pg.execute(
                "SELECT recipient_id, quiet_hours_start, quiet_hours_end, timezone FROM recipients "
                "WHERE recipient_id = ANY(%s)", ([lb.recipient_id for lb in labels],)).fetchall():
            if in_quiet_hours(start, end, tz, now) != in_quiet_hours(start, end, tz, now + timedelta(minutes=15)):
                pg.execute("UPDATE recipients SET quiet_hours_start = NULL, quiet_hours_end = NULL "
                           "WHERE recipient_id = %s", (rid,))

    pipeline = PipelineProcess(scan_group, tmp_path / "pipeline-state", tmp_path / "pipeline.log").start()
    notifier: NotifierProcess | None = None
    try:
        emit_labels(stack, labels)
        produce(day.messages, stack.kafka.bootstrap_servers, scans, progress=False)
        produced = high_watermarks(stack, scans)  # every label and scan of this test lies below

        def settled() -> bool:
            rows = shipment_rows(stack, day.expected)
            if not all(sid in rows and rows[sid]["status"] == exp.status.value for sid, exp in day.expected.items()):
                return False
            # PostgreSQL alone is not enough: the pipeline's checkpoint flushes its sinks before it
            # produces and commits its Kafka transaction (or aborts and replays it), so the last
            # notifications may not be readable yet, and the expectation below would miss them.
            # Its committed input offsets commit in that transaction: past our scans, all is there.
            done = committed_offsets(stack, scan_group, scans)
            return all(done.get(p, -1) >= end for p, end in produced.items())

        wait_for(settled, 240, "the pipeline to settle the day", pipeline)
        notes = [v for _, v in read_topic(stack, TOPIC, notif_start)
                 if isinstance(v, dict) and v.get("shipment_id") in ids]
        # The notifier starts on a backlog: it was down for the whole day.
        notifier = NotifierProcess(notify_group, process_env(providers), tmp_path / "notifier.log",
                                   tmp_path / "notifier-state").start()
        started = datetime.now(UTC)

        with psycopg.connect(stack.postgres.dsn) as pg:
            final = {str(r[0]): (r[1], r[2]) for r in pg.execute(
                "SELECT shipment_id, status::text, last_event_at FROM shipments WHERE shipment_id = ANY(%s::uuid[])",
                (list(ids),)).fetchall()}
            people = {str(r[0]): r[1:] for r in pg.execute(
                "SELECT s.shipment_id, r.phone, r.email, r.push_endpoint, r.opt_in_sms, r.opt_in_email, "
                "r.opt_in_push, r.quiet_hours_start, r.quiet_hours_end, r.timezone, "
                "p.phone, p.email FROM shipments s JOIN recipients r ON r.recipient_id = s.recipient_id "
                "JOIN recipients p ON p.recipient_id = s.sender_id WHERE s.shipment_id = ANY(%s::uuid[])",
                (list(ids),)).fetchall()}

        # Keyed by (channel, address, tracking number): other tests publish on `notifications` too, and
        # the generated names (so e-mail addresses) repeat, so a message counts only with our number.
        expected: Counter[tuple[str, str, str]] = Counter()
        deferred: Counter[str] = Counter()
        seen: set[tuple[str, str]] = set()
        stale: Counter[str] = Counter()
        for n in notes:  # per shipment in partition order
            kind = "RETURN_TO_SENDER" if n["status"] == "RETURN_TO_SENDER" else n["event_type"]
            plan = expected_channels(kind, n["reason_code"], n["service_level"])
            if not plan:
                continue
            at = datetime.fromisoformat(n["created_at"])
            status, last_event_at = final[n["shipment_id"]]
            if kind == "OUT_FOR_DELIVERY" and started - at > OUT_FOR_DELIVERY_EXPIRES:
                stale["expired"] += 1
                continue
            if status in superseded_by(kind, n["reason_code"]) and last_event_at > at:
                stale["superseded"] += 1
                continue  # the customer hears where the parcel is now, not its history
            if (n["shipment_id"], kind) in seen:
                continue  # a duplicate inside the window (the whole day runs in minutes)
            seen.add((n["shipment_id"], kind))
            phone, email, push, o_sms, o_email, o_push, q_start, q_end, tz, s_phone, s_email = people[n["shipment_id"]]
            quiet = in_quiet_hours(q_start, q_end, tz, datetime.now(UTC))
            for audience, channels in plan.items():
                for ch in channels:
                    if audience == "sender":
                        expected[(ch, s_phone if ch == "sms" else s_email, n["tracking_number"])] += 1
                        continue
                    address = {"sms": phone, "email": email, "push": push}[ch]
                    opted = {"sms": o_sms, "email": o_email, "push": o_push}[ch]
                    if not address or not opted:
                        continue
                    if quiet and ch in ("sms", "push"):
                        deferred[ch] += 1
                        continue
                    key = address.removeprefix(providers.base_url) if ch == "push" else address
                    expected[(ch, key, n["tracking_number"])] += 1
        # A catching-up notifier sends about one message per channel per shipment (mostly the
        # delivery); quiet hours hold SMS and push for some recipients, depending on the hour.
        planned = sum(expected.values()) + sum(deferred.values())
        assert planned >= 20, f"a day with too little to notify: {expected}, held {deferred}"

        ours = {s.tracking_number for s in day.shipments}

        def got() -> Counter[tuple[str, str, str]]:
            out: Counter[tuple[str, str, str]] = Counter()
            with providers.lock:
                for r in providers.receipts:
                    tn = next((t for t in ours if t in r.body), None)
                    if tn is not None:
                        out[(r.channel, r.to, tn)] += 1
            return out

        wait_for(lambda: sum(got().values()) >= sum(expected.values()), 120, "the day's messages", notifier)
        time.sleep(SETTLE_S * 2)
        assert got() == expected
        with psycopg.connect(stack.postgres.dsn) as pg:
            held = Counter(r[0] for r in pg.execute(
                "SELECT channel FROM notification_outbox WHERE state = 'deferred' AND shipment_id = ANY(%s::uuid[])",
                (list(ids),)).fetchall())
        assert held == deferred
        kinds = Counter(k for _, k in seen)
        assert kinds["DELIVERED"] and stale["superseded"] and stale["expired"], (kinds, stale)
    finally:
        if notifier is not None:
            notifier.stop()
        pipeline.stop()
        cleanup_outbox(stack.postgres.dsn, [uuid.UUID(i) for i in ids])
