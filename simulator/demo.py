"""The main job of a fresh machine (`make run`): the scan pipeline running in the background, fed a
simulated carrier day through the label API and the scanners' topic, then a report of where to
look: the /metrics endpoint, the day's outcome from PostgreSQL, and one shipment's timeline from
Cassandra with its ETA."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException

from config.settings import ROOT, Settings
from notifier import sandbox
from simulator.live import plan_day, run_day
from stack.migrations import cassandra_session
from topologies import jobs
from topologies.lag import group_lag

PIPELINE = ROOT / "topologies" / "scan_pipeline.yaml"
# The other streaming jobs of the main job, each with its own /metrics port (metrics.port + offset);
# the driver-locations job (+1) and the API are started by simulator.driver.live_demo.
JOBS = (
    ("notifier", ROOT / "topologies" / "notifier.yaml", 2),
    ("route-planner", ROOT / "topologies" / "route_planner.yaml", 3),
    ("route-planner-reschedules", ROOT / "topologies" / "route_planner_reschedules.yaml", 4),
)


def committed_lag(settings: Settings, group: str = "scan-pipeline", topic: str = "scan_events") -> int:
    return group_lag(settings.kafka.bootstrap_servers, group, settings.kafka.topics[topic])


def _api_url(settings: Settings) -> str:
    return settings.api.public_url or f"http://{settings.api.host}:{settings.api.port}"


def _report_messages(settings: Settings, outbox: Path, echo: Callable[[str], None]) -> None:
    """What the customers heard: the notifier's sends as the provider sandbox received them."""
    t0 = time.monotonic()
    # committed_lag counts no transaction marker as lag (topologies/lag.py)
    while time.monotonic() - t0 < 120 and committed_lag(settings, "notifier", "notifications") > 0:
        time.sleep(2)
    time.sleep(3)  # the last batch's sends
    lines = outbox.read_text(encoding="utf-8").splitlines() if outbox.exists() else []
    msgs = [json.loads(line) for line in lines]
    by_channel = Counter(m["channel"] for m in msgs)
    echo("\nnotifications received by the provider sandbox so far: "
         + (", ".join(f"{k} {v}" for k, v in sorted(by_channel.items())) or "none") + f"  ({outbox})")
    sms = [m for m in msgs if m["channel"] == "sms"]
    if sms:
        echo(f"  last SMS to {sms[-1]['to']}: {sms[-1]['body']}")
    stale = _stale_decisions(settings.metrics.port + dict((n, o) for n, _, o in JOBS)["notifier"])
    if stale:
        echo("  not sent because no longer true (the notifier caught up on a stored day; docs/notifier.md): "
             + ", ".join(f"{k} {v:.0f}" for k, v in sorted(stale.items())))


