"""The four real servers as the project starts them: Kafka, Cassandra, PostgreSQL, Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from config.settings import Settings, SettingsError, check_all_reachable, load_settings
from sinks.stores import kafka_producer_config
from stack import migrations
from tests.integration.pipeline import throwaway_topic

ROOT = Path(__file__).resolve().parents[2]


def test_contract_topics_exist_with_configured_partitions(stack: Settings) -> None:
    meta = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers}).list_topics(timeout=10)
    for name in ("scan-events", "notifications", "scan-events-dlq", "driver-locations"):
        assert name in meta.topics, name
        assert len(meta.topics[name].partitions) == stack.kafka.partitions


def test_scan_events_keep_per_key_order(stack: Settings) -> None:
    topic = stack.kafka.topics["scan_events"]
    probe = Consumer({"bootstrap.servers": stack.kafka.bootstrap_servers, "group.id": f"wm-{uuid.uuid4()}"})
    parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
    start = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    probe.close()
    producer = Producer(kafka_producer_config(stack.kafka.bootstrap_servers, {"enable.idempotence": True}))
    keys = [str(uuid.uuid4()) for _ in range(5)]
    run = uuid.uuid4().hex
    for seq in range(20):
        for key in keys:
            producer.produce(topic, key=key, value=json.dumps({"run": run, "seq": seq}).encode())
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap_servers, "group.id": f"t-{run}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, start[p]) for p in parts])
    seen: dict[str, list[int]] = {k: [] for k in keys}
    partition_of: dict[str, set[int]] = {k: set() for k in keys}
    deadline = time.monotonic() + 60
    while sum(map(len, seen.values())) < 100 and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        try:
            body = json.loads(msg.value())
        except ValueError:
            continue  # someone else's (possibly garbage) scan
        if isinstance(body, dict) and body.get("run") == run:
            key = msg.key().decode()
            seen[key].append(body["seq"])
            partition_of[key].add(msg.partition())
    consumer.close()
    for key in keys:
        assert seen[key] == list(range(20)), key
        assert len(partition_of[key]) == 1  # one key, one partition: the order that matters


def test_tracking_events_partition_reads_in_scan_order(stack: Settings) -> None:
    cluster, session = migrations.cassandra_session(stack, stack.cassandra.keyspace)
    try:
        sid = uuid.uuid4()
        t0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
        insert = session.prepare(
            "INSERT INTO tracking_events (shipment_id, created_at, event_id, event_type, status) VALUES (?,?,?,?,?)")
        times = [t0 + timedelta(hours=h) for h in (5, 1, 3, 0, 4, 2)]  # written out of order
        for i, t in enumerate(times):
            session.execute(insert, (sid, t, uuid.uuid4(), "ARRIVAL", f"S{i}"))
        # a replay of the same (created_at, event_id) rewrites the row instead of adding one
        eid = uuid.uuid4()
        session.execute(insert, (sid, t0 + timedelta(hours=6), eid, "DELIVERED", "first"))
        session.execute(insert, (sid, t0 + timedelta(hours=6), eid, "DELIVERED", "replay"))
        rows = list(session.execute("SELECT created_at, status FROM tracking_events WHERE shipment_id=%s", (sid,)))
        assert [r.created_at for r in rows] == sorted(r.created_at for r in rows)
        assert len(rows) == 7
        assert rows[-1].status == "replay"
    finally:
        cluster.shutdown()


HEAD = "0008"  # the newest revision under stack/alembic/versions/


def test_postgres_migrations_up_down_up(stack: Settings) -> None:
    """On a scratch database, so the suite's own data is untouched."""
    db = f"migtest_{uuid.uuid4().hex[:8]}"
    host, port = stack.postgres.host_port
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        scratch = load_settings(postgres={"dsn": f"postgresql://tracking@{host}:{port}/{db}"})
        assert migrations.migrate_postgres(scratch) == HEAD
        assert migrations.migrate_postgres(scratch) == HEAD  # idempotent
        with psycopg.connect(scratch.postgres.dsn) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
            assert {"shipments", "facilities", "recipients", "reschedule_requests", "delivered_notifications",
                    "notification_outbox", "exception_events", "routes", "route_stops"} <= tables
            enums = {r[0] for r in conn.execute("SELECT typname FROM pg_type WHERE typtype='e'")}
            assert {"shipment_status", "service_level", "facility_type"} <= enums
        assert migrations.migrate_postgres(scratch, "base") is None
        with psycopg.connect(scratch.postgres.dsn) as conn:
            assert conn.execute("SELECT to_regclass('public.shipments')").fetchone()[0] is None
            assert not conn.execute("SELECT 1 FROM pg_type WHERE typname='shipment_status'").fetchone()
        assert migrations.migrate_postgres(scratch) == HEAD
        with psycopg.connect(scratch.postgres.dsn, autocommit=True) as conn:  # 0008's state, which 0007 lacks
            conn.execute("INSERT INTO notification_outbox (notification_id, shipment_id, event_type, rule_id, "
                         "template, audience, channel, address, language, body, state, last_error) VALUES "
                         "('n1', gen_random_uuid(), 'OUT_FOR_DELIVERY', 'out_for_delivery', 'out_for_delivery', "
                         "'recipient', 'sms', '+15550000000', 'en', 'b', 'skipped', 'superseded: x')")
        assert migrations.migrate_postgres(scratch, "-1") == "0007"
        with psycopg.connect(scratch.postgres.dsn) as conn:  # a skipped message is dead before 0008
            assert conn.execute("SELECT state, last_error FROM notification_outbox").fetchall() == [
                ("dead", "skipped: superseded: x")]
            conn.execute("DELETE FROM notification_outbox")
            conn.commit()
        assert migrations.migrate_postgres(scratch, "-6") == "0001"  # the newer downgrades run too
        assert migrations.migrate_postgres(scratch) == HEAD
        with psycopg.connect(scratch.postgres.dsn) as conn:
            # 0007 builds its indexes CONCURRENTLY (outside a transaction): a failed build would
            # leave an invalid index behind.
            invalid = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
            assert invalid == []
            # 0008 validates its constraint after the swap: a NOT VALID one would not check old rows
            assert conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'outbox_state'").fetchone() == (
                True,)
            names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'shipments'")}
            assert "shipments_fresh_labels_idx" in names and "shipments_status_idx" not in names
    finally:
        with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


