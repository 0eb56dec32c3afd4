"""kill -9 of the notifier between the dedupe claim and the send, and between Twilio taking an SMS
and the outbox marking it sent: after a restart the customer still gets exactly one message (real
Kafka, PostgreSQL, Redis; local provider servers). A module of its own, so no other notifier process
reads the same records while this one is paused."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import Producer

from config.settings import Settings
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import start_group_at_end
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


@pytest.fixture(scope="module")
def providers(stack: Settings) -> Iterator[Providers]:
    p = Providers().start()
    yield p
    p.stop()
    cleanup_outbox(stack.postgres.dsn)


@pytest.fixture(scope="module")
def producer(stack: Settings) -> Iterator[Producer]:
    p = Producer(kafka_producer_config(stack.kafka.bootstrap_servers, {"enable.idempotence": True}))
    yield p
    p.flush(30)


@pytest.fixture(scope="module")
def pg(stack: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
        yield conn


def test_kill9_between_dedupe_and_send_still_sends_exactly_once(stack: Settings, providers: Providers,
                                                                 producer: Producer, pg: psycopg.Connection[Any],
                                                                 tmp_path: Path) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    group = f"test-notifier-kill-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, group, TOPIC)
    # A short lease: the dead process's leased rows are free again 3 s after the crash.
    env = {**process_env(providers), "PARCEL_NOTIFIER__LEASE_S": "3"}
    proc = NotifierProcess(group, env, tmp_path / "kill.log", tmp_path / "state")
    delivered = Parcel(pg, Party(providers))
    ofd = Parcel(pg, Party(providers))
    try:
        # Round 1: DELIVERED (the PostgreSQL flag and the outbox are committed, the send is not).
        proc.start(PARCEL_NOTIFIER_TEST_PAUSE_AFTER_CLAIM_S="3600")
        send(producer, delivered.event("DELIVERED"))
        wait_for(lambda: pg.execute("SELECT 1 FROM delivered_notifications WHERE shipment_id = %s",
                                    (delivered.id,)).fetchone() is not None, 90, "the DELIVERED flag", proc)
        time.sleep(0.5)
        proc.kill9()
        assert not counts(providers, delivered.recipient)
        proc.start()
        wait_for(lambda: sum(counts(providers, delivered.recipient).values()) >= 3, 90, "DELIVERED messages", proc)
        proc.stop()
        # Round 2: OUT_FOR_DELIVERY (the Redis claim is taken, nothing else happened yet).
        proc.start(PARCEL_NOTIFIER_TEST_PAUSE_AFTER_CLAIM_S="3600")
        send(producer, ofd.event("OUT_FOR_DELIVERY"))
        wait_for(lambda: r.exists(f"notif:{ofd.id}:OUT_FOR_DELIVERY") == 1, 90, "the dedupe claim", proc)
        time.sleep(0.5)
        proc.kill9()
        assert not counts(providers, ofd.recipient)
        proc.start()
        wait_for(lambda: sum(counts(providers, ofd.recipient).values()) >= 2, 90, "OFD messages", proc)
        time.sleep(SETTLE_S)
    finally:
        proc.stop()
        r.delete(f"notif:{ofd.id}:OUT_FOR_DELIVERY")
    d, o = delivered.recipient.name, ofd.recipient.name
    assert counts(providers, delivered.recipient) == Counter({("sms", d): 1, ("email", d): 1, ("push", d): 1})
    assert counts(providers, ofd.recipient) == Counter({("sms", o): 1, ("push", o): 1})


def test_kill9_after_twilio_took_the_sms_does_not_send_it_again(stack: Settings, providers: Providers,
                                                                 producer: Producer, pg: psycopg.Connection[Any],
                                                                 tmp_path: Path) -> None:
    """Twilio's Messages API has no idempotency key: the row, leased again after the crash, is
    matched against Twilio's list of recent messages to that number instead of being sent twice."""
    group = f"test-notifier-kill-sms-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, group, TOPIC)
    env = {**process_env(providers), "PARCEL_NOTIFIER__LEASE_S": "3"}
    proc = NotifierProcess(group, env, tmp_path / "kill-sms.log", tmp_path / "state")
    ofd = Parcel(pg, Party(providers))
    r = redis.Redis.from_url(stack.redis.url)
    try:
        proc.start(PARCEL_NOTIFIER_TEST_PAUSE_AFTER_SEND="sms=3600")
        send(producer, ofd.event("OUT_FOR_DELIVERY"))
        wait_for(lambda: len(received(providers, "sms", ofd.recipient)) == 1, 90, "Twilio to take the SMS", proc)
        time.sleep(0.5)
        proc.kill9()
        row = pg.execute("SELECT state, provider_ref FROM notification_outbox WHERE shipment_id = %s "
                         "AND channel = 'sms'", (ofd.id,)).fetchone()
        assert row == ("pending", None), "killed between Twilio's answer and the mark"
        listed = len(providers.listings)
        proc.start()
        wait_for(lambda: pg.execute("SELECT state FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                                    (ofd.id,)).fetchone() == ("sent",), 90, "the SMS row marked sent", proc)
        time.sleep(SETTLE_S)
    finally:
        proc.stop()
        r.delete(f"notif:{ofd.id}:OUT_FOR_DELIVERY")
    o = ofd.recipient.name
    assert counts(providers, ofd.recipient) == Counter({("sms", o): 1, ("push", o): 1})
    assert len(providers.listings) > listed and ofd.recipient.phone.replace("+", "%2B") in providers.listings[-1]
    sid = providers.twilio.page(f"/2010-04-01/Accounts/x/Messages.json?To={ofd.recipient.phone.replace('+', '%2B')}"
                                )["messages"][0]["sid"]
    ref = pg.execute("SELECT provider_ref FROM notification_outbox WHERE shipment_id = %s AND channel = 'sms'",
                     (ofd.id,)).fetchone()
    assert ref == (sid,), "the row records the message Twilio took the first time"