def _stale_decisions(port: int) -> dict[str, float]:
    """The notifier job's events decided `superseded` / `expired`, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "parcel_notification_events":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("decision") in ("superseded", "expired"):
                    out[sample.labels["decision"]] += sample.value
    return dict(out)


# A main-job group further behind than this when the demo starts holds records of earlier runs
# (benchmarks and tests write to the same topics on a developer's machine): the demo skips them.
STALE_BACKLOG = 20_000


def skip_stale_backlogs(settings: Settings, echo: Callable[[str], None], limit: int = STALE_BACKLOG,
                        topologies: tuple[tuple[str, Path], ...] | None = None) -> None:
    """Before the demo's jobs start: a job that is not running and whose consumer group is more than
    `limit` records behind on its input topic starts at the end instead. Without this, a `make run`
    after `make bench` first works through hundreds of thousands of benchmark scans (and the
    notifier messages the benchmark's recipients) before it reaches the demo's own day."""
    from topologies.lag import commit_end_offsets
    from topologies.lint import load_topology

    for name, topology in topologies or (("scan-pipeline", PIPELINE), *((n, t) for n, t, _ in JOBS)):
        if jobs.job(settings, name, 0).running:
            continue
        spec = load_topology(topology)
        group, topic = spec.app.consumer_group, spec.input.topic
        behind = group_lag(settings.kafka.bootstrap_servers, group, topic)
        if behind > limit:
            # A job stopped a moment ago is still a (static) member until its session times out;
            # the group only takes offsets from outside once it is empty.
            deadline = time.monotonic() + spec.app.session_timeout_ms / 1000 + 15
            while True:
                try:
                    commit_end_offsets(settings.kafka.bootstrap_servers, group, topic)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
            echo(f"{name}: group {group} was {behind:,} records behind on {topic} (earlier runs' records, e.g. "
                 f"a benchmark); the demo starts it at the end of the topic")


def run_demo(settings: Settings, shipments: int, seed: int | None, echo: Callable[[str], None]) -> None:
    port = settings.metrics.port
    skip_stale_backlogs(settings, echo)
    job = jobs.start(settings, "scan-pipeline", PIPELINE, port)
    echo(f"scan-pipeline job running (pid {job.pid}), log {job.log}")
    # Customers' messages go to a local provider sandbox (Twilio API, SMTP, push), not the internet.
    outbox = Path(settings.stack.dir) / "sandbox" / "messages.jsonl"
    box = jobs.start_command(settings, "provider-sandbox", ["-m", "notifier.sandbox", "--out", str(outbox)])
    echo(f"provider sandbox running (pid {box.pid}): messages to {outbox}")
    os.environ["PARCEL_PUSH_BASE"] = sandbox.push_base()  # the simulated recipients' app endpoints
    # The sandbox is no long code: no one-SMS-a-second limit for the demo's day of messages.
    notifier_env = {**sandbox.sandbox_env(), "PARCEL_NOTIFIER__PUBLIC_BASE_URL": _api_url(settings),
                    "PARCEL_NOTIFIER__RATE_LIMITS": json.dumps({c: "200/second" for c in ("sms", "email", "push")})}
    for name, topology, offset in JOBS:
        other = jobs.start(settings, name, topology, port + offset,
                           env=notifier_env if name == "notifier" else None)
        echo(f"{name} job running (pid {other.pid}), metrics on :{port + offset}, log {other.log}")
    seed = random.randrange(1 << 30) if seed is None else seed
    # the day is cut 8 hours before now: some parcels are still on their way, with a live ETA
    end = datetime.now(UTC)
    day = plan_day(shipments, seed=seed, end=end, until=end - timedelta(hours=8))
    echo(f"simulated day (seed {seed}): {len(day.shipments)} shipments, {len(day.messages)} scan messages "
         f"{dict(day.kinds)}")
    run_day(settings, day, progress=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        lag = committed_lag(settings)
        if lag == 0:
            break
        time.sleep(2)
    echo(f"pipeline caught up in {time.monotonic() - t0:.0f} s")

    ids = [s.shipment_id for s in day.shipments]
    with psycopg.connect(settings.postgres.dsn) as conn:
        statuses = Counter(dict(conn.execute(
            "SELECT status::text, count(*) FROM shipments WHERE shipment_id = ANY(%s::uuid[]) GROUP BY 1",
            (ids,)).fetchall()))
        sample = conn.execute(
            "SELECT shipment_id, tracking_number, status::text, eta, eta_source, attempt_count FROM shipments "
            "WHERE shipment_id = ANY(%s::uuid[]) AND status NOT IN ('DELIVERED', 'RETURN_TO_SENDER') "
            "AND eta IS NOT NULL ORDER BY last_event_at DESC LIMIT 1", (ids,)).fetchone()
        returns = conn.execute("SELECT count(*) FROM shipments WHERE return_of = ANY(%s::uuid[])", (ids,)).fetchone()
    expected = Counter(o.status.value for o in day.expected.values() if o.status is not None)
    echo("final statuses (PostgreSQL): " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    echo("expected by the simulator:   " + ", ".join(f"{k} {v}" for k, v in sorted(expected.items())))
    echo(f"linked return shipments: {returns[0]}; rejected to scan-events-dlq: {dict(day.reasons)}")
    if sample is not None:
        sid, tn, status, eta, source, attempts = sample
        echo(f"\nsample tracking number {tn}: {status}, attempts {attempts}, ETA {eta} ({source})")
        cluster, session = cassandra_session(settings, settings.cassandra.keyspace)
        try:
            for row in session.execute("SELECT created_at, event_type, status, facility_id, reason_code "
                                       "FROM tracking_events WHERE shipment_id=%s", (sid,)):
                echo(f"  {row.created_at:%Y-%m-%d %H:%M}  {row.event_type:<18} {row.status:<18} "
                     f"{row.facility_id or ''} {row.reason_code or ''}")
        finally:
            cluster.shutdown()
    _report_messages(settings, outbox, echo)
    echo(f"\nmetrics:  http://127.0.0.1:{port}/metrics   (parcel_step_records_total, parcel_dead_letters_total, ...)")
    echo("topology: .venv/bin/parcel describe topologies/scan_pipeline.yaml")

    from simulator.driver import live_demo

    echo("\nlast mile: a new parcel goes out for delivery and a simulated driver drives to it")
    page = live_demo(settings, echo)
    echo(f"\nopen the tracking page: {page}")
    echo("stop:     make down")
