"""A simulated delivery driver: GPS heartbeats that approach a shipment's delivery address, sent
through the API's driver endpoint (the real path) or straight onto `driver-locations`.

Entry points:
  drive_to(settings, driver_id, shipment_id=... | dest=(lat, lng), ...)  the approach itself
  out_for_delivery(settings, driver_id)     a new shipment taken to OUT_FOR_DELIVERY by real scans
  live_demo(settings, echo)                 jobs + API + a shipment + a detached driver -> page URL
  python -m simulator.driver --shipment-id ID --driver-id D   (the detached driver of live_demo)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.settings import ROOT, Settings
from sinks.stores import kafka_producer_config

DRIVER_TOPOLOGY = ROOT / "topologies" / "driver_locations.yaml"
PIPELINE_TOPOLOGY = ROOT / "topologies" / "scan_pipeline.yaml"


@dataclass(frozen=True)
class Fix:
    lat: float
    lng: float
    recorded_at: datetime


def offset_point(lat: float, lng: float, km: float, bearing_deg: float) -> tuple[float, float]:
    """The point `km` from (lat, lng) towards `bearing_deg` (flat-earth: fine for a few km)."""
    b = math.radians(bearing_deg)
    return (lat + km / 111.2 * math.cos(b),
            lng + km / (111.2 * math.cos(math.radians(lat))) * math.sin(b))


def approach(start: tuple[float, float], dest: tuple[float, float], steps: int) -> list[tuple[float, float]]:
    """`steps` points from `start` to `dest` (both included) along a gentle curve, like streets."""
    if steps < 2:
        raise ValueError("steps must be at least 2")
    (la0, ln0), (la1, ln1) = start, dest
    out = []
    for i in range(steps):
        t = i / (steps - 1)
        bend = math.sin(math.pi * t) * 0.15  # sideways offset, zero at both ends
        out.append((la0 + (la1 - la0) * t + (ln1 - ln0) * bend * 0.5,
                    ln0 + (ln1 - ln0) * t - (la1 - la0) * bend * 0.5))
    return out


def destination_of(settings: Settings, shipment_id: uuid.UUID | str) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(settings.postgres.dsn) as conn:
        row = conn.execute(
            "SELECT COALESCE(s.dest_lat, d.lat), COALESCE(s.dest_lng, d.lng) FROM shipments s "
            "LEFT JOIN facilities d ON d.facility_id = s.destination_facility_id WHERE s.shipment_id = %s",
            (str(shipment_id),)).fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"shipment {shipment_id} is unknown or has no delivery point")
    return float(row[0]), float(row[1])


class _Sender:
    """Heartbeats over HTTP (api_url given: the driver app's path) or directly to Kafka."""

    def __init__(self, settings: Settings, api_url: str | None, api_key: str | None) -> None:
        self.settings = settings
        self.api_url = api_url.rstrip("/") if api_url else None
        self.api_key = api_key or (settings.api.driver_keys[0] if settings.api.driver_keys else "")
        self._client: Any = None
        self._producer: Any = None

    def send(self, driver_id: str, fix: Fix) -> None:
        body = {"lat": fix.lat, "lng": fix.lng, "recorded_at": fix.recorded_at.isoformat()}
        if self.api_url:
            import httpx

            if self._client is None:
                self._client = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.api_key}"})
            r = self._client.post(f"{self.api_url}/v1/drivers/{driver_id}/location", json=body)
            r.raise_for_status()
        else:
            from confluent_kafka import Producer

            if self._producer is None:
                self._producer = Producer(kafka_producer_config(self.settings.kafka.bootstrap_servers,
                                                                {"linger.ms": 5}))
            self._producer.produce(self.settings.kafka.topics["driver_locations"], key=driver_id.encode(),
                                   value=json.dumps({"driver_id": driver_id, **body}).encode())
            self._producer.flush(10)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def drive_to(
    settings: Settings,
    driver_id: str,
    shipment_id: uuid.UUID | str | None = None,
    *,
    dest: tuple[float, float] | None = None,
    start: tuple[float, float] | None = None,
    start_km: float = 3.0,
    steps: int = 20,
    interval_s: float | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    on_fix: Callable[[int, Fix], None] | None = None,
) -> list[Fix]:
    """Send `steps` heartbeats from `start` (default: `start_km` north-west of the address) to the
    delivery point of `shipment_id` (or `dest`), one every `interval_s` (default
    api.heartbeat_interval_s). Returns the fixes sent; the last one is the address itself."""
    if dest is None:
        if shipment_id is None:
            raise ValueError("drive_to needs shipment_id or dest")
        dest = destination_of(settings, shipment_id)
    start = start or offset_point(dest[0], dest[1], start_km, 315.0)
    wait = settings.api.heartbeat_interval_s if interval_s is None else interval_s
    sender = _Sender(settings, api_url, api_key)
    sent: list[Fix] = []
    try:
        for i, (lat, lng) in enumerate(approach(start, dest, steps)):
            if i and wait:
                time.sleep(wait)
            fix = Fix(round(lat, 6), round(lng, 6), datetime.now(UTC))
            sender.send(driver_id, fix)
            sent.append(fix)
            if on_fix is not None:
                on_fix(i, fix)
    finally:
        sender.close()
    return sent


