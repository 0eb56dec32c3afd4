"""The SSE stream on a real uvicorn server: a snapshot, then a scan's status change (a normalized
event on `notifications`) and a GPS heartbeat (driver app -> API -> driver-locations topology ->
Redis pub/sub) arrive as events for the shipment's tracking number, and only for it."""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from api.labels import create_labels
from api.testing import Process, api_server, driver_locations_job
from config.settings import Settings
from sinks.stores import kafka_producer_config
from stack.migrations import cassandra_session

DRIVER = {"Authorization": "Bearer dev-driver-key"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sse")


@pytest.fixture(scope="module")
def server(stack: Settings, workdir: Path) -> Iterator[str]:
    proc, url = api_server(workdir / "api.log")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def locations(stack: Settings, workdir: Path) -> Iterator[Process]:
    p = driver_locations_job(stack, workdir)
    yield p
    p.stop()


def out_for_delivery_shipment(stack: Settings, driver: str) -> Any:
    """A shipment OUT_FOR_DELIVERY with `driver`, written as the pipeline would have (no pipeline run)."""
    (label,) = create_labels(stack, 1, emit=False)
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET status = 'IN_TRANSIT' WHERE shipment_id = %s", (label.shipment_id,))
    cluster, session = cassandra_session(stack, stack.cassandra.keyspace)
    try:
        session.execute("INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status, "
                        "facility_id) VALUES (%s, %s, %s, 'ARRIVAL', 'IN_TRANSIT', %s)",
                        (label.shipment_id, datetime.now(UTC) - timedelta(hours=1), uuid.uuid4(),
                         label.destination_facility_id))
    finally:
        cluster.shutdown()
    return label


def notification(label: Any, status: str, event_type: str, driver: str | None) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": str(uuid.uuid4()), "shipment_id": str(label.shipment_id),
            "tracking_number": label.tracking_number, "event_type": event_type, "status": status,
            "previous_status": "IN_TRANSIT", "reason_code": None, "attempt_count": 0,
            "facility": {"id": label.destination_facility_id, "name": "Test Station", "city": "Testville"},
            "created_at": datetime.now(UTC).isoformat(), "eta": None, "return_shipment": None,
            "driver_id": driver, "route_id": None}


def publish_notification(stack: Settings, note: dict[str, Any]) -> None:
    p = Producer(kafka_producer_config(stack.kafka.bootstrap_servers))
    p.produce(stack.kafka.topics["notifications"], key=note["shipment_id"].encode(), value=json.dumps(note).encode())
    assert p.flush(10) == 0


class Stream:
    """Reads an SSE stream in a thread; events land in a queue as (event, data)."""

    def __init__(self, url: str) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=None)) as c, c.stream("GET", url) as r:
            self.events.put(("http", r.status_code))
            event = None
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    self.events.put((event, json.loads(line.split(":", 1)[1])))
                    event = None

    def next(self, kind: str, timeout: float = 30.0) -> Any:
        while True:
            got_kind, data = self.events.get(timeout=timeout)
            if got_kind == kind:
                return data

    def close(self) -> None:
        self._stop.set()


def test_stream_pushes_a_scan_and_a_heartbeat(stack: Settings, server: str, locations: Process) -> None:
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    label = out_for_delivery_shipment(stack, driver)
    other = out_for_delivery_shipment(stack, f"{driver}-other")
    stream = Stream(f"{server}/v1/track/{label.tracking_number}/stream")
    try:
        assert stream.next("http") == 200
        snap = stream.next("snapshot")
        assert snap["status"] == "IN_TRANSIT" and snap["driver"] is None and "events" not in snap

        # another shipment's scan is not this stream's business
        publish_notification(stack, notification(other, "OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", f"{driver}-other"))
        publish_notification(stack, notification(label, "OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", driver))
        status = stream.next("status")
        assert status["status"] == "OUT_FOR_DELIVERY" and status["facility"]["city"] == "Testville"
        assert "driver_id" not in status and "shipment_id" not in status

        lat, lng = label.dest_lat + 0.02, label.dest_lng
        r = httpx.post(f"{server}/v1/drivers/{driver}/location", json={"lat": lat, "lng": lng}, headers=DRIVER)
        assert r.status_code == 202, r.text
        move = stream.next("driver")
        assert move["position"] == pytest.approx({"lat": lat, "lng": lng}, abs=1e-4)
        assert move["distance_km"] == pytest.approx(2.22, abs=0.05)
        assert "driver_id" not in move
    finally:
        stream.close()


def test_stream_of_unknown_tracking_number_is_404(server: str) -> None:
    assert httpx.get(f"{server}/v1/track/PT0000000000000000X/stream").status_code == 404
