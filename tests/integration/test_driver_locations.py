"""driver-locations topology end to end on the real Kafka and Redis: heartbeats in, Redis GEO out
(fleet:{date} and driver:{id}:location with TTL, a live pub/sub message), bad ones dead-lettered
with a reason while the good ones around them flow on; a silent driver vanishes by TTL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from api.testing import Process, driver_locations_job, wait_for
from config.settings import Settings
from sinks.redis_geo import driver_key, fleet_key
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import high_watermarks, read_topic

TTL_S = 4


@pytest.fixture(scope="module")
def job(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    # the TTL knob: api.driver_ttl_s, short here so the expiry test runs in seconds
    p = driver_locations_job(stack, tmp_path_factory.mktemp("driver-locations"),
                             env={"PARCEL_API__DRIVER_TTL_S": str(TTL_S)})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def r(stack: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis.url)
    yield client
    client.close()


def send(settings: Settings, records: list[tuple[str | None, bytes]]) -> None:
    p = Producer(kafka_producer_config(settings.kafka.bootstrap_servers))
    for key, value in records:
        p.produce(settings.kafka.topics["driver_locations"], key=key.encode() if key else None, value=value)
    assert p.flush(10) == 0


def hb(driver: str, lat: object, lng: object, **extra: object) -> bytes:
    return json.dumps({"driver_id": driver, "lat": lat, "lng": lng,
                       "recorded_at": datetime.now(UTC).isoformat(), **extra}).encode()


def position(r: redis.Redis, driver: str) -> tuple[float, float] | None:
    pos = r.geopos(driver_key(driver), driver)[0]
    return (pos[1], pos[0]) if pos else None


def test_heartbeats_land_in_redis_geo_and_bad_ones_are_dead_lettered(stack: Settings, job: Process,
                                                                     r: redis.Redis) -> None:
    run = uuid.uuid4().hex[:8]
    good, other, bad = f"drv-{run}-a", f"drv-{run}-b", f"drv-{run}-x"
    dlq_start = high_watermarks(stack, "scan-events-dlq")
    pubsub = r.pubsub()
    pubsub.subscribe(stack.api.live_channel_prefix + good)
    send(stack, [
        (good, hb(good, 40.0, -75.0)),
        (bad, hb(bad, 123.0, -75.0)),                 # latitude out of range
        (bad, hb(bad, "40.1", -75.0)),                # not a number
        (bad, b"{not json"),                          # malformed
        (bad, hb(f"{bad}-other", 40.0, -75.0)),       # key names another driver
        (other, hb(other, 40.01, -75.01)),
        (good, hb(good, 40.02, -75.02)),              # the newer fix wins
    ])
    got = wait_for(lambda: position(r, good) if position(r, good) and abs(position(r, good)[0] - 40.02) < 1e-4
                   else None, 60, "the good driver's newest position", job)
    assert got == pytest.approx((40.02, -75.02), abs=1e-4)
    assert position(r, other) == pytest.approx((40.01, -75.01), abs=1e-4)
    assert position(r, bad) is None
    today = fleet_key(datetime.now(UTC))
    members = {m.decode() for m, *_ in r.geosearch(today, longitude=-75.0, latitude=40.0, radius=10, unit="km",
                                                 withdist=True)}
    assert {good, other} <= members and bad not in members
    assert 0 < r.ttl(driver_key(good)) <= TTL_S

    # the live message for the SSE streams
    deadline, moves = time.monotonic() + 5, []
    while time.monotonic() < deadline and not moves:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            moves.append(json.loads(msg["data"]))
    pubsub.close()
    assert moves and moves[0]["driver_id"] == good and "lat" in moves[0]

    def bad_letters() -> list[dict[str, object]] | None:
        letters = [v for k, v in read_topic(stack, "scan-events-dlq", dlq_start) if k == bad.encode()]
        return letters if len(letters) >= 4 else None

    letters = wait_for(bad_letters, 30, "four dead letters for the bad driver", job, every=1.0)
    assert sorted(str(v["reason"]) for v in letters) == [
        "invalid_coordinates", "invalid_coordinates", "key_mismatch", "malformed_json"]
    assert all(v["topology"] == "driver-locations" and v["step"] == "validate_heartbeat" for v in letters)


def test_a_silent_driver_vanishes_after_the_ttl(stack: Settings, job: Process, r: redis.Redis) -> None:
    driver = f"drv-{uuid.uuid4().hex[:8]}-silent"
    send(stack, [(driver, hb(driver, 41.5, -81.7))])
    wait_for(lambda: position(r, driver), 60, "the driver's position", job)
    t0 = time.monotonic()
    wait_for(lambda: position(r, driver) is None, TTL_S + 5, "the silent driver's position to expire", job)
    assert time.monotonic() - t0 <= TTL_S + 1
    assert r.exists(driver_key(driver)) == 0


def test_the_topology_is_stateless_and_at_least_once() -> None:
    """GEOADD is idempotent: at-least-once replays rewrite the same points; no state to restore."""
    from topologies.lint import load_topology

    spec = load_topology(Path("topologies/driver_locations.yaml"))
    assert spec.app.processing_guarantee == "at-least-once"
    assert [s.use for s in spec.steps] == ["validate_heartbeat", "redis_driver_locations"]