def test_postgres_commits_are_durable(stack: Settings) -> None:
    # The scan pipeline commits its Kafka offsets once PostgreSQL's COMMIT has returned: that
    # commit must be on disk, or a PostgreSQL crash would lose writes the stream has moved past.
    with psycopg.connect(stack.postgres.dsn) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)


def test_cassandra_migrations_are_recorded_and_idempotent(stack: Settings) -> None:
    assert migrations.migrate_cassandra(stack) == []
    cluster, session = migrations.cassandra_session(stack, stack.cassandra.keyspace)
    try:
        versions = {r.version for r in session.execute("SELECT version FROM schema_migrations")}
        assert versions == {v for v, _ in migrations.cql_files()}
    finally:
        cluster.shutdown()


def test_redis_geo_with_ttl(stack: Settings) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    key = f"fleet:test:{uuid.uuid4().hex}"
    r.geoadd(key, (-122.3321, 47.6062, "driver-1"))   # Seattle
    r.geoadd(key, (-122.2015, 47.6101, "driver-2"))   # Bellevue
    r.expire(key, 1)
    (lng, lat), = r.geopos(key, "driver-1")
    assert abs(lng + 122.3321) < 1e-4 and abs(lat - 47.6062) < 1e-4
    dist = r.geodist(key, "driver-1", "driver-2", unit="km")
    assert 9 < dist < 11
    near = r.geosearch(key, longitude=-122.33, latitude=47.60, radius=2, unit="km")
    assert near == [b"driver-1"]
    time.sleep(1.5)
    assert r.exists(key) == 0  # a silent fleet vanishes


def test_facilities_seeded(stack: Settings) -> None:
    with psycopg.connect(stack.postgres.dsn) as conn:
        counts = dict(conn.execute("SELECT type::text, count(*) FROM facilities GROUP BY type").fetchall())
    assert set(counts) == {"origin", "hub", "sort_center", "delivery_station"}
    assert sum(counts.values()) >= 200


def test_wrong_address_names_the_setting() -> None:
    bad = load_settings(redis={"url": "redis://127.0.0.1:1/0"})
    with pytest.raises(SettingsError, match=r"redis\.url: cannot reach 127\.0\.0\.1:1"):
        check_all_reachable(bad)
    with pytest.raises(SettingsError, match=r"kafka\.bootstrap_servers"):
        load_settings(kafka={"bootstrap_servers": "no-port-here"})


