"""Pure helpers of the benchmark: percentiles, latency summaries, drain rates from offset samples.
No clock and no I/O here, so they are unit-tested (tests/unit/test_bench_stats.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """Nearest-rank percentile (q in [0, 100]): the smallest value with at least q% of the values
    at or below it; never interpolated, so p99 is a latency some event really had."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = values if presorted else sorted(values)
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return float(xs[rank - 1])


@dataclass(frozen=True)
class LatencySummary:
    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencySummary:
        xs = sorted(values)
        return cls(n=len(xs), p50=percentile(xs, 50, presorted=True), p90=percentile(xs, 90, presorted=True),
                   p99=percentile(xs, 99, presorted=True), max=float(xs[-1]), mean=sum(xs) / len(xs))


@dataclass(frozen=True)
class Sample:
    """Committed offsets of the measured consumer group at time t (seconds, any monotonic clock)."""

    t: float
    committed: Mapping[int, int]


def progress(committed: Mapping[int, int], start: Mapping[int, int], end: Mapping[int, int]) -> int:
    """Records of [start, end) per partition the group has committed (a missing or negative committed
    offset counts as start)."""
    done = 0
    for p, s in start.items():
        c = committed.get(p, -1)
        c = s if c is None or c < s else min(c, end.get(p, s))
        done += c - s
    return done


def reached(committed: Mapping[int, int], target: Mapping[int, int]) -> bool:
    return all(committed.get(p, -1) >= o for p, o in target.items())


@dataclass(frozen=True)
class Drain:
    records: int  # records of the backlog committed in the window
    seconds: float  # from the first committed progress to the end of the window
    rate: float  # records / seconds: the sustained rate, start-up excluded
    drained: bool  # the whole backlog was committed (else the window ended at a time cap)
    first_progress_t: float | None
    end_t: float | None


def drain_rate(samples: Sequence[Sample], start: Mapping[int, int], end: Mapping[int, int]) -> Drain:
    """Sustained drain rate of the backlog [start, end) from offset samples: from the first sample
    that shows progress (so process start-up, group join and the first checkpoint are not counted)
    to the first sample at which the whole backlog is committed (or the last sample)."""
    first: Sample | None = None
    first_done = 0
    last: Sample | None = None
    last_done = 0
    drained = False
    for s in samples:
        done = progress(s.committed, start, end)
        if first is None:
            if done > 0:
                first, first_done = s, done
            continue
        last, last_done = s, done
        if reached(s.committed, end):
            drained = True
            break
    if first is None or last is None or last.t <= first.t:
        return Drain(0, 0.0, 0.0, drained, first.t if first else None, None)
    secs = last.t - first.t
    return Drain(last_done - first_done, secs, (last_done - first_done) / secs, drained, first.t, last.t)


def window_rates(samples: Sequence[Sample], start: Mapping[int, int], end: Mapping[int, int],
                 window_s: float) -> list[float]:
    """Rates over consecutive windows of about `window_s` between samples that show progress and
    the drain's end (steadiness of the drain: min/median/max of these)."""
    pts = [(s.t, progress(s.committed, start, end)) for s in samples]
    total = sum(end[p] - start[p] for p in start)
    out: list[float] = []
    i = next((k for k, (_, d) in enumerate(pts) if d > 0), None)
    if i is None:
        return out
    t0, d0 = pts[i]
    for t, d in pts[i + 1:]:
        if t - t0 >= window_s:
            out.append((d - d0) / (t - t0))
            t0, d0 = t, d
        if d >= total:
            break
    return out


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}/s"


def split_rate(samples: Sequence[Sample], start: Mapping[int, int], end: Mapping[int, int],
               boundary: int) -> tuple[float | None, float | None]:
    """Drain rates before and after the first `boundary` records of the backlog were committed
    (e.g. the LABEL_CREATED head of every partition, then the scans), the crossing time linearly
    interpolated between samples; from the first progress to the end of the drain."""
    pts = [(s.t, progress(s.committed, start, end)) for s in samples]
    total = sum(end[p] - start[p] for p in start)
    i = next((k for k, (_, d) in enumerate(pts) if d > 0), None)
    j = next((k for k, (_, d) in enumerate(pts) if d >= total), None)
    if i is None or j is None or not 0 < boundary < total:
        return None, None
    t_first, d_first = pts[i]
    t_end = pts[j][0]
    k = next(k for k, (_, d) in enumerate(pts) if d >= boundary)
    if k == 0 or pts[k][1] == pts[k - 1][1]:
        t_cross = pts[k][0]
    else:
        (t0, d0), (t1, d1) = pts[k - 1], pts[k]
        t_cross = t0 + (boundary - d0) / (d1 - d0) * (t1 - t0)
    before = (boundary - d_first) / (t_cross - t_first) if t_cross > t_first and boundary > d_first else None
    after = (total - boundary) / (t_end - t_cross) if t_end > t_cross else None
    return before, after


def checkpoints(samples: Sequence[Sample]) -> tuple[float | None, float | None]:
    """Median seconds between commits and median records per commit, from the times the committed
    total changed (sampling at 4 Hz: resolution ~0.25 s)."""
    changes: list[tuple[float, int]] = []
    last: int | None = None
    for s in samples:
        tot = sum(max(o, 0) for o in s.committed.values())
        if last is not None and tot != last:
            changes.append((s.t, tot - last))
        last = tot
    if len(changes) < 3:
        return None, None
    gaps = sorted(b[0] - a[0] for a, b in zip(changes[1:], changes[2:], strict=False))
    sizes = sorted(n for _, n in changes[1:])  # the first commit may carry start-up
    return gaps[len(gaps) // 2], float(sizes[len(sizes) // 2])
