"""The shipment directory on the real PostgreSQL (and Cassandra for the slow path): `load_label`
answers a burst of fresh labels with one read, gives the same snapshot as `load`, never remembers a
row a pipeline checkpoint has touched, and forgets what it remembered after its time to live."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from config.settings import Settings
from sinks.directories import PostgresShipments


@pytest.fixture(autouse=True)
def _cleanup(stack: Settings):  # type: ignore[no-untyped-def]
    yield
    with psycopg.connect(stack.postgres.dsn) as conn:  # this file's labels sit ahead of everyone's: remove them
        conn.execute("DELETE FROM shipments WHERE tracking_number LIKE 'PTDIR%%'")


def _labels(stack: Settings, n: int) -> list[uuid.UUID]:
    """n fresh labels created a microsecond apart, ten years ahead: no other test's (or run's) labels
    fall between them in the fresh-labels index."""
    ids = [uuid.uuid4() for _ in range(n)]
    start = datetime.now(UTC) + timedelta(days=3650)  # later than any label of other tests
    with psycopg.connect(stack.postgres.dsn) as conn:
        for i, sid in enumerate(ids):
            conn.execute("INSERT INTO shipments (shipment_id, tracking_number, service_level, status, created_at, "
                         "weight_grams) VALUES (%s, %s, 'EXPRESS', 'LABEL_CREATED', %s, %s)",
                         (sid, f"PTDIR{uuid.uuid4().hex[:12].upper()}", start + timedelta(microseconds=i), 1000 + i))
    return ids


def test_a_burst_of_labels_is_one_read_with_the_same_answers(stack: Settings) -> None:
    ids = _labels(stack, 30)
    # one of them already had a checkpoint (the pipeline wrote it): never remembered
    touched = ids[20]
    with psycopg.connect(stack.postgres.dsn) as conn:
        conn.execute("UPDATE shipments SET status = 'PICKED_UP', last_event_id = %s, last_event_at = created_at, "
                     "label_fresh = false "  # as the pipeline's UPDATE (sinks/postgres_shipments.py)
                     "WHERE shipment_id = %s", (uuid.uuid4(), touched))
    plain = PostgresShipments(stack)
    burst = PostgresShipments(stack, label_ahead=50)
    answers = [burst.load_label(sid) for sid in ids if sid != touched]
    assert burst.label_reads == {"read": 1, "hit": 28}
    assert answers == [plain.load(sid) for sid in ids if sid != touched]
    assert all(a is not None and a.status.value == "LABEL_CREATED" and a.service_level.value == "EXPRESS"
               for a in answers)
    assert [a.weight_grams for a in answers] == [1000 + i for i, sid in enumerate(ids) if sid != touched]
    # the touched row is read on its own (and rebuilt as the store says, not as a fresh label)
    snap = burst.load_label(touched)
    assert burst.label_reads["read"] == 2 and snap is not None and snap.status.value == "PICKED_UP"
    assert snap == plain.load(touched)
    # an unknown shipment is None, as from `load`
    assert burst.load_label(uuid.uuid4()) is None


def test_remembered_labels_expire_and_the_cache_is_bounded(stack: Settings) -> None:
    ids = _labels(stack, 12)
    expired = PostgresShipments(stack, label_ahead=50, label_ttl_s=0.0)
    assert expired.load_label(ids[0]) is not None
    assert expired.load_label(ids[1]) is not None  # remembered with no time to live: read again
    assert expired.label_reads == {"read": 2, "hit": 0}
    small = PostgresShipments(stack, label_ahead=50, label_cache=3)
    small.load_label(ids[0])
    assert small.load_label(ids[1]) is not None and small.label_reads == {"read": 2, "hit": 0}  # evicted
    assert small.load_label(ids[-1]) is not None and small.label_reads["hit"] == 1  # among the newest kept
