"""`parcel demo` on a machine where benchmarks left records on the main job's topics: a group far
behind starts at the end of its topic (with a message); a group within the limit is left alone."""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka import Producer

from config.settings import ROOT, Settings
from simulator.demo import skip_stale_backlogs
from sinks.stores import kafka_producer_config
from tests.integration.pipeline import start_group_at_end
from topologies.lag import group_lag


def _copy(tmp_path: Path, group: str) -> Path:
    text = (ROOT / "topologies" / "scan_pipeline.yaml").read_text()
    path = tmp_path / f"{group}.yaml"
    path.write_text(text.replace("consumer_group: scan-pipeline", f"consumer_group: {group}"))
    return path


def test_a_group_far_behind_starts_at_the_end_and_one_close_behind_is_left(stack: Settings, tmp_path: Path) -> None:
    far, near = f"test-demo-far-{uuid.uuid4().hex[:6]}", f"test-demo-near-{uuid.uuid4().hex[:6]}"
    for g in (far, near):
        start_group_at_end(stack, g, "scan-events")
    p = Producer(kafka_producer_config(stack.kafka.bootstrap_servers))
    for _ in range(30):
        p.produce("scan-events", key=str(uuid.uuid4()).encode(), value=b"{}")  # garbage: no pipeline reads these
    assert p.flush(30) == 0
    assert group_lag(stack.kafka.bootstrap_servers, far, "scan-events") == 30
    said: list[str] = []
    skip_stale_backlogs(stack, said.append, limit=20, topologies=(("far", _copy(tmp_path, far)),))
    skip_stale_backlogs(stack, said.append, limit=40, topologies=(("near", _copy(tmp_path, near)),))
    assert group_lag(stack.kafka.bootstrap_servers, far, "scan-events") == 0
    assert group_lag(stack.kafka.bootstrap_servers, near, "scan-events") == 30
    assert len(said) == 1 and far in said[0] and "30 records behind" in said[0]