def scan(shipment_id: uuid.UUID | str, event_type: str, at: datetime, *, facility_id: str | None = None,
         driver_id: str | None = None, reason_code: str | None = None, route_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": str(uuid.uuid4()), "shipment_id": str(shipment_id), "event_type": event_type,
                            "scan_device_id": "sim-driver-app", "created_at": at.isoformat()}
    if facility_id:
        body["facility_id"] = facility_id
    if driver_id:
        body["driver_id"] = driver_id
    if route_id:
        body["route_id"] = route_id
    if reason_code:
        body["reason_code"] = reason_code
    return body


def produce_scans(settings: Settings, scans: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    p = Producer(kafka_producer_config(settings.kafka.bootstrap_servers, {"enable.idempotence": True}))
    for body in scans:
        p.produce(settings.kafka.topics["scan_events"], key=body["shipment_id"].encode(),
                  value=json.dumps(body).encode())
    if p.flush(30):
        raise RuntimeError("scans were not delivered to scan-events")


def out_for_delivery(settings: Settings, driver_id: str, *, destination: str | None = None) -> Any:
    """A new shipment (label API) and its PICKUP, ARRIVAL, DEPARTURE, OUT_FOR_DELIVERY (driver_id)
    scans on scan-events; the scan pipeline must be running to apply them. Returns the Label."""
    from api.labels import create_labels

    now = datetime.now(UTC)
    (label,) = create_labels(settings, 1, destination=destination, created_at=now - timedelta(hours=30))
    sid, origin, station = label.shipment_id, label.origin_facility_id, label.destination_facility_id
    produce_scans(settings, [
        scan(sid, "PICKUP", now - timedelta(hours=26), facility_id=origin),
        scan(sid, "DEPARTURE", now - timedelta(hours=25), facility_id=origin),
        scan(sid, "ARRIVAL", now - timedelta(hours=4), facility_id=station),
        # with a route: the route planner plans it, and the page shows "stop k of n"
        scan(sid, "OUT_FOR_DELIVERY", now - timedelta(minutes=20), facility_id=station, driver_id=driver_id,
             route_id=f"{driver_id}-{now:%Y%m%d}"),
    ])
    return label


def wait_status(settings: Settings, shipment_id: uuid.UUID | str, status: str, timeout: float = 120.0) -> bool:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(settings.postgres.dsn) as conn:
            row = conn.execute("SELECT status::text FROM shipments WHERE shipment_id = %s",
                               (str(shipment_id),)).fetchone()
        if row and row[0] == status:
            return True
        time.sleep(1.0)
    return False


def start_detached_driver(settings: Settings, driver_id: str, shipment_id: uuid.UUID | str, *, steps: int,
                          interval_s: float, api_url: str | None, deliver: bool) -> int:
    """`python -m simulator.driver ...` in the background (.stack/jobs/driver-sim.pid, stopped by
    `parcel down`), so the driver keeps approaching after the main job has printed its URL."""
    d = Path(settings.stack.dir) / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    log = d / "driver-sim.log"
    cmd = [sys.executable, "-m", "simulator.driver", "--driver-id", driver_id, "--shipment-id", str(shipment_id),
           "--steps", str(steps), "--interval", str(interval_s)]
    if api_url:
        cmd += ["--api-url", api_url]
    if deliver:
        cmd.append("--deliver")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    (d / "driver-sim.pid").write_text(str(proc.pid))
    return proc.pid


def live_demo(settings: Settings, echo: Callable[[str], None], *, driver_id: str = "DRV-DEMO-1",
              steps: int = 120, interval_s: float = 3.0, deliver: bool = True, wait_s: float = 300.0) -> str:
    """The last-mile part of the main job: make sure the scan pipeline, the driver-locations job and
    the API run in the background, take a new shipment out for delivery, start a simulated driver
    approaching its address, and return the tracking page URL. Call after the pipeline is up."""
    from api.cli import base_url, start_background
    from topologies import jobs

    jobs.start(settings, "scan-pipeline", PIPELINE_TOPOLOGY, settings.metrics.port)  # no-op when running
    loc = jobs.start(settings, "driver-locations", DRIVER_TOPOLOGY, settings.metrics.port + 1)
    echo(f"driver-locations job running (pid {loc.pid}), log {loc.log}")
    api = start_background(settings)
    url = base_url(settings)
    echo(f"API running (pid {api.pid}) at {url}, log {api.log}")
    label = out_for_delivery(settings, driver_id)
    if not wait_status(settings, label.shipment_id, "OUT_FOR_DELIVERY", timeout=wait_s):
        raise RuntimeError(f"shipment {label.shipment_id} did not reach OUT_FOR_DELIVERY; is the scan pipeline up?")
    pid = start_detached_driver(settings, driver_id, label.shipment_id, steps=steps, interval_s=interval_s,
                                api_url=url, deliver=deliver)
    echo(f"simulated driver {driver_id} (pid {pid}) approaching the address: {steps} heartbeats, "
         f"one every {interval_s:g} s")
    page = f"{url}/t/{label.tracking_number}"
    echo(f"tracking page: {page}")
    return page


def main(argv: list[str] | None = None) -> None:
    from config.settings import get_settings

    ap = argparse.ArgumentParser(description="a simulated driver approaching a shipment's address")
    ap.add_argument("--driver-id", required=True)
    ap.add_argument("--shipment-id")
    ap.add_argument("--dest", help="lat,lng instead of a shipment")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--interval", type=float, default=None, help="seconds between heartbeats")
    ap.add_argument("--start-km", type=float, default=3.0)
    ap.add_argument("--api-url", help="send through the API (default: straight to Kafka)")
    ap.add_argument("--deliver", action="store_true", help="scan DELIVERED at the address")
    a = ap.parse_args(argv)
    s = get_settings()
    dest = tuple(float(x) for x in a.dest.split(",")) if a.dest else None
    fixes = drive_to(s, a.driver_id, a.shipment_id, dest=dest, steps=a.steps, interval_s=a.interval,  # type: ignore[arg-type]
                     start_km=a.start_km, api_url=a.api_url,
                     on_fix=lambda i, f: print(f"{i + 1}/{a.steps} {f.lat:.5f},{f.lng:.5f}", flush=True))
    if a.deliver and a.shipment_id:
        produce_scans(s, [scan(a.shipment_id, "DELIVERED", datetime.now(UTC), driver_id=a.driver_id)])
        print("DELIVERED scanned", flush=True)
    print(f"done: {len(fixes)} heartbeats", flush=True)


if __name__ == "__main__":
    main()
