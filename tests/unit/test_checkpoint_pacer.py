"""The checkpoint pacer: the next checkpoint's interval follows the input rate (frozen clock)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from operators.metrics import PipelineMetrics
from topologies.build import CheckpointPacer


@dataclass
class Context:  # the one field of quixstreams' ProcessingContext the pacer sets
    commit_interval: float


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def commit_after(pacer: CheckpointPacer, clock: Clock, seconds: float, records: int) -> float:
    pacer.records += records
    clock.t += seconds
    pacer.flush()
    return pacer.interval


@pytest.fixture
def setup() -> tuple[CheckpointPacer, Context, Clock]:
    ctx, clock = Context(0.1), Clock()
    return CheckpointPacer(ctx, 0.1, 0.25, 1200.0, clock=clock), ctx, clock


def test_quiet_input_keeps_the_short_interval(setup: tuple[CheckpointPacer, Context, Clock]) -> None:
    pacer, ctx, clock = setup
    assert commit_after(pacer, clock, 0.1, 100) == 0.1  # 1,000 records/s: below busy_rate
    assert ctx.commit_interval == 0.1
    assert commit_after(pacer, clock, 0.1, 120) == 0.1  # exactly busy_rate


def test_interval_grows_with_the_rate_up_to_the_cap(setup: tuple[CheckpointPacer, Context, Clock]) -> None:
    pacer, ctx, clock = setup
    assert commit_after(pacer, clock, 0.1, 240) == pytest.approx(0.2)  # 2,400/s: twice busy_rate
    assert ctx.commit_interval == pytest.approx(0.2)
    assert commit_after(pacer, clock, 0.2, 1000) == 0.25  # 5,000/s: capped
    assert ctx.commit_interval == 0.25


def test_after_an_idle_spell_the_short_interval_returns(setup: tuple[CheckpointPacer, Context, Clock]) -> None:
    pacer, ctx, clock = setup
    assert commit_after(pacer, clock, 0.25, 1000) == 0.25
    assert commit_after(pacer, clock, 30.0, 3) == 0.1  # one scan after half a minute of silence
    assert ctx.commit_interval == 0.1


def test_records_are_counted_per_checkpoint(setup: tuple[CheckpointPacer, Context, Clock]) -> None:
    pacer, _, clock = setup
    commit_after(pacer, clock, 0.1, 500)
    assert pacer.records == 0
    assert commit_after(pacer, clock, 0.1, 0) == 0.1  # nothing since the last commit


def test_the_interval_is_exported_as_a_gauge() -> None:
    reg = CollectorRegistry()
    metrics = PipelineMetrics(reg, "t")
    ctx, clock = Context(0.1), Clock()
    pacer = CheckpointPacer(ctx, 0.1, 0.25, 1200.0, metrics.checkpoint_interval.labels(topology="t"), clock=clock)
    assert reg.get_sample_value("parcel_checkpoint_interval_seconds", {"topology": "t"}) == 0.1
    commit_after(pacer, clock, 0.1, 180)
    assert reg.get_sample_value("parcel_checkpoint_interval_seconds", {"topology": "t"}) == pytest.approx(0.15)
