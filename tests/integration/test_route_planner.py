"""The route planner on the real Kafka and PostgreSQL: normalized OUT_FOR_DELIVERY events of one driver's
route, produced onto `notifications` for shipments this test inserted, become route_stops rows with a
sequence and planned arrivals; DELIVERED and a failed attempt re-plan the rest with the visited stops
fixed; a reschedule (its own topology) moves a stop to a pickup; progress() answers "stop k of n"; a
replayed event changes nothing; a bad reschedule is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer
from fastapi import FastAPI

from config.settings import Settings
from routing.http import router
from routing.store import RouteStore
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import group_lag, high_watermarks, read_topic, start_group_at_end, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPOT = "US-DS-ABE-01"  # a seeded delivery station (migration seed); its coordinates are read below
N = 7


class Job:
    """`cli.py run TOPOLOGY` in its own process group (started and stopped by this test only)."""

    def __init__(self, topology: str, group: str, state_dir: Path, log: Path) -> None:
        out = open(log, "ab")
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "cli.py", "run", f"topologies/{topology}", "--metrics-port", "0", "--group", group,
             "--state-dir", str(state_dir)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"job exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


@pytest.fixture(scope="module")
def world(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    groups = {"notifications": f"test-route-planner-{tag}", "reschedule-requests": f"test-route-resched-{tag}"}
    for topic, group in groups.items():
        start_group_at_end(stack, group, topic)
    dlq_start = high_watermarks(stack, "reschedule-requests-dlq") if _topic_exists(stack, "reschedule-requests-dlq") \
        else {}
    with psycopg.connect(stack.postgres.dsn) as conn:
        lat, lng = conn.execute("SELECT lat, lng FROM facilities WHERE facility_id = %s", (DEPOT,)).fetchone()
        ids = [uuid.uuid4() for _ in range(N)]
        now = datetime.now(UTC).replace(microsecond=0)
        for i, sid in enumerate(ids):
            # stops on a ring 1-3 km around the depot
            conn.execute(
                "INSERT INTO shipments (shipment_id, tracking_number, service_level, status, created_at, dest_lat, "
                "dest_lng, destination_facility_id) VALUES (%s, %s, 'STANDARD', 'OUT_FOR_DELIVERY', %s, %s, %s, %s)",
                (sid, f"PTROUTE{tag}{i}", now - timedelta(days=1), lat + 0.01 * ((i % 3) + 1) * (-1) ** i,
                 lng + 0.012 * ((i % 4) - 1.5), DEPOT))
        # the customer of the last shipment chose an afternoon window before the route started
        window = (now + timedelta(hours=4), now + timedelta(hours=5))
        conn.execute("INSERT INTO reschedule_requests (request_id, shipment_id, kind, window_start, window_end) "
                     "VALUES (%s, %s, 'window', %s, %s)", (uuid.uuid4(), ids[-1], *window))
    state = tmp_path_factory.mktemp("route-state")
    logs = tmp_path_factory.mktemp("route-logs")
    jobs = [Job("route_planner.yaml", groups["notifications"], state / "a", logs / "planner.log"),
            Job("route_planner_reschedules.yaml", groups["reschedule-requests"], state / "b", logs / "resched.log")]
    try:
        yield {"ids": ids, "now": now, "window": window, "route": f"R-{tag}", "driver": f"D-{tag}", "jobs": jobs,
               "groups": groups, "dlq_start": dlq_start}
    finally:
        for job in jobs:
            job.stop()


def _topic_exists(stack: Settings, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    return topic in AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers}).list_topics(timeout=10).topics


def _produce(stack: Settings, topic: str, records: list[tuple[str, Any]]) -> None:
    p = Producer(kafka_producer_config(stack.kafka.bootstrap_servers))
    for key, value in records:
        p.produce(topic, key=key.encode(), value=json.dumps(value, default=str).encode())
    assert p.flush(30) == 0


def _event(world: dict[str, Any], sid: uuid.UUID, event_type: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1, "event_id": str(uuid.uuid4()), "shipment_id": str(sid), "tracking_number": "PT",
        "event_type": event_type, "status": extra.pop("status", event_type), "previous_status": "IN_TRANSIT",
        "reason_code": extra.pop("reason_code", None), "attempt_count": 0,
        "facility": {"id": DEPOT, "name": "depot", "city": "Allentown"}, "created_at": at.isoformat(),
        "eta": None, "return_shipment": None, "service_level": "STANDARD",
        "driver_id": world["driver"], "route_id": world["route"], **extra,
    }


def _stops(stack: Settings, route_id: str) -> dict[uuid.UUID, dict[str, Any]]:
    with psycopg.connect(stack.postgres.dsn) as conn:
        rows = conn.execute("SELECT shipment_id, seq, status, planned_arrival, window_start, window_end, "
                            "unserved_reason FROM route_stops WHERE route_id = %s", (route_id,)).fetchall()
    keys = ["seq", "status", "planned_arrival", "window_start", "window_end", "unserved_reason"]
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def _etas(stack: Settings, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
    with psycopg.connect(stack.postgres.dsn) as conn:
        rows = conn.execute("SELECT shipment_id, eta, eta_source, lower(eta_interval), upper(eta_interval), "
                            "model_version FROM shipments WHERE shipment_id = ANY(%s)", (ids,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def _version(stack: Settings, route_id: str) -> int:
    with psycopg.connect(stack.postgres.dsn) as conn:
        row = conn.execute("SELECT plan_version FROM routes WHERE route_id = %s", (route_id,)).fetchone()
    return -1 if row is None else row[0]


def _alive(world: dict[str, Any]) -> None:
    for job in world["jobs"]:
        job.alive()


def _wait(cond, what: str, world: dict[str, Any], timeout: float = 180) -> None:
    def check() -> bool:
        _alive(world)
        return cond()

    wait_for(check, timeout, what)


def test_route_start_plans_every_stop_in_order(stack: Settings, world: dict[str, Any]) -> None:
    ids, now, route = world["ids"], world["now"], world["route"]
    _produce(stack, "notifications", [(str(s), _event(world, s, "OUT_FOR_DELIVERY", now + timedelta(seconds=i)))
                                      for i, s in enumerate(ids)])
    _wait(lambda: len(_stops(stack, route)) == N and all(r["seq"] for r in _stops(stack, route).values()),
          "every stop of the route planned", world)
    stops = _stops(stack, route)
    by_seq = sorted(stops.items(), key=lambda kv: kv[1]["seq"])
    assert [r["seq"] for _, r in by_seq] == list(range(1, N + 1))
    arrivals = [r["planned_arrival"] for _, r in by_seq]
    assert arrivals == sorted(arrivals) and arrivals[0] >= now
    # the window from reschedule_requests is stored and respected
    last = stops[ids[-1]]
    assert (last["window_start"], last["window_end"]) == world["window"]
    assert world["window"][0] <= last["planned_arrival"] <= world["window"][1]  # service starts inside it
    # every open stop's ETA is its planned arrival (source "route"), the band widening with the stops ahead
    etas = _etas(stack, ids)
    for sid, row in stops.items():
        eta, source, low, high, version = etas[sid]
        assert (eta, source, version) == (row["planned_arrival"], "route", "route-v1")
        ahead = row["seq"] - 1
        assert low == eta - timedelta(minutes=15 + 2 * ahead) and high == eta + timedelta(minutes=30 + 4 * ahead)
    store = RouteStore(stack)
    for sid, row in stops.items():
        p = store.progress(sid)
        assert p is not None and p.route_id == route and p.driver_id == world["driver"]
        assert (p.stop_number, p.total_stops, p.stops_remaining) == (row["seq"], N, row["seq"] - 1)
    assert store.progress(uuid.uuid4()) is None
    assert set(store.progress_many(ids)) == set(ids)
    # the same over HTTP (the router the API app mounts)
    first = next(s for s, r in stops.items() if r["seq"] == 1)
    r = asyncio.run(_get(f"/v1/routes/shipments/{first}/progress"))
    assert r.status_code == 200 and r.json()["stop_number"] == 1 and r.json()["total_stops"] == N
    assert asyncio.run(_get(f"/v1/routes/shipments/{uuid.uuid4()}/progress")).status_code == 404


async def _get(path: str) -> httpx.Response:
    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        return await c.get(path)


def test_delivered_and_failed_attempt_replan_with_visited_stops_fixed(stack: Settings, world: dict[str, Any]) -> None:
    route, now = world["route"], world["now"]
    before = _stops(stack, route)
    order = [sid for sid, _ in sorted(before.items(), key=lambda kv: kv[1]["seq"])]
    version = _version(stack, route)
    first, second = order[0], order[1]
    # the pipeline moved the last stop's shipment on (delivered) before this re-plan: its row is not overwritten
    moved = order[-1]
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET status = 'DELIVERED', eta = NULL, eta_source = NULL, eta_interval = NULL "
                     "WHERE shipment_id = %s", (moved,))
    _produce(stack, "notifications", [
        (str(first), _event(world, first, "DELIVERED", now + timedelta(minutes=20))),
        (str(second), _event(world, second, "DELIVERY_ATTEMPTED", now + timedelta(minutes=35),
                             status="DELIVERY_ATTEMPTED", reason_code="recipient_unavailable")),
    ])
    _wait(lambda: _stops(stack, route)[second]["status"] == "attempted" and _version(stack, route) > version,
          "the failed attempt re-planned", world)
    _wait(lambda: _stops(stack, route)[first]["status"] == "done", "the delivered stop marked done", world)
    after = _stops(stack, route)
    assert (after[first]["seq"], after[second]["seq"]) == (1, 2)  # visited: kept in place
    rest = sorted((r["seq"], r["planned_arrival"]) for s, r in after.items() if s not in (first, second))
    assert [s for s, _ in rest] == list(range(3, N + 1))
    # the remaining stops start from where the driver is now, after the attempt
    assert rest[0][1] >= now + timedelta(minutes=35)
    etas = _etas(stack, world["ids"])
    for sid, row in after.items():
        if row["status"] == "planned" and sid != moved:  # ETAs follow the new plan
            assert etas[sid][:2] == (row["planned_arrival"], "route")
    assert etas[moved][:2] == (None, None)
    p = RouteStore(stack).progress(next(s for s, r in after.items() if r["seq"] == 3))
    assert p is not None and (p.stop_number, p.total_stops, p.stops_remaining) == (3, N, 0)
    p_last = RouteStore(stack).progress(next(s for s, r in after.items() if r["seq"] == N))
    assert p_last is not None and p_last.stops_remaining == N - 3


def test_replayed_events_change_nothing(stack: Settings, world: dict[str, Any]) -> None:
    route, now, ids = world["route"], world["now"], world["ids"]
    before, version = _stops(stack, route), _version(stack, route)
    _produce(stack, "notifications", [(str(ids[0]), _event(world, ids[0], "OUT_FOR_DELIVERY", now))])
    group = world["groups"]["notifications"]
    _wait(lambda: group_lag(stack, group, "notifications") == 0, "the replayed event consumed", world)
    assert _version(stack, route) == version
    assert _stops(stack, route) == before


def test_reschedule_to_pickup_takes_the_stop_out_and_replans(stack: Settings, world: dict[str, Any]) -> None:
    route, now = world["route"], world["now"]
    before = _stops(stack, route)
    planned = sorted((r["seq"], s) for s, r in before.items() if r["status"] == "planned")
    leaving = planned[0][1]
    version = _version(stack, route)
    dlq_start = world["dlq_start"]
    _produce(stack, "reschedule-requests", [
        (str(leaving), {"shipment_id": str(leaving), "kind": "pickup", "pickup_facility_id": DEPOT,
                        "created_at": (now + timedelta(minutes=40)).isoformat()}),
        (str(leaving), {"shipment_id": str(leaving), "kind": "window", "created_at": now.isoformat(),
                        "window_start": (now + timedelta(hours=3)).isoformat(),
                        "window_end": (now + timedelta(hours=2)).isoformat()}),
    ])
    _wait(lambda: _version(stack, route) > version, "the reschedule re-planned", world)
    after = _stops(stack, route)
    assert after[leaving]["status"] == "unserved" and after[leaving]["seq"] is None
    assert after[leaving]["unserved_reason"] == "pickup_at_facility"
    assert RouteStore(stack).progress(leaving) is None
    seqs = sorted(r["seq"] for r in after.values() if r["seq"] is not None)
    assert seqs == list(range(1, N))  # one stop fewer, visited ones still 1 and 2
    assert all(after[s]["seq"] == before[s]["seq"] for s in after if before[s]["status"] != "planned")

    def bad_window_dead_lettered() -> bool:
        rows = read_topic(stack, "reschedule-requests-dlq", dlq_start)
        return any(k == str(leaving).encode() and v["reason"] == "invalid_reschedule" and "not after" in v["detail"]
                   for k, v in rows)

    _wait(bad_window_dead_lettered, "the bad window dead-lettered with its reason", world, timeout=60)
