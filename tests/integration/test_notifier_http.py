"""The reschedule flow over HTTP (notifier/http.py `router` in a FastAPI app built here, driven by
httpx through Starlette's TestClient) on the real PostgreSQL and Kafka: the form, the choices, a
stored + published choice, its confirmation at the local providers, and the 4xx answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from config.settings import Settings
from notifier.http import get_service, router
from notifier.links import reschedule_token, unsubscribe_token
from notifier.metrics import NotifierMetrics
from notifier.reschedule import RescheduleService
from notifier.rules import load_rules
from notifier.service import Notifier
from operators.notify_plan import NotifyPlanStep
from operators.registry import MessageMeta, StepContext
from tests.integration.pipeline import high_watermarks, read_topic
from tests.integration.providers import TOPIC, Parcel, Party, Providers, cleanup_outbox, received

SECRET = "test-secret-" + "x" * 24


@pytest.fixture(scope="module")
def providers(stack: Settings) -> Iterator[Providers]:
    p = Providers().start()
    yield p
    p.stop()
    cleanup_outbox(stack.postgres.dsn)


@pytest.fixture(scope="module")
def pg(stack: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def client(stack: Settings) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    service = RescheduleService(stack, SECRET)
    app.dependency_overrides[get_service] = lambda: service
    with TestClient(app) as c:
        yield c


def test_failed_attempt_link_to_stored_published_and_confirmed_choice(
        client: TestClient, stack: Settings, providers: Providers, pg: psycopg.Connection[Any]) -> None:
    parcel = Parcel(pg, Party(providers))
    pg.execute("UPDATE shipments SET status = 'DELIVERY_ATTEMPTED' WHERE shipment_id = %s", (parcel.id,))
    token = reschedule_token(parcel.id, SECRET)

    page = client.get(f"/r/{token}")
    assert page.status_code == 200 and "<form" in page.text and parcel.tracking_number in page.text
    options = client.get(f"/v1/reschedule/{token}").json()
    assert len(options["windows"]) == 12 and options["can_reschedule"]
    assert options["pickup_locations"] and all(p["distance_km"] >= 0 for p in options["pickup_locations"])

    start = high_watermarks(stack, "reschedule-requests")
    w = options["windows"][0]
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "window", **{k: w[k] for k in ("window_start",
                                                                                           "window_end")}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "recorded" and set(body["confirmation_channels"]) == {"sms", "email"}
    stored = pg.execute("SELECT kind, window_start FROM reschedule_requests WHERE request_id = %s",
                        (uuid.UUID(body["request_id"]),)).fetchone()
    assert stored[0] == "window" and stored[1] == datetime.fromisoformat(w["window_start"])
    published = [v for k, v in read_topic(stack, "reschedule-requests", start) if k == str(parcel.id).encode()]
    assert len(published) == 1 and published[0]["request_id"] == body["request_id"]

    # the same request id again: recorded once
    again = client.post(f"/v1/reschedule/{token}", json={"kind": "window", "request_id": body["request_id"],
                                                         "window_start": w["window_start"],
                                                         "window_end": w["window_end"]})
    assert again.status_code == 201 and again.json()["status"] == "already_recorded"

    # the confirmation goes out through the outbox (the notifier's drainer; here called directly)
    cfg = providers.notifier_cfg(stack)
    n = Notifier(stack, secret=SECRET, metrics=NotifierMetrics(CollectorRegistry()), cfg=cfg)
    try:
        n.drain(shipment_ids=[parcel.id])
    finally:
        n.close()
    sms = received(providers, "sms", parcel.recipient)
    email = received(providers, "email", parcel.recipient)
    assert len(sms) == 1 and "will come" in sms[0].body and parcel.tracking_number in sms[0].body
    assert len(email) == 1 and email[0].subject.startswith("Delivery of")

    # a pickup at a nearby delivery station, through the HTML form
    station = options["pickup_locations"][0]["facility_id"]
    form = client.post(f"/r/{token}", content=f"choice=pickup|{station}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 201 and "pickup at" in form.text
    # a window through the form, encoded as a browser does (the "+" of the zone offset as %2B)
    w2 = options["windows"][5]
    form = client.post(f"/r/{token}", content=urlencode({"choice": f"window|{w2['window_start']}|{w2['window_end']}"}),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 201, form.text
    kinds = [r[0] for r in pg.execute("SELECT kind FROM reschedule_requests WHERE shipment_id = %s ORDER BY "
                                      "created_at", (parcel.id,)).fetchall()]
    assert kinds == ["window", "pickup", "window"]


def test_bad_requests_get_a_reason(client: TestClient, providers: Providers, pg: psycopg.Connection[Any]) -> None:
    parcel = Parcel(pg, Party(providers))
    token = reschedule_token(parcel.id, SECRET)
    forged = reschedule_token(parcel.id, "another-secret-" + "y" * 20)
    assert client.get(f"/v1/reschedule/{forged}").json()["error"] == "invalid_link"
    assert client.get(f"/v1/reschedule/{forged}").status_code == 404
    assert client.get("/r/not-a-token").status_code == 404

    past = datetime.now(UTC) - timedelta(hours=2)
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "window", "window_start": past.isoformat(),
                                                     "window_end": (past + timedelta(hours=1)).isoformat()})
    assert r.status_code == 422 and r.json()["error"] == "invalid_window"
    soon = datetime.now(UTC) + timedelta(days=1)
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "window", "window_start": soon.isoformat(),
                                                     "window_end": (soon + timedelta(hours=9)).isoformat()})
    assert r.status_code == 422 and "4 hours" in r.json()["message"]
    hub = pg.execute("SELECT facility_id FROM facilities WHERE type = 'hub' LIMIT 1").fetchone()[0]
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "pickup", "pickup_facility_id": hub})
    assert r.status_code == 422 and r.json()["error"] == "invalid_pickup"
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "teleport"})
    assert r.status_code == 422

    pg.execute("UPDATE shipments SET status = 'DELIVERED' WHERE shipment_id = %s", (parcel.id,))
    r = client.post(f"/v1/reschedule/{token}", json={"kind": "pickup", "pickup_facility_id": hub})
    assert r.status_code == 409 and r.json()["error"] == "not_reschedulable"
    stored = pg.execute("SELECT count(*) FROM reschedule_requests WHERE shipment_id = %s", (parcel.id,)).fetchone()
    assert stored == (0,)


def test_ops_view_lists_exceptions_by_reason_and_facility(client: TestClient, stack: Settings) -> None:
    from notifier.store import NotifierStore

    region = f"test-{uuid.uuid4().hex[:8]}"  # a region of its own: the view is shared with other tests
    day = datetime(2020, 1, 2, tzinfo=UTC)
    rows = [(uuid.uuid4(), uuid.uuid4(), day.date(), "EXCEPTION", reason, "US-TEST-1", region, 1, day)
            for reason in ("address_not_found", "address_not_found", "damaged")]
    store = NotifierStore(stack.postgres.dsn)
    try:
        assert len(store.record_exceptions(rows)) == 3
        assert store.record_exceptions(rows[:1]) == set(), "a replayed event is not counted twice"
        r = client.get("/v1/reschedule/ops/exceptions", params={"day": "2020-01-02", "region": region})
        assert r.status_code == 200
        assert {(x["reason_code"], x["events"]) for x in r.json()} == {("address_not_found", 2), ("damaged", 1)}
    finally:
        store.conn.execute("DELETE FROM exception_events WHERE region = %s", (region,))
        store.close()


def test_one_click_unsubscribe_from_an_emails_header(client: TestClient, stack: Settings, providers: Providers,
                                                     pg: psycopg.Connection[Any]) -> None:
    """An email carries List-Unsubscribe (+ RFC 8058 one-click) for its recipient; a GET shows the
    question and changes nothing, the mail client's POST opts the recipient out of email, and the
    next event reaches them on the other channels only."""
    parcel = Parcel(pg, Party(providers))
    cfg = providers.notifier_cfg(stack, public_base_url="https://track.example")
    n = Notifier(stack, secret=SECRET, metrics=NotifierMetrics(CollectorRegistry()), cfg=cfg)
    plan = NotifyPlanStep("plan", load_rules(cfg.rules_file))

    def announce(kind: str, **kw: Any) -> None:
        out = plan(json.dumps(parcel.event(kind, **kw)).encode(), StepContext(MessageMeta(TOPIC, 0, 0, None, 0)))
        n.handle([(out.value, None)])  # type: ignore[union-attr]

    try:
        announce("DELIVERY_ATTEMPTED", reason_code="recipient_unavailable", attempt_count=1)
        email = received(providers, "email", parcel.recipient)
        assert len(email) == 1
        header = email[0].raw["List-Unsubscribe"]
        assert email[0].raw["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = "".join(str(header).split()).strip("<>")  # unfolded
        token = unsubscribe_token(parcel.recipient.id, "email", SECRET)
        assert url == f"https://track.example/u/{token}" and url in email[0].body, "in the header and the footer"
        path = url.removeprefix("https://track.example")

        def opted_in() -> bool:
            return pg.execute("SELECT opt_in_email FROM recipients WHERE recipient_id = %s",
                              (parcel.recipient.id,)).fetchone()[0]

        page = client.get(path)
        assert page.status_code == 200 and "Unsubscribe" in page.text and opted_in(), "a GET changes nothing"
        done = client.post(path, content="List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and not opted_in()
        assert client.post(path).status_code == 200, "twice is fine"
        assert client.post(path[:-3] + "AAA").status_code == 404, "an edited token is refused"
        wrong_channel = unsubscribe_token(parcel.recipient.id, "sms", SECRET).replace(".sms.", ".push.")
        assert client.post(f"/u/{wrong_channel}").status_code == 404

        announce("DELIVERED")
        assert len(received(providers, "email", parcel.recipient)) == 1, "no more email"
        assert len(received(providers, "sms", parcel.recipient)) == 2, "the other channels still reach them"
    finally:
        n.close()