def test_cli_reports_wrong_address_without_traceback() -> None:
    res = subprocess.run([sys.executable, "cli.py", "check"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PARCEL_POSTGRES__DSN": "postgresql://x@127.0.0.1:1/x"})
    assert res.returncode == 1
    assert "postgres.dsn: cannot reach 127.0.0.1:1" in res.stderr
    assert "Traceback" not in res.stderr


def test_up_twice_starts_nothing_twice(stack: Settings) -> None:
    res = subprocess.run([sys.executable, "cli.py", "up"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for name in ("postgres", "redis", "kafka", "cassandra"):
        assert f"{name}" in res.stdout
    assert res.stdout.count("already running") == 4, res.stdout


def test_drop_groups_deletes_only_the_named_groups_changelogs_and_offsets(stack: Settings) -> None:
    from confluent_kafka.admin import NewTopic

    from stack.servers import drop_groups

    bootstrap = stack.kafka.bootstrap_servers
    gone, kept = (f"test-drop-{k}-{uuid.uuid4().hex[:8]}" for k in ("gone", "kept"))
    topics = [f"changelog__{gone}--scan-events--default", f"changelog__{kept}--scan-events--default"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics]).values():
        fut.result(timeout=30)
    for group in (gone, kept):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(stack.kafka.topics["scan_events"], 0, 0)], asynchronous=False)
        c.close()
    try:
        assert drop_groups(bootstrap, [gone]) == [topics[0]]
        deadline = time.monotonic() + 30
        while topics[0] in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
            time.sleep(0.2)
        names = set(admin.list_topics(timeout=10).topics)
        assert topics[0] not in names and topics[1] in names
        listed = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert gone not in listed and kept in listed
    finally:
        drop_groups(bootstrap, [kept])


def test_local_broker_retention_is_bounded_by_size_not_time(stack: Settings) -> None:
    """Records of any age are kept (simulated days carry past timestamps), but each partition only
    up to 512 MiB: benchmarks and test runs must not fill the disk."""
    from confluent_kafka.admin import ConfigResource

    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    conf = admin.describe_configs([res])[res].result(timeout=30)
    assert conf["log.retention.ms"].value == "-1"
    assert conf["log.retention.bytes"].value == str(512 * 1024 * 1024)
    assert conf["log.segment.bytes"].value == str(128 * 1024 * 1024)


def test_project_producers_place_keys_as_the_jobs_producers_do(stack: Settings) -> None:
    """Scans produced by the simulator, the API or `label create` land on the partition number the
    jobs' quixstreams producers write that shipment's events to (co-partitioned topics)."""
    from quixstreams.kafka import Producer as JobProducer

    bootstrap = stack.kafka.bootstrap_servers
    keys = [str(uuid.uuid4()) for _ in range(64)]
    placed: dict[str, dict[str, int]] = {"project": {}, "job": {}}

    def report(who: str) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[who][msg.key().decode()] = msg.partition()
        return on_delivery

    with throwaway_topic(stack, stack.kafka.partitions, "test-partitioner") as topic:
        ours = Producer(kafka_producer_config(bootstrap))
        job = JobProducer(broker_address=bootstrap)
        for key in keys:
            ours.produce(topic, key=key.encode(), value=b"{}", on_delivery=report("project"))
            job.produce(topic, key=key.encode(), value=b"{}", on_delivery=report("job"))
        assert ours.flush(30) == 0
        job.flush(30)
        assert len(placed["project"]) == len(placed["job"]) == len(keys)
        assert placed["project"] == placed["job"]
        assert len(set(placed["job"].values())) > 1  # keys spread: the check compares real placements


def test_cassandra_threads_sleep_with_the_configured_timer_slack(stack: Settings) -> None:
    """`parcel up` starts Cassandra with a coarser timer slack (stack.cassandra_timer_slack_us),
    inherited by every thread the JVM creates, its request-pool workers included: their idle
    sleep-spinning wakes the machine ~10 times less often (docs/bench/pipeline.md, session 8)."""
    from stack.servers import status

    pid = next(s.pid for s in status(stack) if s.name == "cassandra")
    assert pid is not None, "no Cassandra pid file: was the stack started by `parcel up`?"
    want = stack.stack.cassandra_timer_slack_us * 1000
    assert want > 50_000  # the kernel's default: the setting must differ from it to be seen
    threads = {}
    for tid in Path(f"/proc/{pid}/task").iterdir():
        try:
            threads[(tid / "comm").read_text().strip()] = int(Path(f"/proc/{tid.name}/timerslack_ns").read_text())
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    # comm is cut at 15 characters: "Native-Transport-Requests-3" reads "Native-Transpor"
    assert any(name.startswith(("SharedPool", "Native-Transpor", "MutationStage")) for name in threads), threads
    wrong = {name: ns for name, ns in threads.items() if ns != want}
    assert not wrong, f"threads without timer slack {want} ns: {wrong}"
