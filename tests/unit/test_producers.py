"""Every Kafka producer of the project is configured by `sinks.stores.kafka_producer_config`, so all
of them share the jobs' partitioner (a key lands on one partition number whoever produced it)."""

from __future__ import annotations

import re
from pathlib import Path

from sinks.stores import KAFKA_PARTITIONER, kafka_producer_config

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".stack", "node_modules", ".git"}


def _sources() -> list[Path]:
    this = Path(__file__).resolve()
    return [p for p in ROOT.rglob("*.py") if not SKIP & set(p.relative_to(ROOT).parts) and p != this]


def test_every_confluent_producer_is_built_from_the_shared_config() -> None:
    calls = []
    for path in _sources():
        text = path.read_text()
        for m in re.finditer(r"(?<![\w.])Producer\(", text):
            line = text.count("\n", 0, m.start()) + 1
            calls.append((path.relative_to(ROOT), line, text[m.end():m.end() + 40]))
    assert calls, "no Producer( call found: the scan itself is broken"
    odd = [(str(p), n) for p, n, rest in calls if not rest.startswith("kafka_producer_config(")]
    assert odd == []


def test_shared_config_sets_the_partitioner_and_keeps_the_callers_keys() -> None:
    conf = kafka_producer_config("h:1", {"linger.ms": 5, "enable.idempotence": True})
    assert conf == {"bootstrap.servers": "h:1", "partitioner": KAFKA_PARTITIONER, "linger.ms": 5,
                    "enable.idempotence": True}
    assert KAFKA_PARTITIONER.startswith("murmur2")
