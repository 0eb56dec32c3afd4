"""Last-mile benchmark (`python -m bench.lastmile`, `make bench-lastmile`), on the real stack:

1. GPS heartbeats ingested per second into Redis GEO:
   - sink: the driver-locations sink's writes (newest fix per driver, one pipeline per batch);
   - pipelined, every fix: one pipeline per batch but every heartbeat written (no collapse);
   - baseline: one request per command, as a naive handler doing GEOADD per heartbeat would;
   - end to end: heartbeats produced to `driver-locations`, drained by the topology (its own group).
2. SSE fan-out: N concurrent tracking-page streams held on one API process; heartbeats produced to
   Kafka for the streams' drivers; p50/p99 delay from heartbeat (recorded_at) to the client's event.

Results go to stdout and, with --write, into docs/bench/lastmile.md (the tables only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from confluent_kafka import Producer

from api.testing import api_server, driver_locations_job
from bench.stats import LatencySummary
from config.settings import ROOT, Settings, load_settings
from operators.driver_location import Heartbeat
from sinks.redis_geo import driver_key, fleet_key, live_message, write_positions
from sinks.stores import kafka_producer_config
from topologies.lag import group_lag

DOC = ROOT / "docs" / "bench" / "lastmile.md"


def heartbeats(n: int, drivers: int, run: str) -> list[Heartbeat]:
    t0 = datetime.now(UTC)
    return [Heartbeat(driver_id=f"bench-{run}-{i % drivers}", lat=40.0 + (i % 997) * 1e-4, lng=-75.0 + (i % 991) * 1e-4,
                      recorded_at=t0 + timedelta(milliseconds=i)) for i in range(n)]


def bench_sink(r: redis.Redis, hbs: list[Heartbeat], batch: int, *, collapse: bool) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(hbs), batch):
        chunk = hbs[i:i + batch]
        pipe = r.pipeline(transaction=False)
        if collapse:
            write_positions(pipe, chunk, driver_ttl_s=120, fleet_ttl_s=3600, channel_prefix="bench:", publish=True)
        else:
            for hb in chunk:
                pipe.geoadd(fleet_key(hb.recorded_at), (hb.lng, hb.lat, hb.driver_id))
                pipe.geoadd(driver_key(hb.driver_id), (hb.lng, hb.lat, hb.driver_id))
                pipe.expire(driver_key(hb.driver_id), 120)
                pipe.publish("bench:" + hb.driver_id, live_message(hb))
        pipe.execute()
    return len(hbs) / (time.perf_counter() - t0)


def bench_naive(r: redis.Redis, hbs: list[Heartbeat]) -> float:
    t0 = time.perf_counter()
    for hb in hbs:  # what a request handler writing Redis itself would do: one round trip per command
        r.geoadd(fleet_key(hb.recorded_at), (hb.lng, hb.lat, hb.driver_id))
        r.geoadd(driver_key(hb.driver_id), (hb.lng, hb.lat, hb.driver_id))
        r.expire(driver_key(hb.driver_id), 120)
        r.publish("bench:" + hb.driver_id, live_message(hb))
    return len(hbs) / (time.perf_counter() - t0)


def produce(settings: Settings, hbs: list[Heartbeat]) -> None:
    p = Producer(kafka_producer_config(settings.kafka.bootstrap_servers, {"linger.ms": 10}))
    topic = settings.kafka.topics["driver_locations"]
    for hb in hbs:
        while True:
            try:
                p.produce(topic, key=hb.driver_id.encode(), value=json.dumps(hb.to_json()).encode())
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


def bench_end_to_end(settings: Settings, workdir: Path, n: int, drivers: int) -> dict[str, float]:
    group = f"bench-driver-locations-{uuid.uuid4().hex[:6]}"
    job = driver_locations_job(settings, workdir, group=group)
    try:
        time.sleep(8)  # join the group and get partitions before the burst
        hbs = heartbeats(n, drivers, uuid.uuid4().hex[:6])
        t0 = time.perf_counter()
        produce(settings, hbs)
        t_prod = time.perf_counter() - t0
        topic = settings.kafka.topics["driver_locations"]
        while group_lag(settings.kafka.bootstrap_servers, group, topic) > 0:
            job.assert_alive()
            time.sleep(0.1)
        total = time.perf_counter() - t0
        return {"heartbeats": n, "drivers": drivers, "produce_s": t_prod, "drain_s": total, "rate": n / total}
    finally:
        job.stop()


# --- SSE fan-out --------------------------------------------------------------------------------


def ofd_shipments(settings: Settings, count: int, run: str) -> list[tuple[str, str]]:
    """`count` shipments OUT_FOR_DELIVERY, each with its own driver: (tracking_number, driver_id)."""
    from api.labels import create_labels
    from stack.migrations import cassandra_session

    labels = create_labels(settings, count, emit=False)
    with psycopg.connect(settings.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET status = 'OUT_FOR_DELIVERY' WHERE shipment_id = ANY(%s::uuid[])",
                     ([str(lb.shipment_id) for lb in labels],))
    cluster, session = cassandra_session(settings, settings.cassandra.keyspace)
    out = []
    try:
        stmt = session.prepare("INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status, "
                               "facility_id, driver_id) VALUES (?, ?, ?, 'OUT_FOR_DELIVERY', 'OUT_FOR_DELIVERY', ?, ?)")
        for i, lb in enumerate(labels):
            driver = f"bench-{run}-d{i}"
            session.execute(stmt, (lb.shipment_id, datetime.now(UTC), uuid.uuid4(), lb.destination_facility_id, driver))
            out.append((lb.tracking_number, driver))
    finally:
        cluster.shutdown()
    return out


async def fan_out(url: str, settings: Settings, pairs: list[tuple[str, str]], streams: int, rounds: int,
                  interval_s: float) -> dict[str, Any]:
    delays: list[float] = []
    opened = 0
    ready = asyncio.Event()
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as client:

        async def one(tn: str) -> None:
            nonlocal opened
            async with client.stream("GET", f"{url}/v1/track/{tn}/stream") as r:
                event = None
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        if event == "snapshot":
                            opened += 1
                            if opened == streams:
                                ready.set()
                        elif event == "driver":
                            at = datetime.fromisoformat(json.loads(line[5:])["recorded_at"])
                            delays.append((datetime.now(UTC) - at).total_seconds())
                        event = None

        tasks = [asyncio.create_task(one(pairs[i % len(pairs)][0])) for i in range(streams)]
        t_open = time.perf_counter()
        await asyncio.wait_for(ready.wait(), 300)
        open_s = time.perf_counter() - t_open
        p = Producer(kafka_producer_config(settings.kafka.bootstrap_servers, {"linger.ms": 0}))
        topic = settings.kafka.topics["driver_locations"]
        # Drivers' heartbeats spread evenly over the interval, as a fleet's are (each app on its own clock).
        gap = interval_s / len(pairs)
        for k in range(rounds):
            for j, (_tn, driver) in enumerate(pairs):
                body = {"driver_id": driver, "lat": 40.0 + k * 1e-3 + j * 1e-5, "lng": -75.0,
                        "recorded_at": datetime.now(UTC).isoformat()}
                p.produce(topic, key=driver.encode(), value=json.dumps(body).encode())
                p.poll(0)
                await asyncio.sleep(gap)
        p.flush(10)
        await asyncio.sleep(3)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = streams * rounds
    return {"streams": streams, "shipments": len(pairs), "rounds": rounds, "expected": expected,
            "received": len(delays), "open_s": open_s, "latency": LatencySummary.of(delays) if delays else None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heartbeats", type=int, default=20_000)
    ap.add_argument("--drivers", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=500, help="heartbeats per sink batch (a checkpoint's worth)")
    ap.add_argument("--naive", type=int, default=5_000, help="heartbeats for the one-request-each baseline")
    ap.add_argument("--e2e", type=int, default=20_000, help="heartbeats through Kafka and the topology")
    ap.add_argument("--streams", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--shipments", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats of the Redis ingest runs (median)")
    ap.add_argument("--write", action="store_true", help=f"write the tables into {DOC.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    settings = load_settings()
    r = redis.Redis.from_url(settings.redis.url)
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    run = uuid.uuid4().hex[:6]
    hbs = heartbeats(a.heartbeats, a.drivers, run)
    # interleaved repeats, median of each: the machine is shared, so one run alone is noise
    runs: dict[str, list[float]] = {"sink": [], "every": [], "naive": []}
    for _ in range(a.repeat):
        runs["sink"].append(bench_sink(r, hbs, a.batch, collapse=True))
        runs["every"].append(bench_sink(r, hbs, a.batch, collapse=False))
        runs["naive"].append(bench_naive(r, hbs[: a.naive]))
    sink, every, naive = (statistics.median(runs[k]) for k in ("sink", "every", "naive"))
    with tempfile.TemporaryDirectory(prefix="bench-lastmile-") as tmp:
        e2e = bench_end_to_end(settings, Path(tmp), a.e2e, a.drivers)
        pairs = ofd_shipments(settings, a.shipments, run)
        # the public rate limit (per client address) would stop one client holding 1,000 streams
        proc, url = api_server(Path(tmp) / "api.log", env={"PARCEL_API__PUBLIC_RATE_LIMIT": "1000000/minute"})
        job = driver_locations_job(settings, Path(tmp))
        try:
            time.sleep(8)
            fans = [asyncio.run(fan_out(url, settings, pairs, n, a.rounds, a.interval)) for n in a.streams]
        finally:
            job.stop()
            proc.stop()
    for key in r.scan_iter(f"driver:bench-{run}-*"):
        r.delete(key)

    out(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, shared with "
        "other engineers' jobs and tests; run under nice -n 10), Redis/Kafka/PostgreSQL/Cassandra local.")
    out("")
    out(f"### GPS heartbeats into Redis GEO ({a.heartbeats:,} heartbeats, {a.drivers:,} drivers; "
        f"median of {a.repeat} interleaved runs)")
    out("")
    out("| writer | heartbeats/s | vs baseline |")
    out("|---|---:|---:|")
    out(f"| baseline: one request per command (GEOADD x2, EXPIRE, PUBLISH), {a.naive:,} heartbeats "
        f"| {naive:,.0f} | 1.0x |")
    out(f"| pipelined per batch of {a.batch}, every heartbeat written | {every:,.0f} | {every / naive:.1f}x |")
    out(f"| the sink: pipelined per batch of {a.batch}, newest fix per driver | {sink:,.0f} | {sink / naive:.1f}x |")
    out(f"| end to end: Kafka -> driver-locations topology -> Redis ({e2e['heartbeats']:,}; drained in "
        f"{e2e['drain_s']:.1f} s) | {e2e['rate']:,.0f} | {e2e['rate'] / naive:.1f}x |")
    out("")
    out(f"### SSE fan-out (one API process; {a.shipments} shipments out for delivery, heartbeats every "
        f"{a.interval:g} s for {a.rounds} rounds, Kafka -> topology -> Redis pub/sub -> SSE)")
    out("")
    out("| streams | opened in | events received / expected | p50 | p90 | p99 | max |")
    out("|---:|---:|---:|---:|---:|---:|---:|")
    for f in fans:
        lat = f["latency"]
        if lat is None:
            out(f"| {f['streams']} | {f['open_s']:.1f} s | 0 / {f['expected']} | - | - | - | - |")
            continue
        out(f"| {f['streams']} | {f['open_s']:.1f} s | {f['received']:,} / {f['expected']:,} | "
            f"{lat.p50 * 1000:.0f} ms | {lat.p90 * 1000:.0f} ms | {lat.p99 * 1000:.0f} ms | {lat.max * 1000:.0f} ms |")
    if a.write:
        text = DOC.read_text() if DOC.exists() else ""
        marker = "<!-- results -->"
        head = text.split(marker)[0] if marker in text else text
        DOC.write_text(head.rstrip() + f"\n\n{marker}\n\n" + "\n".join(lines) + "\n")
        print(f"written to {DOC}")


if __name__ == "__main__":
    main()
