"""The HTTP API against the real stack (in-process ASGI transport; SSE in test_api_sse.py): labels,
scans (202/409/422/404), tracking (404, timeline, the driver only while out for delivery), driver
heartbeats, dispatch search, credentials, rate limits, metrics, and no personal data in public."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import redis

from api.app import create_app
from config.settings import Settings
from operators.driver_location import Heartbeat
from sinks.redis_geo import write_positions
from stack.migrations import cassandra_session
from tests.integration.pipeline import high_watermarks, read_topic

OPS = {"Authorization": "Bearer dev-operations-key"}
DRIVER = {"Authorization": "Bearer dev-driver-key"}


@pytest.fixture(scope="module")
def app(stack: Settings) -> Any:
    s = stack.model_copy(update={"api": stack.api.model_copy(update={"public_rate_limit": "100000/minute"})})
    return create_app(s, live=False)


def call(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as c:
            return await c.request(method, url, **kw)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def shipment(app: Any, stack: Settings) -> dict[str, Any]:
    r = call(app, "POST", "/v1/shipments", json={}, headers=OPS)
    assert r.status_code == 201, r.text
    body = r.json()
    with psycopg.connect(stack.postgres.dsn) as conn:
        row = conn.execute(
            "SELECT s.recipient_address, s.dest_lat, s.dest_lng, s.origin_facility_id, s.destination_facility_id, "
            "r.name, r.phone, r.email FROM shipments s JOIN recipients r USING (recipient_id) "
            "WHERE s.shipment_id = %s", (body["shipment_id"],)).fetchone()
    addr, lat, lng, origin, station, name, phone, email = row
    return {**body, "address": addr, "dest": (lat, lng), "origin": origin, "station": station, "name": name,
            "phone": phone, "email": email}


@pytest.fixture(scope="module")
def quiet(stack: Settings) -> dict[str, Any]:
    """A shipment whose label is not emitted: no scan pipeline that may be running touches it."""
    from api.labels import create_labels

    (label,) = create_labels(stack, 1, emit=False)
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET created_at = now() - interval '2 days' WHERE shipment_id = %s",
                     (label.shipment_id,))
    return {"shipment_id": str(label.shipment_id), "tracking_number": label.tracking_number,
            "dest": (label.dest_lat, label.dest_lng), "origin": label.origin_facility_id,
            "station": label.destination_facility_id}


@pytest.fixture(scope="module")
def r(stack: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis.url)
    yield client
    client.close()


def scan(shipment_id: str, event_type: str, **kw: Any) -> dict[str, Any]:
    body = {"event_id": str(uuid.uuid4()), "shipment_id": shipment_id, "event_type": event_type,
            "scan_device_id": "test-scanner", "created_at": datetime.now(UTC).isoformat()}
    body.update(kw)
    return body


def set_status(stack: Settings, shipment_id: str, status: str) -> None:
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET status = %s WHERE shipment_id = %s", (status, shipment_id))


def add_event(stack: Settings, shipment_id: str, event_type: str, status: str, facility_id: str | None,
              at: datetime, driver_id: str | None = None) -> None:
    cluster, session = cassandra_session(stack, stack.cassandra.keyspace)
    try:
        session.execute("INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status, "
                        "facility_id, driver_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (uuid.UUID(shipment_id), at, uuid.uuid4(), event_type, status, facility_id, driver_id))
    finally:
        cluster.shutdown()


# --- shipments and credentials ------------------------------------------------------------------


def test_create_shipment_needs_an_operations_key(app: Any) -> None:
    assert call(app, "POST", "/v1/shipments", json={}).status_code == 401
    assert call(app, "POST", "/v1/shipments", json={}, headers=DRIVER).status_code == 403
    assert call(app, "POST", "/v1/shipments", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = call(app, "POST", "/v1/shipments", json={"destination_facility_id": "NOT-A-STATION"}, headers=OPS)
    assert r.status_code == 422 and "NOT-A-STATION" in r.json()["message"]


def test_created_shipment_is_trackable(app: Any, shipment: dict[str, Any]) -> None:
    assert shipment["tracking_url"].endswith(f"/t/{shipment['tracking_number']}")
    r = call(app, "GET", f"/v1/track/{shipment['tracking_number']}")
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "LABEL_CREATED" and view["driver"] is None
    assert [s["key"] for s in view["steps"]][0] == "LABEL_CREATED" and view["steps"][0]["current"]


def test_unknown_tracking_number_is_404(app: Any) -> None:
    for url in ("/v1/track/PT0000000000000000X", "/v1/track/PT0000000000000000X/poll",
                "/v1/track/PT0000000000000000X/stream", "/t/PT0000000000000000X"):
        r = call(app, "GET", url)
        assert r.status_code == 404, url
    assert call(app, "GET", "/v1/track/nope").json()["error"] == "unknown_tracking_number"


# --- scans --------------------------------------------------------------------------------------


def test_scan_queued_is_202_and_lands_on_scan_events(app: Any, stack: Settings, shipment: dict[str, Any]) -> None:
    start = high_watermarks(stack, "scan-events")
    body = scan(shipment["shipment_id"], "PICKUP", facility_id=shipment["origin"])
    r = call(app, "POST", "/v1/scans", json=body, headers=DRIVER)
    assert r.status_code == 202, r.text
    assert r.json()["event_id"] == body["event_id"]
    records = [(k, v) for k, v in read_topic(stack, "scan-events", start)
               if isinstance(v, dict) and v.get("event_id") == body["event_id"]]
    assert len(records) == 1
    assert records[0][0] == shipment["shipment_id"].encode()


def test_scan_forbidden_by_the_state_machine_is_409(app: Any, shipment: dict[str, Any]) -> None:
    # the shipment is LABEL_CREATED in PostgreSQL until a pipeline applies the PICKUP
    body = scan(shipment["shipment_id"], "DELIVERED")
    r = call(app, "POST", "/v1/scans", json=body, headers=DRIVER)
    assert r.status_code == 409, r.text
    got = r.json()
    assert got["error"] == "invalid_transition"
    assert got["shipment_id"] == shipment["shipment_id"]
    assert got["current_status"] in ("LABEL_CREATED", "PICKED_UP")
    assert got["requested_status"] == "DELIVERED"


@pytest.mark.parametrize(("body", "reason"), [
    ({"event_type": "PICKUP"}, "invalid_payload"),
    ({"event_type": "ARRIVAL", "facility_id": None}, "missing_facility"),
    ({"event_type": "EXCEPTION"}, "missing_reason_code"),
    ({"event_type": "TELEPORTED", "facility_id": "X"}, "invalid_payload"),
    ({"event_type": "PICKUP", "facility_id": "NO-SUCH-FACILITY"}, "unknown_facility"),
    ({"event_type": "PICKUP", "created_at": "2099-01-01T00:00:00+00:00"}, "time_in_future"),
])
def test_bad_scan_payload_is_422_with_the_reason(app: Any, shipment: dict[str, Any], body: dict[str, Any],
                                                 reason: str) -> None:
    payload = scan(shipment["shipment_id"], body["event_type"], facility_id=shipment["origin"])
    payload.update(body)
    if reason == "invalid_payload" and body == {"event_type": "PICKUP"}:
        payload.pop("scan_device_id")
    r = call(app, "POST", "/v1/scans", json=payload, headers=DRIVER)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == reason and r.json()["message"]


def test_malformed_json_scan_is_422(app: Any) -> None:
    r = call(app, "POST", "/v1/scans", content=b"{nope", headers={**DRIVER, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "malformed_json"


def test_scan_of_unknown_shipment_is_404_and_scans_need_a_key(app: Any) -> None:
    r = call(app, "POST", "/v1/scans", json=scan(str(uuid.uuid4()), "DELIVERED"), headers=DRIVER)
    assert r.status_code == 404 and r.json()["error"] == "unknown_shipment"
    assert call(app, "POST", "/v1/scans", json=scan(str(uuid.uuid4()), "DELIVERED")).status_code == 401


# --- heartbeats and dispatch --------------------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    ({"lat": 95.0, "lng": 10.0}, "invalid_coordinates"),
    ({"lat": 40.0, "lng": -181.0}, "invalid_coordinates"),
    ({"lat": "40.0", "lng": -75.0}, "invalid_coordinates"),
    ({"lat": None, "lng": -75.0}, "invalid_coordinates"),
    ({"lat": 0, "lng": 0}, "invalid_coordinates"),
    ({"lat": 40.0, "lng": -75.0, "recorded_at": "2099-01-01T00:00:00+00:00"}, "time_in_future"),
])
def test_bad_heartbeat_is_422_with_the_reason(app: Any, body: dict[str, Any], reason: str) -> None:
    r = call(app, "POST", "/v1/drivers/drv-test/location", json=body, headers=DRIVER)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == reason and r.json()["message"].startswith(reason)


def test_heartbeat_is_queued_on_driver_locations(app: Any, stack: Settings) -> None:
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    start = high_watermarks(stack, "driver-locations")
    assert call(app, "POST", f"/v1/drivers/{driver}/location", json={"lat": 40.7, "lng": -74.0}).status_code == 401
    r = call(app, "POST", f"/v1/drivers/{driver}/location", json={"lat": 40.7, "lng": -74.0}, headers=DRIVER)
    assert r.status_code == 202, r.text
    app.state.ctx.producer().flush(10)
    got = [v for k, v in read_topic(stack, "driver-locations", start) if k == driver.encode()]
    assert len(got) == 1 and got[0]["lat"] == 40.7 and got[0]["driver_id"] == driver


def test_dispatch_search_finds_live_drivers_for_operations_only(app: Any, stack: Settings, r: redis.Redis) -> None:
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    near, far = f"drv-{run}-near", f"drv-{run}-far"
    pipe = r.pipeline(transaction=False)
    write_positions(pipe, [Heartbeat(driver_id=near, lat=44.9800, lng=-93.2700, recorded_at=now),
                           Heartbeat(driver_id=far, lat=45.3000, lng=-93.2700, recorded_at=now)],
                    driver_ttl_s=60, fleet_ttl_s=3600, channel_prefix="test:", publish=False)
    pipe.execute()
    q = {"lat": 44.9778, "lng": -93.2650, "radius_km": 5}
    assert call(app, "GET", "/v1/dispatch/drivers", params=q).status_code == 401
    assert call(app, "GET", "/v1/dispatch/drivers", params=q, headers=DRIVER).status_code == 403
    got = call(app, "GET", "/v1/dispatch/drivers", params=q, headers=OPS)
    assert got.status_code == 200
    ids = [d["driver_id"] for d in got.json()["drivers"]]
    assert near in ids and far not in ids
    # a driver whose own key expired (silent) is not offered, though still in fleet:{date}
    r.delete(f"driver:{near}:location")
    ids = [d["driver_id"] for d in call(app, "GET", "/v1/dispatch/drivers", params=q, headers=OPS).json()["drivers"]]
    assert near not in ids
    assert call(app, "GET", "/v1/dispatch/drivers", params={**q, "lat": 100}, headers=OPS).status_code == 422


# --- tracking: timeline, driver, privacy --------------------------------------------------------


def test_timeline_in_order_with_facility_names_and_driver_only_out_for_delivery(
        app: Any, stack: Settings, quiet: dict[str, Any], r: redis.Redis) -> None:
    shipment = quiet
    sid, tn = shipment["shipment_id"], shipment["tracking_number"]
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(hours=5)
    # written out of order: Cassandra's clustering (created_at) returns them in order
    add_event(stack, sid, "OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", shipment["station"], t0 + timedelta(hours=4),
              driver_id=driver)
    add_event(stack, sid, "PICKUP", "PICKED_UP", shipment["origin"], t0)
    add_event(stack, sid, "ARRIVAL", "IN_TRANSIT", shipment["station"], t0 + timedelta(hours=2))
    with psycopg.connect(stack.postgres.dsn) as conn:
        station = conn.execute("SELECT name, city FROM facilities WHERE facility_id = %s",
                               (shipment["station"],)).fetchone()

    set_status(stack, sid, "IN_TRANSIT")
    view = call(app, "GET", f"/v1/track/{tn}").json()
    assert [e["event_type"] for e in view["events"]] == ["PICKUP", "ARRIVAL", "OUT_FOR_DELIVERY"]
    assert view["events"][-1]["facility"]["name"] == station[0]
    assert view["events"][-1]["facility"]["city"] == station[1]
    assert view["driver"] is None  # IN_TRANSIT: nothing about the driver

    set_status(stack, sid, "OUT_FOR_DELIVERY")
    view = call(app, "GET", f"/v1/track/{tn}").json()
    assert view["driver"] == {"position": None, "distance_km": None}  # no heartbeat yet: no stale dot
    lat, lng = shipment["dest"]
    pipe = r.pipeline(transaction=False)
    write_positions(pipe, [Heartbeat(driver_id=driver, lat=lat + 0.01, lng=lng, recorded_at=datetime.now(UTC))],
                    driver_ttl_s=60, fleet_ttl_s=3600, channel_prefix="test:", publish=False)
    pipe.execute()
    for url in (f"/v1/track/{tn}", f"/v1/track/{tn}/poll"):
        d = call(app, "GET", url).json()["driver"]
        assert d["position"] == pytest.approx({"lat": lat + 0.01, "lng": lng}, abs=1e-4)
        assert d["distance_km"] == pytest.approx(1.11, abs=0.02)  # 0.01 degree of latitude
        assert "driver_id" not in d

    set_status(stack, sid, "DELIVERED")
    view = call(app, "GET", f"/v1/track/{tn}").json()
    assert view["driver"] is None and view["eta"] is None


def test_public_routes_reveal_no_personal_data(app: Any, stack: Settings, shipment: dict[str, Any]) -> None:
    tn = shipment["tracking_number"]
    addr = shipment["address"]
    secrets_ = [shipment["name"], shipment["phone"], shipment["email"], addr["line1"], addr["zip"],
                shipment["name"].split()[1], str(shipment["dest"][0]), str(shipment["dest"][1])]
    set_status(stack, shipment["shipment_id"], "OUT_FOR_DELIVERY")
    for url in (f"/v1/track/{tn}", f"/v1/track/{tn}/poll", f"/t/{tn}"):
        r = call(app, "GET", url)
        assert r.status_code == 200
        for s in secrets_:
            assert s not in r.text, f"{url} reveals {s!r}"
    view = call(app, "GET", f"/v1/track/{tn}").json()
    assert set(view["destination"]) == {"city", "state", "approx"}
    assert view["destination"]["city"] == addr["city"]


# --- surfaces -----------------------------------------------------------------------------------


def test_public_routes_are_rate_limited(stack: Settings, shipment: dict[str, Any]) -> None:
    s = stack.model_copy(update={"api": stack.api.model_copy(update={"public_rate_limit": "3/minute"})})
    limited = create_app(s, live=False)
    tn = shipment["tracking_number"]
    codes = [call(limited, "GET", url).status_code
             for url in (f"/v1/track/{tn}", f"/v1/track/{tn}/poll", "/v1/track/PT0000000000000000X",
                         f"/t/{tn}", "/v1/track/PT1111111111111111X")]
    # one budget per client across routes and tracking numbers (no enumeration by varying the number)
    assert codes == [200, 200, 404, 429, 429]
    assert "Rate limit exceeded" in call(limited, "GET", f"/v1/track/{tn}").text
    # operations routes are not rate limited by the public rule
    q = {"lat": 40, "lng": -75}
    assert all(call(limited, "GET", "/v1/dispatch/drivers", params=q, headers=OPS).status_code == 200
               for _ in range(5))


def test_openapi_metrics_and_mounted_routers(app: Any) -> None:
    doc = call(app, "GET", "/openapi.json").json()
    paths = set(doc["paths"])
    assert {"/v1/shipments", "/v1/scans", "/v1/track/{tracking_number}", "/v1/track/{tracking_number}/stream",
            "/v1/track/{tracking_number}/poll", "/v1/drivers/{driver_id}/location", "/v1/dispatch/drivers"} <= paths
    assert all(p.startswith("/v1/") for p in paths)
    assert "requestBody" in doc["paths"]["/v1/scans"]["post"]
    text = call(app, "GET", "/metrics").text
    assert "parcel_api_requests_total" in text and "parcel_api_sse_streams" in text
    assert json.loads(call(app, "GET", "/healthz").text) == {"status": "ok", "live": False}  # live=False app


def test_page_serves_its_map_library_from_npm(app: Any) -> None:
    for url in ("/vendor/leaflet/leaflet.js", "/vendor/leaflet/leaflet.css",
                "/vendor/topojson/topojson-client.min.js", "/vendor/us-atlas/states-10m.json",
                "/static/track.js", "/static/track.css"):
        assert call(app, "GET", url).status_code == 200, f"{url} (run `make web`)"


def test_stops_remaining_from_the_route_store(app: Any, stack: Settings, r: redis.Redis) -> None:
    """routing/store.py's StopProgress shows as "stop N of M"; its driver wins (no OFD scan needed)."""
    from api.labels import create_labels
    from routing.store import PlannedRow, RouteRow, RouteStore

    labels = create_labels(stack, 3, emit=False)
    route_id, driver = f"R-test-{uuid.uuid4().hex[:8]}", f"drv-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with psycopg.connect(stack.postgres.dsn) as conn:
        RouteStore.upsert_route(conn, RouteRow(route_id, driver, labels[0].destination_facility_id, now,
                                               now + timedelta(hours=8), 0, None))
        for lb in labels:
            RouteStore.add_stop(conn, route_id, driver, lb.shipment_id, now)
        RouteStore.save_plan(conn, route_id, [PlannedRow(lb.shipment_id, i + 1, now + timedelta(minutes=20 * (i + 1)),
                                                         None, "planned") for i, lb in enumerate(labels)],
                             engine="test", objective=0.0, planned_at=now, source="test")
        RouteStore.mark_visited(conn, route_id, labels[0].shipment_id, "done", now)
        conn.execute("UPDATE shipments SET status = 'OUT_FOR_DELIVERY' WHERE shipment_id = %s",
                     (labels[2].shipment_id,))
    pipe = r.pipeline(transaction=False)
    write_positions(pipe, [Heartbeat(driver_id=driver, lat=labels[2].dest_lat + 0.02, lng=labels[2].dest_lng,
                                     recorded_at=now)], driver_ttl_s=60, fleet_ttl_s=3600, channel_prefix="test:",
                    publish=False)
    pipe.execute()
    d = call(app, "GET", f"/v1/track/{labels[2].tracking_number}").json()["driver"]
    assert (d["stop_number"], d["total_stops"], d["stops_remaining"]) == (3, 3, 1)
    assert d["planned_arrival"].startswith((now + timedelta(minutes=60)).strftime("%Y-%m-%dT%H:%M"))
    assert d["distance_km"] == pytest.approx(2.22, abs=0.05)
