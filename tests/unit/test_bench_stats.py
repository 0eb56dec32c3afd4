"""The benchmark's pure helpers: nearest-rank percentiles and drain rates from offset samples."""

from __future__ import annotations

import pytest

from bench.stats import (
    LatencySummary,
    Sample,
    checkpoints,
    drain_rate,
    percentile,
    progress,
    split_rate,
    window_rates,
)


def test_percentile_nearest_rank() -> None:
    xs = list(range(1, 101))  # 1..100
    assert percentile(xs, 50) == 50
    assert percentile(xs, 99) == 99
    assert percentile(xs, 100) == 100
    assert percentile(xs, 0) == 1
    assert percentile([5.0], 99) == 5.0
    assert percentile([3, 1, 2], 50) == 2  # unsorted input


def test_percentile_never_interpolates() -> None:
    assert percentile([0.1, 10.0], 50) == 0.1
    assert percentile([0.1, 10.0], 51) == 10.0


@pytest.mark.parametrize("bad", [-1, 101])
def test_percentile_rejects_bad_q(bad: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], bad)


def test_percentile_of_nothing() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_summary() -> None:
    s = LatencySummary.of([0.3, 0.1, 0.2, 0.4])
    assert (s.n, s.p50, s.p99, s.max) == (4, 0.2, 0.4, 0.4)
    assert s.mean == pytest.approx(0.25)


START = {0: 100, 1: 200}
END = {0: 150, 1: 250}


def test_progress_clamps_to_the_backlog() -> None:
    assert progress({0: -1001, 1: 200}, START, END) == 0  # no commit yet
    assert progress({0: 120, 1: 230}, START, END) == 50
    assert progress({0: 170, 1: 260}, START, END) == 100  # later records are not ours


def test_drain_rate_excludes_start_up() -> None:
    samples = [
        Sample(0.0, {0: -1001, 1: -1001}),  # start-up: nothing committed
        Sample(5.0, {0: 110, 1: 210}),  # first checkpoint: 20 records
        Sample(6.0, {0: 130, 1: 230}),
        Sample(7.0, {0: 150, 1: 250}),  # all 100 committed
        Sample(8.0, {0: 150, 1: 250}),
    ]
    d = drain_rate(samples, START, END)
    assert d.drained and d.records == 80 and d.seconds == 2.0 and d.rate == 40.0
    assert (d.first_progress_t, d.end_t) == (5.0, 7.0)


def test_drain_rate_cut_before_the_end() -> None:
    samples = [Sample(1.0, {0: 110, 1: 200}), Sample(3.0, {0: 120, 1: 210})]
    d = drain_rate(samples, START, END)
    assert not d.drained and d.rate == 10.0


def test_drain_rate_without_progress() -> None:
    d = drain_rate([Sample(0.0, {}), Sample(1.0, {})], START, END)
    assert d.rate == 0.0 and d.first_progress_t is None


def test_window_rates() -> None:
    samples = [Sample(float(t), {0: 100 + 5 * t, 1: 200 + 5 * t}) for t in range(11)]
    assert window_rates(samples, START, END, 2.0) == [10.0] * 4


def test_split_rate_interpolates_the_boundary() -> None:
    # 100 records: 10/s until 40 committed (t=4), then 30/s
    samples = [Sample(0.0, {0: 100, 1: 200})]
    samples += [Sample(float(t), {0: 100 + 5 * t, 1: 200 + 5 * t}) for t in range(1, 5)]  # 40 at t=4
    samples += [Sample(6.0, {0: 150, 1: 230}), Sample(7.0, {0: 150, 1: 250})]  # +40 by t=6, +20 by t=7
    before, after = split_rate(samples, START, END, 40)
    assert before == pytest.approx(10.0)  # (40 - 10) / (4 - 1)
    assert after == pytest.approx(20.0)  # 60 / 3


def test_split_rate_without_a_drain() -> None:
    assert split_rate([Sample(0.0, {0: 110, 1: 200})], START, END, 40) == (None, None)


def test_checkpoints_median_gap_and_size() -> None:
    tots = [0, 0, 10, 10, 30, 30, 50, 50, 80]
    samples = [Sample(t * 0.5, {0: n}) for t, n in enumerate(tots)]
    gap, size = checkpoints(samples)
    assert gap == 1.0 and size == 20.0
