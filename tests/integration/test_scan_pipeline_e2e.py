"""The scan pipeline end to end on the real Kafka, Cassandra and PostgreSQL: a simulated day in,
exact Cassandra rows, PostgreSQL statuses, notifications and dead-letter reasons out — and the same
after a kill -9 in the middle of a run."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from models.domain import Status
from simulator.day import SimDay
from simulator.live import plan_day, run_day
from tests.integration.pipeline import (
    PipelineProcess,
    group_lag,
    high_watermarks,
    read_topic,
    returns_of,
    shipment_rows,
    start_group_at_end,
    tracking_events,
    wait_for,
)

TERMINAL = {Status.DELIVERED.value, Status.RETURN_TO_SENDER.value}


@pytest.fixture(scope="module")
def group(stack: Settings) -> str:
    name = f"test-scan-pipeline-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, name)
    return name


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def _mismatches(stack: Settings, day: SimDay) -> dict[str, tuple[object, object]]:
    rows = shipment_rows(stack, day.expected)
    out = {}
    for sid, exp in day.expected.items():
        got = (rows[sid]["status"], rows[sid]["attempt_count"]) if sid in rows else None
        if got != (exp.status.value, exp.attempt_count):
            out[sid] = (got, (exp.status.value, exp.attempt_count))
    return out


def _settled(stack: Settings, day: SimDay) -> bool:
    left = _mismatches(stack, day)
    if left:
        print(f"{len(left)} shipments not settled, e.g. {list(left.items())[:3]}")
    return not left


def _assert_day(stack: Settings, day: SimDay, scan_start: dict[int, int], notif_start: dict[int, int],
                dlq_start: dict[int, int], group_lag_now=lambda: None) -> None:
    ids = set(day.expected)
    # PostgreSQL: every shipment at its expected status and attempt count, with an ETA and its source
    rows = shipment_rows(stack, ids)
    for sid, exp in day.expected.items():
        row = rows[sid]
        assert (row["status"], row["attempt_count"]) == (exp.status.value, exp.attempt_count), sid
        assert row["eta_source"] in ("model", "rule") or row["status"] in TERMINAL, row
        if row["status"] not in TERMINAL:
            assert row["eta"] is not None and row["eta_interval"] is not None, row

    # Returns: every RETURN_TO_SENDER shipment has exactly one linked return shipment
    returned = {sid for sid, exp in day.expected.items() if exp.status is Status.RETURN_TO_SENDER}
    links = returns_of(stack, returned)
    assert set(links) == returned
    assert all(link["status"] == "LABEL_CREATED" and link["tracking_number"].startswith("RT")
               for link in links.values())

    # Cassandra: one row per accepted scan (+ the label, + the pipeline's own RETURN_TO_SENDER event)
    events = tracking_events(stack, ids)
    for sid, n_accepted in day.accepted_counts.items():
        got = events[sid]
        auto_return = 1 if sid in returned else 0
        if len(got) != n_accepted + 1 + auto_return:
            time.sleep(10)
            again = len(tracking_events(stack, [sid])[sid])
            raise AssertionError(f"{sid}: {len(got)} tracking events, expected {n_accepted + 1 + auto_return}; "
                                 f"10 s later {again}; PostgreSQL row {rows[sid]}")
        assert len({e.event_id for e in got}) == len(got)
        assert [e.created_at for e in got] == sorted(e.created_at for e in got)
        # Absent values are written unset (no tombstone) and read back as null.
        assert got[0].event_type == "LABEL_CREATED" and got[0].previous_status is None
        for e in got:
            if e.event_type in ("PICKUP", "ARRIVAL", "DEPARTURE", "DELIVERED"):
                assert e.reason_code is None, e
            if e.event_type in ("EXCEPTION", "DELIVERY_ATTEMPTED", "RETURN_TO_SENDER"):
                assert e.reason_code is not None, e

    # notifications: exactly one per accepted scan, each for a persisted TrackingEvent
    notes = [v for _, v in read_topic(stack, "notifications", notif_start)
             if isinstance(v, dict) and v.get("shipment_id") in ids]
    per_event = Counter(n["event_id"] for n in notes)
    assert per_event and max(per_event.values()) == 1, per_event.most_common(3)
    stored = {str(e.event_id) for evs in events.values() for e in evs}
    assert set(per_event) <= stored
    per_shipment = Counter(n["shipment_id"] for n in notes)
    for sid, n_accepted in day.accepted_counts.items():
        assert per_shipment[sid] == n_accepted + 1, (sid, per_shipment[sid], n_accepted)
    for n in notes:
        if n["status"] == Status.RETURN_TO_SENDER.value:
            assert n["return_shipment"]["tracking_number"] == links[n["shipment_id"]]["tracking_number"]

    # dead letters: exactly the expected reasons, each with its source offset
    def ours() -> list[dict]:
        out = []
        for _, v in read_topic(stack, "scan-events-dlq", dlq_start):
            src = v.get("source") if isinstance(v, dict) else None
            if src and src["topic"] == "scan-events" and src["offset"] >= scan_start.get(src["partition"], 0):
                out.append(v)
        return out

    dead = ours()
    if Counter(d["reason"] for d in dead) != Counter(day.reasons):
        time.sleep(15)
        later = ours()
        raise AssertionError(f"dead letters {Counter(d['reason'] for d in dead)} != expected {Counter(day.reasons)}; "
                             f"15 s later: {Counter(d['reason'] for d in later)}, lag now {group_lag_now()}; "
                             f"{len(later)} dead letters")
    assert all(d["topology"] == "scan-pipeline" and d["step"] in ("validate", "transition") for d in dead)


def test_simulated_day_end_to_end(stack: Settings, group: str, state_dir: Path, tmp_path: Path) -> None:
    day = plan_day(80, seed=11, duplicate_share=0.03, invalid_transition_share=0.03, malformed_share=0.04,
                   exception_share=0.15, failed_attempt_share=0.3, return_share=0.1)
    assert day.reasons and day.kinds.get("duplicate") and any(
        o.status is Status.RETURN_TO_SENDER for o in day.expected.values())
    marks = {t: high_watermarks(stack, t) for t in ("scan-events", "notifications", "scan-events-dlq")}
    job = PipelineProcess(group, state_dir, tmp_path / "pipeline.log").start()
    try:
        run_day(stack, day, progress=False)
        wait_for(lambda: _settled(stack, day), 240, "every shipment at its expected status", job)
        wait_for(lambda: group_lag(stack, group) == 0, 120, "the job to commit its whole input", job)
        _assert_day(stack, day, marks["scan-events"], marks["notifications"], marks["scan-events-dlq"],
                    lambda: group_lag(stack, group))
    finally:
        job.stop()


def test_kill_9_mid_run_loses_nothing_and_stores_nothing_twice(
        stack: Settings, group: str, state_dir: Path, tmp_path: Path) -> None:
    day = plan_day(1000, seed=23, duplicate_share=0.02, invalid_transition_share=0.02, malformed_share=0.02,
                   failed_attempt_share=0.2, return_share=0.05)
    marks = {t: high_watermarks(stack, t) for t in ("scan-events", "notifications", "scan-events-dlq")}
    log = tmp_path / "pipeline.log"
    # The whole day waits on scan-events first, so the kill lands part-way through its drain
    # however fast the job is.
    run_day(stack, day, progress=False)
    ids = list(day.expected)
    job = PipelineProcess(group, state_dir, log).start()
    try:
        def some_progress() -> bool:
            rows = shipment_rows(stack, ids)
            moved = sum(r["status"] != "LABEL_CREATED" for r in rows.values())
            return 0 < moved < len(ids) * 0.7 or moved == len(ids)

        wait_for(some_progress, 180, "the job to be part-way through the day", job, interval=0.2)
        moved_before = sum(r["status"] != "LABEL_CREATED" for r in shipment_rows(stack, ids).values())
        job.kill9()  # no shutdown hook, no final commit
        job = PipelineProcess(group, state_dir, log).start()
        wait_for(lambda: _settled(stack, day), 300, "every shipment at its expected status after restart", job)
        wait_for(lambda: group_lag(stack, group) == 0, 120, "the job to commit its whole input", job)
        assert moved_before < len(ids), "the kill came after the whole day was processed; make the day longer"
        _assert_day(stack, day, marks["scan-events"], marks["notifications"], marks["scan-events-dlq"],
                    lambda: group_lag(stack, group))
    finally:
        job.stop()


def test_two_processes_of_one_file_share_the_work(stack: Settings, tmp_path: Path) -> None:
    name = f"test-scan-pipeline-pair-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, name)
    day = plan_day(120, seed=5, duplicate_share=0.02, invalid_transition_share=0.02, malformed_share=0.02,
                   failed_attempt_share=0.2, return_share=0.05)
    marks = {t: high_watermarks(stack, t) for t in ("scan-events", "notifications", "scan-events-dlq")}
    jobs = [PipelineProcess(name, tmp_path / f"state{i}", tmp_path / f"pipeline{i}.log", instance_id=str(i)).start()
            for i in (1, 2)]
    try:
        run_day(stack, day, progress=False)
        wait_for(lambda: _settled(stack, day), 240, "every shipment at its expected status", jobs[0])
        wait_for(lambda: group_lag(stack, name) == 0, 120, "the pair to commit its whole input", jobs[1])
        for job in jobs:
            job.assert_alive()
            # each process really worked: both wrote dead letters or accepted scans in their log
            assert "The application started" in job.log.read_text()
        _assert_day(stack, day, marks["scan-events"], marks["notifications"], marks["scan-events-dlq"],
                    lambda: group_lag(stack, name))
        assigned = [job.log.read_text().count("dead letter") for job in jobs]
        assert all(n > 0 for n in assigned), f"one process got no partition: dead letters per process {assigned}"
    finally:
        for job in jobs:
            job.stop()
