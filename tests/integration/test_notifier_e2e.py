"""The notifier end to end on the real Kafka, PostgreSQL and Redis, with real local provider
servers (Twilio Messages API over HTTP, SMTP via aiosmtpd, a push webhook): normalized events go
onto `notifications`, `parcel run topologies/notifier.yaml` runs as a separate process, and the
tests count what each provider received, per channel and recipient."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from confluent_kafka import Producer

from config.settings import Settings
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import high_watermarks, read_topic, start_group_at_end
from tests.integration.providers import (
    SETTLE_S,
    TOPIC,
    NotifierProcess,
    Parcel,
    Party,
    Providers,
    cleanup_outbox,
    counts,
    process_env,
    received,
    send,
    wait_for,
)

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers(stack: Settings) -> Iterator[Providers]:
    p = Providers().start()
    yield p
    p.stop()
    cleanup_outbox(stack.postgres.dsn)


@pytest.fixture(scope="module")
def notifier(stack: Settings, providers: Providers,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifierProcess]:
    group = f"test-notifier-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, group, TOPIC)
    tmp = tmp_path_factory.mktemp("notifier")
    proc = NotifierProcess(group, process_env(providers), tmp / "notifier.log", tmp / "state").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def producer(stack: Settings) -> Iterator[Producer]:
    p = Producer(kafka_producer_config(stack.kafka.bootstrap_servers, {"enable.idempotence": True}))
    yield p
    p.flush(30)


@pytest.fixture(scope="module")
def pg(stack: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
        yield conn


# --- tests ---------------------------------------------------------------------------------------


def test_stream_gives_exactly_the_expected_messages(notifier: NotifierProcess, providers: Providers,
                                                    producer: Producer, pg: psycopg.Connection[Any]) -> None:
    a = Parcel(pg, Party(providers, language="en"))
    b = Parcel(pg, Party(providers, language="es", opt_in_sms=False), service_level="EXPRESS")
    seller = Party(providers, name="Acme Store")
    c = Parcel(pg, Party(providers), sender=seller)
    d = Parcel(pg, Party(providers))
    send(producer,
         a.event("PICKUP", status="PICKED_UP"), a.event("ARRIVAL", status="IN_TRANSIT"),
         a.event("OUT_FOR_DELIVERY"), a.event("DELIVERED"),
         b.event("PICKUP", status="PICKED_UP"), b.event("OUT_FOR_DELIVERY"),
         b.event("DELIVERY_ATTEMPTED", reason_code="recipient_unavailable", attempt_count=1),
         c.event("RETURN_TO_SENDER", reason_code="max_attempts_reached", attempt_count=3, return_tn="PTRETURN123"),
         d.event("EXCEPTION", reason_code="damaged"))
    A, B, C, S, D = (p.name for p in (a.recipient, b.recipient, c.recipient, seller, d.recipient))
    expected = Counter({
        ("email", A): 2, ("push", A): 3, ("sms", A): 2,          # PICKUP e+p, OFD s+p, DELIVERED s+e+p
        ("email", B): 3, ("push", B): 3,                          # sms opted out; EXPRESS OFD adds email
        ("sms", C): 1, ("email", C): 1, ("sms", S): 1, ("email", S): 1,  # return: both parties
        ("sms", D): 1, ("email", D): 1,                           # damaged: escalated on sms + email
    })
    parties = (a.recipient, b.recipient, c.recipient, seller, d.recipient)
    wait_for(lambda: sum(counts(providers, *parties).values()) >= sum(expected.values()), 90,
             "the expected messages", notifier)
    time.sleep(SETTLE_S)
    assert counts(providers, *parties) == expected

    attempted = received(providers, "sms", b.recipient) + received(providers, "email", b.recipient)
    failed = [r for r in attempted if "Intento 1 de 3" in r.body]
    assert failed and "/r/" in failed[0].body, "the failed attempt offers the reschedule link, in Spanish"
    for party in (c.recipient, seller):
        for r in received(providers, "sms", party) + received(providers, "email", party):
            assert "PTRETURN123" in r.body, "both parties see the return shipment's tracking number"
    assert "coming back to you" in received(providers, "email", seller)[0].body
    assert received(providers, "email", a.recipient)[0].subject.startswith("Your parcel")
    # the operations view counted the exceptions, with facility and region
    ops = pg.execute("SELECT shipment_id, reason_code, facility_id, region FROM exception_events "
                     "WHERE shipment_id = ANY(%s)", ([b.id, c.id, d.id],)).fetchall()
    assert sorted(r[1] for r in ops) == ["damaged", "max_attempts_reached", "recipient_unavailable"]
    assert all(r[2] == d.station and r[3] for r in ops)


def test_same_event_twice_inside_window_gives_one(notifier: NotifierProcess, providers: Providers,
                                                  producer: Producer, pg: psycopg.Connection[Any]) -> None:
    p = Parcel(pg, Party(providers))
    first = p.event("OUT_FOR_DELIVERY")
    send(producer, first, first, p.event("OUT_FOR_DELIVERY"))  # the same record twice, and a new scan
    send(producer, p.event("EXCEPTION", reason_code="weather_delay"))  # barrier: same partition, after them
    wait_for(lambda: received(providers, "email", p.recipient), 60, "the barrier email", notifier)
    time.sleep(SETTLE_S)
    # OUT_FOR_DELIVERY once (sms + push), and the barrier's weather delay (email + push)
    assert counts(providers, p.recipient) == Counter({("sms", p.recipient.name): 1, ("push", p.recipient.name): 2,
                                                      ("email", p.recipient.name): 1})


def test_after_the_window_gives_two(notifier: NotifierProcess, providers: Providers,
                                    producer: Producer, pg: psycopg.Connection[Any]) -> None:
    p = Parcel(pg, Party(providers))  # PICKUP's window is 3 s in this process (PARCEL_NOTIFIER__WINDOWS)
    send(producer, p.event("PICKUP", status="PICKED_UP"))
    wait_for(lambda: len(received(providers, "email", p.recipient)) == 1, 60, "first PICKUP email", notifier)
    time.sleep(4)
    send(producer, p.event("PICKUP", status="PICKED_UP"))
    wait_for(lambda: len(received(providers, "email", p.recipient)) == 2, 60, "second PICKUP email", notifier)
    time.sleep(SETTLE_S)
    assert len(received(providers, "email", p.recipient)) == 2


def test_delivered_twice_across_a_redis_flush_gives_one(notifier: NotifierProcess, providers: Providers,
                                                        producer: Producer, pg: psycopg.Connection[Any],
                                                        stack: Settings) -> None:
    p = Parcel(pg, Party(providers))
    send(producer, p.event("DELIVERED"))
    wait_for(lambda: len(received(providers, "sms", p.recipient)) == 1, 60, "DELIVERED sms", notifier)
    r = redis.Redis.from_url(stack.redis.url)
    keys = list(r.scan_iter(f"notif:{p.id}:*"))
    if keys:
        r.delete(*keys)  # only this test's keys: Redis is shared
    send(producer, p.event("DELIVERED"), p.event("EXCEPTION", reason_code="weather_delay"))
    wait_for(lambda: received(providers, "email", p.recipient) and len(received(providers, "email", p.recipient)) == 2,
             60, "the barrier email", notifier)
    time.sleep(SETTLE_S)
    c = counts(providers, p.recipient)
    assert c[("sms", p.recipient.name)] == 1 and c[("push", p.recipient.name)] == 2  # DELIVERED once + barrier
    assert c[("email", p.recipient.name)] == 2  # DELIVERED once + barrier
    flag = pg.execute("SELECT count(*) FROM delivered_notifications WHERE shipment_id = %s", (p.id,)).fetchone()
    assert flag == (1,)


def test_quiet_hours_defer_until_they_end(notifier: NotifierProcess, providers: Providers,
                                          producer: Producer, pg: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    # Quiet hours in the recipient's zone (here Asia/Tokyo, UTC+9) from an hour ago until 20 s from now.
    tokyo = ZoneInfo("Asia/Tokyo")
    start = (now - timedelta(hours=1)).astimezone(tokyo).time().replace(microsecond=0)
    end = (now + timedelta(seconds=20)).astimezone(tokyo).time().replace(microsecond=0)
    p = Parcel(pg, Party(providers, timezone="Asia/Tokyo", quiet_hours_start=start, quiet_hours_end=end))
    send(producer, p.event("DELIVERY_ATTEMPTED", reason_code="access_denied", attempt_count=1))
    wait_for(lambda: received(providers, "email", p.recipient), 60, "the email (not held by quiet hours)", notifier)
    rows = {r[0]: r[1:] for r in pg.execute("SELECT channel, state, not_before FROM notification_outbox "
                                            "WHERE shipment_id = %s", (p.id,)).fetchall()}
    assert rows["email"][0] == "sent" and rows["email"][1] is None, "email is not held by quiet hours"
    until = rows["sms"][1]
    assert until is not None and rows["push"][1] == until, "sms and push wait for the end of quiet hours"
    assert abs(until.timestamp() - (now + timedelta(seconds=20)).timestamp()) < 2
    wait_for(lambda: received(providers, "sms", p.recipient) and received(providers, "push", p.recipient), 60,
             "the deferred sms and push after quiet hours", notifier)
    for channel in ("sms", "push"):
        got = received(providers, channel, p.recipient)
        assert len(got) == 1 and got[0].at >= until.timestamp(), f"{channel} waited for the end of quiet hours"


def test_a_notifier_catching_up_sends_only_what_is_still_true(notifier: NotifierProcess, providers: Providers,
                                                             producer: Producer, pg: psycopg.Connection[Any]) -> None:
    """A backlog (the notifier was down): the shipment was out for delivery, missed and returned
    before the notifier read a thing. The customer hears of the return, not of a 'today' that is
    over and an attempt that is settled; a lone 'out for delivery' from 13 hours ago has expired."""
    now = datetime.now(UTC)
    p = Parcel(pg, Party(providers))
    p.stored(pg, "RETURN_TO_SENDER", now)
    old = Parcel(pg, Party(providers))
    old.stored(pg, "OUT_FOR_DELIVERY", now - timedelta(hours=13))
    send(producer,
         p.event("OUT_FOR_DELIVERY", at=now - timedelta(hours=2)),
         p.event("DELIVERY_ATTEMPTED", reason_code="recipient_unavailable", attempt_count=1,
                 at=now - timedelta(hours=1)),
         p.event("DELIVERY_ATTEMPTED", status="RETURN_TO_SENDER", reason_code="recipient_unavailable",
                 attempt_count=3, return_tn="PTRETURN456", at=now),
         old.event("OUT_FOR_DELIVERY", at=now - timedelta(hours=13)),
         old.event("EXCEPTION", reason_code="damaged"))  # a barrier that is never stale
    wait_for(lambda: received(providers, "email", p.recipient) and received(providers, "email", old.recipient), 60,
             "the return and the damage emails", notifier)
    time.sleep(SETTLE_S)
    assert counts(providers, p.recipient, old.recipient) == Counter({
        ("sms", p.recipient.name): 1, ("email", p.recipient.name): 1,      # the return only
        ("sms", old.recipient.name): 1, ("email", old.recipient.name): 1,  # the damage only
    })
    assert all("PTRETURN456" in r.body for r in received(providers, "sms", p.recipient))
    planned = pg.execute("SELECT DISTINCT event_type FROM notification_outbox WHERE shipment_id = ANY(%s)",
                         ([p.id, old.id],)).fetchall()
    assert sorted(r[0] for r in planned) == ["EXCEPTION", "RETURN_TO_SENDER"], "stale messages are never planned"


def test_a_message_held_by_quiet_hours_is_skipped_if_the_shipment_moved_on(
        notifier: NotifierProcess, providers: Providers, producer: Producer, pg: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    tz = ZoneInfo("America/Chicago")
    start = (now - timedelta(hours=1)).astimezone(tz).time().replace(microsecond=0)
    end = (now + timedelta(seconds=15)).astimezone(tz).time().replace(microsecond=0)
    p = Parcel(pg, Party(providers, timezone="America/Chicago", quiet_hours_start=start, quiet_hours_end=end))
    p.stored(pg, "OUT_FOR_DELIVERY", now)
    send(producer, p.event("OUT_FOR_DELIVERY", at=now))  # sms + push: both held by quiet hours

    def states() -> dict[str, tuple[str, str | None]]:
        return {r[0]: (r[1], r[2]) for r in pg.execute(
            "SELECT channel, state, last_error FROM notification_outbox WHERE shipment_id = %s", (p.id,)).fetchall()}

    wait_for(lambda: {s for s, _ in states().values()} == {"deferred"} and len(states()) == 2, 60,
             "sms and push held by quiet hours", notifier)
    p.stored(pg, "DELIVERED", now + timedelta(minutes=1))  # delivered while they waited
    wait_for(lambda: {s for s, _ in states().values()} == {"skipped"}, 60, "the drainer to judge them", notifier)
    assert all(err and err.startswith("superseded: ") and "DELIVERED" in err for _, err in states().values())
    time.sleep(SETTLE_S)
    assert counts(providers, p.recipient) == Counter()


def test_a_number_that_replied_stop_is_opted_out_not_dead_lettered(
        notifier: NotifierProcess, providers: Providers, producer: Producer, pg: psycopg.Connection[Any]) -> None:
    p = Parcel(pg, Party(providers))
    providers.unsubscribed.add(p.recipient.phone)  # Twilio answers 21610 for it
    send(producer, p.event("OUT_FOR_DELIVERY"))
    wait_for(lambda: received(providers, "push", p.recipient), 60, "the push", notifier)
    wait_for(lambda: pg.execute("SELECT state FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                                (p.id,)).fetchone() == ("skipped",), 30, "the SMS row skipped", notifier)
    row = pg.execute("SELECT last_error FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                     (p.id,)).fetchone()
    assert row[0].startswith("opted_out: ")
    assert pg.execute("SELECT opt_in_sms FROM recipients WHERE recipient_id = %s",
                      (p.recipient.id,)).fetchone() == (False,)
    assert len([a for a in providers.attempts if a.to == p.recipient.phone]) == 1, "not retried"
    send(producer, p.event("DELIVERED"))  # the next message is not even planned for SMS
    wait_for(lambda: len(received(providers, "push", p.recipient)) == 2, 60, "the second push", notifier)
    time.sleep(SETTLE_S)
    assert len([a for a in providers.attempts if a.to == p.recipient.phone]) == 1
    assert pg.execute("SELECT count(*) FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                      (p.id,)).fetchone() == (1,)


def test_a_slow_provider_gets_several_messages_at_once_but_one_address_in_order(
        notifier: NotifierProcess, providers: Providers, producer: Producer, pg: psycopg.Connection[Any]) -> None:
    """`notifier.concurrency` (SMS: up to 4 workers): a provider answering in 0.3 s (slower than
    `slow_send_s`) makes the batch add workers and gets several SMS in flight, while the messages
    of one number stay on one worker, one after the other, in order."""
    parcels = [Parcel(pg, Party(providers)) for _ in range(8)]
    busy = parcels[0]
    providers.most_in_flight.clear()
    providers.latency_s = 0.3
    try:
        # One partition: the sink hands the notifier one partition's checkpoint batch at a time, and
        # the workers share out the messages of a batch.
        for ev in (*(p.event("OUT_FOR_DELIVERY") for p in parcels),
                   busy.event("DELIVERY_ATTEMPTED", reason_code="refused", attempt_count=1)):
            producer.produce(TOPIC, key=ev["shipment_id"].encode(), value=json.dumps(ev).encode(), partition=0)
        assert producer.flush(30) == 0
        wait_for(lambda: all(received(providers, "sms", p.recipient) for p in parcels)
                 and len(received(providers, "sms", busy.recipient)) == 2, 60, "the SMS", notifier)
    finally:
        providers.latency_s = 0.0
    assert 2 <= providers.most_in_flight["*"] <= 4
    assert providers.most_in_flight[busy.recipient.phone] == 1
    first, second = received(providers, "sms", busy.recipient)
    assert "out for delivery" in first.body.lower() and "attempt 1 of 3" in second.body.lower()


def test_opt_out_suppresses(notifier: NotifierProcess, providers: Providers, producer: Producer,
                            pg: psycopg.Connection[Any]) -> None:
    p = Parcel(pg, Party(providers, opt_in_sms=False, opt_in_push=False))
    send(producer, p.event("DELIVERED"))
    wait_for(lambda: received(providers, "email", p.recipient), 60, "DELIVERED email", notifier)
    time.sleep(SETTLE_S)
    assert counts(providers, p.recipient) == Counter({("email", p.recipient.name): 1})


def test_provider_errors_are_retried_then_dead_lettered(notifier: NotifierProcess, providers: Providers,
                                                        producer: Producer, pg: psycopg.Connection[Any],
                                                        stack: Settings) -> None:
    party = Party(providers)
    providers.fail.add(party.phone)
    p = Parcel(pg, party)
    dlq_start = high_watermarks(stack, "scan-events-dlq")
    send(producer, p.event("DELIVERY_ATTEMPTED", reason_code="refused", attempt_count=2))
    wait_for(lambda: pg.execute("SELECT state FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                                (p.id,)).fetchone() == ("dead",), 60, "the sms dead-lettered", notifier)
    sms_attempts = [a for a in providers.attempts if a.channel == "sms" and a.to == party.phone]
    assert len(sms_attempts) == 3, "retried up to retry.attempts"
    # channels are isolated: email and push went out although SMS failed
    assert received(providers, "email", party) and received(providers, "push", party)
    row = pg.execute("SELECT last_error, notification_id FROM notification_outbox WHERE shipment_id = %s "
                     "AND channel = 'sms'", (p.id,)).fetchone()
    assert row[0].startswith("provider_unavailable") and "500" in row[0]
    def dead_letters() -> list[Any]:
        return [v for k, v in read_topic(stack, "scan-events-dlq", dlq_start)
                if isinstance(v, dict) and v.get("topology") == "notifier" and k == str(p.id).encode()]

    wait_for(lambda: bool(dead_letters()), 60, "the dead-letter envelope", notifier)
    dead = dead_letters()
    assert len(dead) == 1 and dead[0]["reason"] == "provider_unavailable" and dead[0]["value"]["channel"] == "sms"
    # nothing lost: once the provider recovers, a redrive delivers the dead-lettered message
    providers.fail.discard(party.phone)
    from notifier.store import NotifierStore

    assert NotifierStore(stack.postgres.dsn).redrive([row[1]]) == 1
    wait_for(lambda: len(received(providers, "sms", party)) == 1, 60, "the redriven sms", notifier)
