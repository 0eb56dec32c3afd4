"""The scan-pipeline benchmark: throughput, end-to-end latency, profile and peak RSS of the scan
pipeline on the live stack, side by side with two baselines on the same input.

    .venv/bin/python -m bench.pipeline --scans 200000

Systems (each started as its own process, each measured run on a fresh consumer group and fresh
shipments; the bench process only produces, watches offsets and reads outputs):
  pipeline     `parcel run topologies/scan_pipeline.yaml` -> notifications
  passthrough  bench.passthrough: quixstreams, scan-events -> bench-passthrough-out, same guarantee
  naive        bench.naive: confluent_kafka loop, per event Cassandra INSERT + PostgreSQL UPDATE +
               Kafka produce/flush -> bench-naive-out

Phases:
  1. backlog: a simulated day of >= --scans scans (plan_day: fresh shipments), its labels stored
     and emitted (as run_day does), everything produced to scan-events before any system runs.
  2. drain: each system drains that same backlog from its start (own group); the sustained rate is
     records committed / time, from the first committed progress to the whole backlog committed
     (start-up and the first checkpoint excluded). The naive loop is cut after --naive-seconds.
  3. latency: per system and offered rate (--rates; a rate above what the system drained is
     replaced by 80% of its drain rate, "highest sustainable"), a fresh day: labels emitted and
     drained first, then the scans at the fixed rate with produce(rate_per_s, restamp=True), so a
     scan's created_at is its real send time. A separate reader process consumes the output topic
     read_committed and matches by event_id: latency = receive time - send time.
  4. profile: the pipeline under cProfile (`python -m cProfile -o`) draining a small fresh day;
     self time grouped by library, and the top functions.

Results: a markdown table on stdout and docs/bench/pipeline.md (--out), raw JSON next to the work
dir's logs (--work-dir, default /tmp/parcel-bench-<run id>).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import re
import shlex
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from api.labels import emit_labels, store_labels
from bench.kafkautil import Offsets, ensure_topics, start_group_at
from bench.procs import (
    CLK_TCK,
    ROOT,
    TOPOLOGY,
    Proc,
    ProcGroup,
    cpu_by_class,
    machine_busy_ticks,
    naive_cmd,
    passthrough_cmd,
    pipeline_cmd,
    snapshot,
    thread_cpu,
    thread_ticks,
    vm_hwm_mb,
)
from bench.stats import (
    LatencySummary,
    Sample,
    checkpoints,
    drain_rate,
    fmt_ms,
    fmt_rate,
    progress,
    reached,
    split_rate,
    window_rates,
)
from config.settings import Settings, get_settings
from simulator.day import SimDay, SimMessage
from simulator.live import labels_for, plan_day
from simulator.produce import produce

WARM_S, TAIL_S = 1.0, 2.0  # unmeasured traffic before and after the measured scans of a latency run
MSGS_PER_SHIPMENT = 11.5  # plan_day's default knobs give ~11.9 scans per shipment; checked after generating
SYSTEMS = ("pipeline", "pipeline-2p", "passthrough", "naive")
TITLES = {
    "pipeline": "scan pipeline, 1 process",
    "pipeline-2p": "scan pipeline, 2 processes",
    "passthrough": "pass-through (quixstreams, exactly-once)",
    "naive": "naive per-event consumer",
}
OUTPUTS = {"pipeline": "notifications", "pipeline-2p": "notifications", "passthrough": "bench-passthrough-out",
           "naive": "bench-naive-out"}
# The scan pipeline as N processes of one consumer group (`parcel run --instance-id i`, i = 1..N).
PIPELINES = {"pipeline": 1, "pipeline-2p": 2}


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- results ------------------------------------------------------------------------------------


@dataclass
class DrainResult:
    system: str
    records: int  # backlog records
    drained: bool
    rate: float  # sustained records/s, whole backlog
    seconds: float
    label_rate: float | None  # the LABEL_CREATED head of every partition (a state rebuild per shipment)
    scan_rate: float | None  # the scans after it
    window_min: float | None
    window_median: float | None
    window_max: float | None
    checkpoint_s: float | None  # median seconds between commits
    checkpoint_records: float | None  # median records per commit
    wall_s: float  # process start to drained (or cut)
    outputs_seen: int
    outputs_wanted: int
    vm_hwm_mb: float | None
    cpu_s: dict[str, float]  # CPU seconds per process class in the sustained window
    busy_cores: float  # whole machine, in the window
    niced_cores: float  # of which processes with nice > 0 (other jobs at lower priority)
    threads_s: dict[str, float]  # CPU seconds per thread class of the system's process, in the window


@dataclass
class LatencyResult:
    system: str
    target_rate: float
    requested_rate: float
    note: str
    sent: int
    offered_rate: float  # achieved by the producer
    backlog_at_end: int  # input records not yet committed when the last scan was sent
    drained_after_s: float | None  # from the last send to the whole input committed
    latency: dict[str, float] | None
    seen: int
    wanted: int
    vm_hwm_mb: float | None
    cpu_cores: dict[str, float]
    checkpoint_s: float | None
    checkpoint_records: float | None


@dataclass
class ProfileResult:
    records: int
    seconds: float
    rate: float
    by_area: list[tuple[str, float, float]]  # (area, self seconds, share)
    top_self: list[tuple[str, int, float, float]]  # (function, calls, self s, cum s)
    top_cum: list[tuple[str, int, float, float]]
    total_s: float
    prof_path: str
    vm_hwm_mb: float | None


@dataclass
class Report:
    command: str
    started: str
    machine: dict[str, Any]
    backlog: dict[str, Any]
    drains: dict[str, DrainResult] = field(default_factory=dict)
    latencies: list[LatencyResult] = field(default_factory=list)
    profile: ProfileResult | None = None
    finished: str = ""
    notes: list[str] = field(default_factory=list)


# --- the bench ----------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Committed offsets of a group, four times a second, while the main thread produces."""

    def __init__(self, bootstrap: str, group: str, topic: str, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.offsets = Offsets(bootstrap)
        self.group, self.topic, self.period_s = group, topic, period_s
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(Sample(time.monotonic(), self.offsets.committed(self.group, self.topic)))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)
        self.offsets.close()


class Bench:
    def __init__(self, settings: Settings, work: Path, run_id: str, topology: Path = TOPOLOGY,
                 pipeline_processes: int = 1) -> None:
        self.s = settings
        self.pipeline_processes = pipeline_processes
        self.topology = topology
        self.bootstrap = settings.kafka.bootstrap_servers
        self.topic = settings.kafka.topics["scan_events"]
        self.work = work
        self.run_id = run_id
        self.offsets = Offsets(self.bootstrap)
        self.seq = 0
        self.groups: list[str] = []
        from stack.servers import status

        self.servers = {r.name: r.pid for r in status(settings) if r.pid}

    def close(self) -> None:
        """Also deletes the run's throwaway groups and their changelog topics (8 partitions each):
        without this, every `make bench` left ~15 topics on the broker for good."""
        from stack.servers import drop_groups

        self.offsets.close()
        try:
            drop_groups(self.bootstrap, self.groups)
        except Exception as exc:  # noqa: BLE001 - cleanup only: the results are written
            log(f"could not delete the run's groups and changelog topics: {exc}")

    def _name(self, what: str) -> str:
        self.seq += 1
        name = f"bench-{what}-{self.run_id}-{self.seq}"
        self.groups.append(name)
        return name

    def _start(self, system: str, group: str) -> Proc | ProcGroup:
        """The system's process(es); the pipeline as --pipeline-processes members of one group."""
        n = self.pipeline_processes if system == "pipeline" else PIPELINES.get(system, 1)
        if n == 1:
            return Proc(self._cmd(system, group), self.work / f"{group}.log")
        return ProcGroup([Proc(pipeline_cmd(group, self.work / f"state-{group}-{i}", None, self.topology, i),
                               self.work / f"{group}-{i}.log") for i in range(1, n + 1)])

    def _cmd(self, system: str, group: str, profile_out: Path | None = None) -> list[str]:
        state = self.work / f"state-{group}"
        if system in PIPELINES:
            return pipeline_cmd(group, state, profile_out, self.topology)
        if system == "passthrough":
            return passthrough_cmd(group, state, OUTPUTS[system], self.topology)
        return naive_cmd(group, OUTPUTS[system])

    # -- helpers --

    def wanted_file(self, msgs: list[SimMessage], name: str) -> tuple[Path, int]:
        """event_id<TAB>(created_at - send time) of every valid scan: what the output must carry."""
        lines = []
        for m in msgs:
            if m.kind != "valid" or not m.event_id or m.at is None:
                continue
            created = datetime.fromisoformat(orjson.loads(m.value)["created_at"])
            off = (created - m.at).total_seconds()
            lines.append(f"{m.event_id}\t{off:.6f}" if off else m.event_id)
        path = self.work / f"{name}.wanted"
        path.write_text("\n".join(lines))
        return path, len(lines)

    def start_reader(self, system: str, wanted: Path, name: str, max_s: float = 1800) -> tuple[Proc, str]:
        topic = OUTPUTS[system]
        start = self.offsets.ends(topic)
        prefix = str(self.work / f"{name}.out")
        proc = Proc([sys.executable, "-m", "bench.reader", "--bootstrap", self.bootstrap, "--topic", topic,
                     "--start", json.dumps(start), "--wanted", str(wanted), "--out", prefix,
                     "--max-seconds", str(max_s)], self.work / f"{name}.reader.log")
        deadline = time.monotonic() + 60
        while not Path(prefix + ".ready").exists():
            proc.check()
            if time.monotonic() > deadline:
                raise RuntimeError("output reader did not start")
            time.sleep(0.05)
        return proc, prefix

    def finish_reader(self, proc: Proc, prefix: str, wait_s: float) -> tuple[np.ndarray, dict[str, int]]:
        try:
            proc.p.wait(wait_s)
        except Exception:  # noqa: BLE001 - TimeoutExpired: stop it, it writes what it has
            pass
        proc.stop(30)
        data = np.load(prefix + ".npz")
        meta = json.loads(Path(prefix + ".json").read_text())
        return data["lat"], meta

    def wait_committed(self, group: str, target: dict[int, int], proc: Proc | ProcGroup, timeout: float,
                       samples: list[Sample] | None = None) -> float | None:
        """Seconds until `group` committed `target`, or None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            proc.check()
            c = self.offsets.committed(group, self.topic)
            now = time.monotonic()
            if samples is not None:
                samples.append(Sample(now, c))
            if reached(c, target):
                return now - t0
            time.sleep(0.25)
        return None

    def cpu(self, before: Any, after: Any, sut: Proc | ProcGroup, extra: list[Proc],
            busy_cpu_s: float) -> dict[str, float]:
        """CPU seconds per class; 'other' is the machine's busy time minus the known processes (so
        other jobs' short-lived processes, gone by the second snapshot, are counted too)."""
        classes, roots = self.classes(sut, extra)
        cpu = cpu_by_class(before, after, classes, roots)
        cpu.pop("other", None)
        cpu["other (rest of the machine)"] = max(busy_cpu_s - sum(cpu.values()), 0.0)
        return cpu

    def classes(self, sut: Proc | ProcGroup, extra: list[Proc]) -> tuple[dict[str, set[int]], dict[str, int]]:
        cls = {"system under test": set(getattr(sut, "pids", [sut.pid])),
               "bench (producer, reader)": {os.getpid(), *(p.pid for p in extra)}}
        for name in ("kafka", "cassandra", "redis"):
            if self.servers.get(name):
                cls[name] = {self.servers[name]}
        roots = {"postgres": self.servers["postgres"]} if self.servers.get("postgres") else {}
        return cls, roots

    # -- phases --

    def backlog(self, scans: int, seed: int) -> tuple[SimDay, dict[int, int], dict[int, int], int]:
        n = math.ceil(scans / MSGS_PER_SHIPMENT)
        t = time.monotonic()
        day = plan_day(n, seed=seed)
        while len(day.messages) < scans:  # unlikely: top up with more shipments
            n = math.ceil(n * scans / len(day.messages)) + 10
            day = plan_day(n, seed=seed)
        log(f"backlog: {len(day.shipments)} shipments, {len(day.messages)} scans {day.kinds} "
            f"generated in {time.monotonic() - t:.0f} s")
        start = self.offsets.ends(self.topic)
        labels = labels_for(day)
        t = time.monotonic()
        store_labels(self.s, labels, seed=seed)
        emit_labels(self.s, labels)
        res = produce(day.messages, self.bootstrap, self.topic, progress=False)
        end = self.offsets.ends(self.topic)
        log(f"backlog: {len(labels)} labels stored+emitted, {res.delivered} scans produced in "
            f"{time.monotonic() - t:.0f} s; {sum(end[p] - start[p] for p in start)} records on {self.topic}")
        return day, start, end, len(labels)

    def drain(self, system: str, day_wanted: tuple[Path, int], start: dict[int, int],
              end: dict[int, int], n_labels: int, cap_s: float | None, timeout_s: float = 900) -> DrainResult:
        group = self._name(f"{system}-drain")
        start_group_at(self.bootstrap, group, self.topic, start)
        reader, prefix = self.start_reader(system, day_wanted[0], group)
        log(f"drain {system}: group {group}")
        t_spawn = time.monotonic()
        sut = self._start(system, group)
        samples: list[Sample] = []
        cpu0 = busy0 = None
        th0: dict = {}
        threads: dict[str, float] = {}
        t_first = None
        hwm = None
        try:
            while True:
                sut.check()
                c = self.offsets.committed(group, self.topic)
                now = time.monotonic()
                samples.append(Sample(now, c))
                done = progress(c, start, end)
                if t_first is None and done > 0:
                    t_first, cpu0, busy0, th0 = now, snapshot(), machine_busy_ticks(), thread_ticks(sut.pid)
                if reached(c, end):
                    break
                if cap_s is not None and t_first is not None and now - t_first >= cap_s:
                    break
                if now - t_spawn > timeout_s:
                    log(f"drain {system}: not drained after {timeout_s:.0f} s, cut")
                    break
                time.sleep(0.25)
            cpu1, busy1, t_cpu1 = snapshot(), machine_busy_ticks(), time.monotonic()
            threads = thread_cpu(sut.pid, th0, thread_ticks(sut.pid)) if cpu0 is not None else {}
            hwm = vm_hwm_mb(sut.pid)
        finally:
            wall = time.monotonic() - t_spawn
            sut.stop()
        d = drain_rate(samples, start, end)
        lat, meta = self.finish_reader(reader, prefix, 20 if d.drained else 0)
        busy = niced = 0.0
        cpu: dict[str, float] = {}
        if busy0 is not None and t_first is not None and t_cpu1 > t_first:
            busy_s = (busy1[0] - busy0[0]) / CLK_TCK
            busy = busy_s / (t_cpu1 - t_first)
            niced = (busy1[2] - busy0[2]) / CLK_TCK / (t_cpu1 - t_first)
            cpu = self.cpu(cpu0, cpu1, sut, [reader], busy_s)
        (self.work / f"{group}.samples.json").write_text(json.dumps([[x.t, x.committed] for x in samples]))
        win = window_rates(samples, start, end, 5.0)
        total = sum(end[p] - start[p] for p in start)
        label_rate, scan_rate = split_rate(samples, start, end, n_labels) if d.drained else (None, None)
        ck_s, ck_n = checkpoints(samples)
        r = DrainResult(
            system=system, records=total, drained=d.drained, rate=d.rate, seconds=d.seconds,
            label_rate=label_rate, scan_rate=scan_rate, checkpoint_s=ck_s, checkpoint_records=ck_n,
            window_min=min(win) if win else None, window_median=float(np.median(win)) if win else None,
            window_max=max(win) if win else None, wall_s=wall, outputs_seen=meta["seen"],
            outputs_wanted=meta["wanted"], vm_hwm_mb=hwm, cpu_s=cpu, busy_cores=busy, niced_cores=niced,
            threads_s=threads)
        log(f"drain {system}: {fmt_rate(r.rate)} over {r.seconds:.0f} s ({'drained' if r.drained else 'cut'}), "
            f"outputs {r.outputs_seen}/"
            f"{r.outputs_wanted}, VmHWM {hwm or 0:.0f} MiB")
        return r

    def latency(self, system: str, rate: float, requested: float, note: str, seconds: float,
                seed: int) -> LatencyResult:
        # 1 s of warm-up and 2 s of tail traffic around the measured scans, not measured: the last
        # measured scan is followed by traffic as in steady state (an idle input leaves quixstreams in
        # a 1 s consumer poll before its next checkpoint: an end-of-run artefact, not a latency)
        n_warm, n_msgs, n_tail = int(rate * WARM_S), int(rate * seconds), int(rate * TAIL_S)
        n_all = n_warm + n_msgs + n_tail
        day = plan_day(math.ceil(n_all / MSGS_PER_SHIPMENT) + 5, seed=seed)
        msgs = day.messages[:n_all]
        ship_ids = {m.shipment_id for m in msgs if m.shipment_id}
        labels = [lb for lb in labels_for(day) if str(lb.shipment_id) in ship_ids]
        group = self._name(f"{system}-lat{int(rate)}")
        wanted, _ = self.wanted_file(msgs[n_warm:n_warm + n_msgs], group)
        store_labels(self.s, labels, seed=seed)
        start_group_at(self.bootstrap, group, self.topic, self.offsets.ends(self.topic))
        log(f"latency {system} @ {rate:.0f}/s: {n_msgs} measured scans (+{n_warm} before, +{n_tail} after) of "
            f"{len(labels)} shipments, group {group}")
        sut = self._start(system, group)
        reader: Proc | None = None
        prefix = ""
        try:
            emit_labels(self.s, labels)
            if self.wait_committed(group, self.offsets.ends(self.topic), sut, 300) is None:
                raise RuntimeError(f"{system} did not drain the {len(labels)} labels within 300 s")
            reader, prefix = self.start_reader(system, wanted, group)
            sampler = Sampler(self.bootstrap, group, self.topic)
            sampler.start()
            cpu0, busy0, t0 = snapshot(), machine_busy_ticks(), time.monotonic()
            try:
                res = produce(msgs, self.bootstrap, self.topic, progress=False, rate_per_s=rate, restamp=True)
            except BaseException:
                sampler.stop()
                raise
            t_sent = time.monotonic()
            end = self.offsets.ends(self.topic)
            committed = self.offsets.committed(group, self.topic)
            backlog = sum(max(o - max(committed.get(p, 0), 0), 0) for p, o in end.items())
            drained_after: float | None = None
            if self.wait_committed(group, end, sut, max(60.0, seconds)) is not None:
                drained_after = time.monotonic() - t_sent
            cpu1, busy1, t1 = snapshot(), machine_busy_ticks(), time.monotonic()
            sampler.stop()
            hwm = vm_hwm_mb(sut.pid)
        except BaseException:
            if reader is not None:
                reader.stop()
            raise
        finally:
            sut.stop()
        lat, meta = self.finish_reader(reader, prefix, 30)
        cpu = {k: v / (t1 - t0) for k, v in
               self.cpu(cpu0, cpu1, sut, [reader], (busy1[0] - busy0[0]) / CLK_TCK).items()}
        (self.work / f"{group}.samples.json").write_text(json.dumps([[x.t, x.committed] for x in sampler.samples]))
        ck_s, ck_n = checkpoints(sampler.samples)
        summary = asdict(LatencySummary.of(lat.tolist())) if len(lat) else None
        r = LatencyResult(
            system=system, target_rate=rate, requested_rate=requested, note=note, sent=res.sent,
            offered_rate=res.sent / res.elapsed_s if res.elapsed_s else 0.0, backlog_at_end=backlog,
            drained_after_s=drained_after, latency=summary, seen=meta["seen"], wanted=meta["wanted"],
            vm_hwm_mb=hwm, cpu_cores=cpu, checkpoint_s=ck_s, checkpoint_records=ck_n)
        if summary:
            log(f"latency {system} @ {r.offered_rate:.0f}/s offered: p50 {fmt_ms(summary['p50'])} p99 "
                f"{fmt_ms(summary['p99'])} max {fmt_ms(summary['max'])}; backlog at end {backlog}, "
                f"seen {r.seen}/{r.wanted}")
        return r

    def profile(self, shipments: int, seed: int, cap_s: float) -> ProfileResult:
        day = plan_day(shipments, seed=seed)
        start = self.offsets.ends(self.topic)
        labels = labels_for(day)
        store_labels(self.s, labels, seed=seed)
        emit_labels(self.s, labels)
        produce(day.messages, self.bootstrap, self.topic, progress=False)
        end = self.offsets.ends(self.topic)
        group = self._name("pipeline-profile")
        start_group_at(self.bootstrap, group, self.topic, start)
        prof = self.work / f"{group}.prof"
        log(f"profile: cProfile of the pipeline draining {sum(end[p] - start[p] for p in start)} records")
        sut = Proc(self._cmd("pipeline", group, prof), self.work / f"{group}.log")
        samples: list[Sample] = []
        t_spawn = time.monotonic()
        profiling = False
        try:
            while True:
                sut.check()
                c = self.offsets.committed(group, self.topic)
                samples.append(Sample(time.monotonic(), c))
                if not profiling and progress(c, start, end) > 0:
                    os.kill(sut.pid, signal.SIGUSR1)  # steady state from here: start the profiler
                    profiling = True
                if reached(c, end) or (time.monotonic() - t_spawn) > cap_s:
                    break
                time.sleep(0.25)
            os.kill(sut.pid, signal.SIGUSR2)  # stop it and write the stats
            for _ in range(150):
                if prof.exists():
                    break
                time.sleep(0.2)
            hwm = vm_hwm_mb(sut.pid)
        finally:
            sut.stop(120)
        d = drain_rate(samples, start, end)
        st = pstats.Stats(str(prof))
        by_area: dict[str, float] = {}
        rows = []
        total = 0.0
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            total += tt
            area = area_of(file, fn)
            by_area[area] = by_area.get(area, 0.0) + tt
            rows.append((f"{short(file)}:{line}({fn})" if file != "~" else fn, nc, tt, ct))
        top_self = sorted(rows, key=lambda r: -r[2])[:20]
        ours = [r for r in rows if any(r[0].startswith(p) for p in PROJECT_PREFIXES)]
        top_cum = sorted(ours, key=lambda r: -r[3])[:20]
        areas = sorted(((a, t, t / total) for a, t in by_area.items()), key=lambda x: -x[1])
        return ProfileResult(records=d.records, seconds=d.seconds, rate=d.rate, by_area=areas,
                             top_self=top_self, top_cum=top_cum, total_s=total, prof_path=str(prof), vm_hwm_mb=hwm)


PROJECT_PREFIXES = ("operators/", "sinks/", "topologies/", "models/", "config/", "api/")


def short(file: str) -> str:
    root = str(ROOT) + "/"
    if file.startswith(root):
        return file[len(root):]
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    if "/lib/python3" in file:
        return "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return file


def area_of(file: str, fn: str) -> str:
    """Which library a profile row's self time belongs to (C functions by their qualified name)."""
    s = short(file) if file != "~" else fn
    table = [
        ("cimpl", "confluent_kafka (librdkafka calls)"), ("confluent_kafka", "confluent_kafka (librdkafka calls)"),
        ("rocksdict", "RocksDB (rocksdict)"), ("quixstreams/state", "quixstreams state"),
        ("quixstreams", "quixstreams (other)"), ("cassandra", "cassandra-driver"), ("psycopg", "psycopg"),
        ("pydantic", "pydantic"), ("orjson", "orjson"), ("xgboost", "ETA model (xgboost/numpy/pandas)"),
        ("numpy", "ETA model (xgboost/numpy/pandas)"), ("pandas", "ETA model (xgboost/numpy/pandas)"),
        ("models/eta", "ETA model (xgboost/numpy/pandas)"),
        ("operators/", "project: operators"), ("sinks/", "project: sinks"), ("topologies/", "project: topologies"),
        ("models/", "project: models"), ("prometheus_client", "prometheus_client"),
        ("method 'acquire' of '_thread.lock'", "waiting on Cassandra futures (thread locks)"),
        ("method 'wait' of", "waiting on Cassandra futures (thread locks)"),
        ("stdlib/threading", "waiting on Cassandra futures (thread locks)"),
        ("_pickle", "pickle (quixstreams copies each value at the dead-letter branch)"),
        ("stdlib/", "stdlib (other)"), ("built-in method time.sleep", "sleeping"),
    ]
    for needle, area in table:
        if needle in s:
            return area
    if s.startswith("<") or file == "~":
        return "builtins / C calls (other)"
    return "other"


# --- report -------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import cassandra
    import confluent_kafka
    import psycopg
    import quixstreams

    s = get_settings()
    return {
        "nproc": os.cpu_count(), "cpu": model, "mem_gib": round(mem / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "versions": {"quixstreams": quixstreams.__version__, "confluent_kafka": confluent_kafka.version()[0],
                     "librdkafka": confluent_kafka.libversion()[0], "cassandra-driver": cassandra.__version__,
                     "psycopg": psycopg.__version__, "kafka": s.stack.kafka_version,
                     "cassandra": s.stack.cassandra_version, "kafka partitions": s.kafka.partitions},
    }


def _lat_cell(r: LatencyResult | None) -> str:
    if r is None:
        return "—"
    if not r.latency:
        return "no output"
    lat = r.latency
    cell = f"{fmt_ms(lat['p50'])} / {fmt_ms(lat['p99'])} / {fmt_ms(lat['max'])}"
    if r.note:
        cell += f" at {r.offered_rate:,.0f}/s ({r.note})"
    elif abs(r.offered_rate - r.target_rate) > 0.05 * r.target_rate:
        cell += f" (offered {r.offered_rate:,.0f}/s)"
    return cell


def render(rep: Report) -> str:
    m = rep.machine
    systems = [s for s in SYSTEMS if s in rep.drains or any(r.system == s for r in rep.latencies)]
    head = "| | " + " | ".join(TITLES[s] for s in systems) + " |\n|---|" + "---|" * len(systems)
    rows: list[str] = []

    def row(label: str, cells: list[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def dcell(s: str, f: Any) -> str:
        d = rep.drains.get(s)
        return f(d) if d is not None else "—"

    row("max sustained drain, records/s (whole backlog)",
        [dcell(s, lambda d: f"**{d.rate:,.0f}**" + ("" if d.drained else f" (cut after {d.seconds:.0f} s)"))
         for s in systems])
    row("… LABEL_CREATED head (state rebuilt per shipment) / the scans after it",
        [dcell(s, lambda d: f"{d.label_rate:,.0f} / {d.scan_rate:,.0f}" if d.label_rate and d.scan_rate else "—")
         for s in systems])
    row("… 5 s windows min / median / max",
        [dcell(s, lambda d: f"{d.window_min:,.0f} / {d.window_median:,.0f} / {d.window_max:,.0f}"
               if d.window_median is not None else "— (drained in < 5 s)") for s in systems])
    row("… commits: median interval / records per commit",
        [dcell(s, lambda d: f"{d.checkpoint_s:.2f} s / {d.checkpoint_records:,.0f}" if d.checkpoint_s else "—")
         for s in systems])
    row("drain: records, seconds (process start → all committed)",
        [dcell(s, lambda d: f"{d.records:,} in {d.seconds:.0f} s ({d.wall_s:.0f} s wall)" if d.drained
               else f"{int(d.rate * d.seconds):,} of {d.records:,} in {d.seconds:.0f} s") for s in systems])
    row("outputs read (read_committed) / valid scans",
        [dcell(s, lambda d: f"{d.outputs_seen:,} / {d.outputs_wanted:,}") for s in systems])
    rates = sorted({r.requested_rate for r in rep.latencies})

    def lat_of(s: str, req: float) -> LatencyResult | None:
        return next((r for r in rep.latencies if r.system == s and r.requested_rate == req), None)

    def lcell(s: str, req: float, f: Any) -> str:
        r = lat_of(s, req)
        return f(r) if r is not None else "—"

    for req in rates:
        row(f"latency p50 / p99 / max at {req:,.0f}/s offered", [_lat_cell(lat_of(s, req)) for s in systems])
        row(f"… input backlog at last send / all committed after (at {req:,.0f}/s)",
            [lcell(s, req, lambda r: f"{r.backlog_at_end:,} / " + (
                f"{r.drained_after_s:.1f} s" if r.drained_after_s is not None else "not drained")) for s in systems])
        row(f"… commits: median interval / records per commit (at {req:,.0f}/s)",
            [lcell(s, req, lambda r: f"{r.checkpoint_s:.2f} s / {r.checkpoint_records:,.0f}"
                   if r.checkpoint_s else "—") for s in systems])
        row(f"… system's process / other jobs on the machine during the run, cores (at {req:,.0f}/s)",
            [lcell(s, req, lambda r: f"{r.cpu_cores.get('system under test', 0):.2f} / "
                   f"{r.cpu_cores.get('other (rest of the machine)', 0):.2f}") for s in systems])
    row("peak RSS (VmHWM) in the drain",
        [dcell(s, lambda d: f"{d.vm_hwm_mb:,.0f} MiB" if d.vm_hwm_mb else "—") for s in systems])
    if rates:
        row(f"peak RSS (VmHWM) in the {rates[0]:,.0f}/s run",
            [lcell(s, rates[0], lambda r: f"{r.vm_hwm_mb:,.0f} MiB" if r.vm_hwm_mb else "—") for s in systems])
    row("CPU of the process in the drain, cores",
        [dcell(s, lambda d: f"{d.cpu_s.get('system under test', 0) / d.seconds:.2f}" if d.seconds else "—")
         for s in systems])
    def per_k(d: DrainResult) -> str:
        if not d.seconds:
            return "—"
        n = max(d.rate * d.seconds, 1)
        return f"{d.cpu_s.get('system under test', 0) / n * 1e6:,.0f} / {d.busy_cores * d.seconds / n * 1e6:,.0f}"

    row("CPU ms per 1,000 records in the drain: process / whole machine", [dcell(s, per_k) for s in systems])
    table = head + "\n" + "\n".join(rows)

    # CPU split during each drain
    classes = sorted({k for d in rep.drains.values() for k in d.cpu_s})
    cpu_head = "| cores used during the drain | " + " | ".join(TITLES[s] for s in systems) + " |\n|---|" + \
        "---|" * len(systems)
    cpu_rows = [f"| {k} | " + " | ".join(
        dcell(s, lambda d, k=k: f"{d.cpu_s.get(k, 0) / d.seconds:.2f}" if d.seconds else "—") for s in systems) + " |"
        for k in classes]
    cpu_rows.append("| whole machine (of " + str(m["nproc"]) + ") | " + " | ".join(
        dcell(s, lambda d: f"{d.busy_cores:.2f}") for s in systems) + " |")
    cpu_rows.append("| … of which niced processes (lower priority: they mostly soak up idle time) | " + " | ".join(
        dcell(s, lambda d: f"{d.niced_cores:.2f}") for s in systems) + " |")
    cpu_table = cpu_head + "\n" + "\n".join(cpu_rows)
    tclasses = sorted({k for d in rep.drains.values() for k in d.threads_s})
    thread_table = "| threads of the system's process, cores | " + " | ".join(TITLES[s] for s in systems) + \
        " |\n|---|" + "---|" * len(systems) + "\n" + "\n".join(
            f"| {k} | " + " | ".join(dcell(s, lambda d, k=k: f"{d.threads_s.get(k, 0) / d.seconds:.2f}"
                                           if d.seconds else "—") for s in systems) + " |" for k in tclasses)

    checks = []
    for ps in (p for p in PIPELINES if p in systems):
        who = TITLES[ps]
        pipe = rep.drains.get(ps)
        lat_p = {r.requested_rate: r for r in rep.latencies if r.system == ps}
        if pipe:
            checks.append((f"≥ 5,000 scan events/s sustained end-to-end ({who})", pipe.rate >= 5000,
                           f"{pipe.rate:,.0f}/s"))
        r5 = lat_p.get(5000.0)
        if r5 and r5.latency:
            ok = not r5.note and r5.latency["p99"] <= 1.0
            checks.append((f"p99 ≤ 1 s at 5,000/s ({who})", ok, f"p99 {fmt_ms(r5.latency['p99'])}"
                           + (f" at {r5.offered_rate:,.0f}/s ({r5.note})" if r5.note else "")))
        r1 = lat_p.get(1000.0)
        if r1 and r1.latency:
            ok = not r1.note and r1.latency["p99"] <= 0.25
            checks.append((f"p99 ≤ 250 ms at 1,000/s ({who})", ok, f"p99 {fmt_ms(r1.latency['p99'])}"
                           + (f" at {r1.offered_rate:,.0f}/s ({r1.note})" if r1.note else "")))
    check_lines = "\n".join(f"- {'PASS' if ok else 'MISS'} {what}: {got}" for what, ok, got in checks)

    out = [
        "# Scan-pipeline benchmark",
        "",
        "Command (from the repo root):",
        "",
        "```",
        rep.command,
        "```",
        "",
        f"Run {rep.started} → {rep.finished} on {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}; load average at start "
        f"{' / '.join(f'{x:.1f}' for x in m['loadavg_start'])}, at end "
        f"{' / '.join(f'{x:.1f}' for x in m.get('loadavg_end', (0, 0, 0)))}. Every server (Kafka "
        f"{m['versions']['kafka']} KRaft, Cassandra {m['versions']['cassandra']}, PostgreSQL 15, Redis 7) runs on the "
        f"same 2 cores as the system under test, the load generator and the reader, and the machine is shared with "
        f"other work (other engineers' jobs): figures carry that noise. Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        (f"Backlog: {rep.backlog['scans']:,} simulated scans ({rep.backlog['kinds']}) of "
         f"{rep.backlog['shipments']:,} fresh shipments, plus their {rep.backlog['shipments']:,} LABEL_CREATED "
         f"events (labels stored in PostgreSQL and emitted first, as `run_day` does): "
         f"{rep.backlog['records']:,} records on scan-events, all produced before a system starts; each system "
         f"drains it from the start on its own consumer group." if rep.backlog else "No backlog drain in this run."),
        "",
        f"Topology: `{m['topology']}` (processing guarantee {m['guarantee']}, commit_interval "
        f"{m['commit_interval']} s"
        + (f", stretched under load to at most {m['busy_commit_interval']} s from {m['busy_rate']:g} input "
           f"records/s per process (`busy_commit_interval`)" if m.get("busy_commit_interval") else "")
        + "; the pass-through uses the same commit_interval).",
        "",
        table,
        "",
        check_lines,
        "",
        "How measured:",
        "",
        "- **Throughput**: records committed by the system's consumer group, sampled four times a second, from the "
        "first committed progress (start-up, group join and the first checkpoint excluded) until the whole backlog is "
        "committed. The pipeline and the pass-through commit offsets in the same Kafka transaction as their "
        "outputs (exactly-once), so a committed record is also persisted and published. "
        "The naive loop auto-commits every second and is cut after a fixed time.",
        "- **Latency**: per system and offered rate a fresh day (fresh shipments, fresh group); its labels are "
        "emitted and drained first, then the scans are produced at the fixed rate with "
        "`produce(rate_per_s=..., restamp=True)` (created_at = real send time). A separate reader process consumes "
        "the system's output topic with isolation.level=read_committed and matches each valid scan's event_id "
        "(first record only): latency = receive time − send time. Nearest-rank percentiles over the measured "
        "scans; 1 s of unmeasured traffic runs before them and 2 s after (steady state to the last measured scan: "
        "with an idle input quixstreams sits in a 1 s consumer poll before its next checkpoint). The lowest rate "
        "runs as asked; a higher one above the system's drain rate is replaced by 80% of that rate (marked).",
        "- **CPU**: utime+stime from /proc between the first progress and the end of the drain, per process class.",
        "- **Peak RSS**: VmHWM of the system's process at the end of its drain.",
        "",
        "## Where the CPU went during the drains",
        "",
        "\"other\" is the machine's busy time minus the processes above: other engineers' jobs (including "
        "short-lived processes), the OS.",
        "",
        cpu_table,
        "",
        thread_table,
    ]
    if rep.profile:
        p = rep.profile
        out += [
            "",
            "## Profile of the pipeline process",
            "",
            f"cProfile around `cli.py run topologies/scan_pipeline.yaml` (`python -m bench.profiled OUT.prof cli.py "
            f"run ...`: cProfile switched on at the first committed progress and off when the backlog is "
            f"committed, so start-up is not in it), draining a fresh day: {p.records:,} records in the window at "
            f"{p.rate:,.0f} records/s under the profiler ({p.seconds:.0f} s; cProfile slows Python code and sees "
            f"the main thread only: the Cassandra driver's I/O thread and librdkafka's threads are not in it, see "
            f"the thread split above). Self time {p.total_s:.0f} s in total; peak RSS {p.vm_hwm_mb or 0:,.0f} MiB.",
            "",
            "| self time by area | seconds | share |",
            "|---|---|---|",
            *[f"| {a} | {t:.1f} | {sh:.1%} |" for a, t, sh in p.by_area[:14]],
            "",
            "Top functions by self time:",
            "",
            "| function | calls | self s | cumulative s |",
            "|---|---|---|---|",
            *[f"| `{f}` | {n:,} | {tt:.2f} | {ct:.2f} |" for f, n, tt, ct in p.top_self],
            "",
            "Project functions by cumulative time:",
            "",
            "| function | calls | self s | cumulative s |",
            "|---|---|---|---|",
            *[f"| `{f}` | {n:,} | {tt:.2f} | {ct:.2f} |" for f, n, tt, ct in p.top_cum],
        ]
    if rep.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in rep.notes]]
    return "\n".join(out) + "\n"


def load_report(path: Path) -> Report:
    d = json.loads(path.read_text())
    d["drains"] = {k: DrainResult(**v) for k, v in d["drains"].items()}
    d["latencies"] = [LatencyResult(**v) for v in d["latencies"]]
    d["profile"] = ProfileResult(**d["profile"]) if d.get("profile") else None
    return Report(**d)


KEEP = "<!-- Everything below this line is written by hand and kept when the benchmark rewrites this file. -->"


def write_report(path: Path, md: str) -> None:
    """Write the generated report; a hand-written part after the KEEP marker survives re-runs."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP in old:
            kept = old[old.index(KEEP):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md + ("\n" + kept if kept else ""))


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=200_000, help="simulated scans in the drain backlog")
    ap.add_argument("--rates", default="500,1000,5000", help="offered rates of the latency runs, scans/s")
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="length of each paced run")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--naive-seconds", type=float, default=45.0, help="cut the naive drain after this")
    ap.add_argument("--profile-shipments", type=int, default=2500, help="0: no profile run")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="docs/bench/pipeline.md", help="markdown report ('' : none)")
    ap.add_argument("--work-dir", default=None, help="logs, state dirs, raw results (default /tmp/parcel-bench-<id>)")
    ap.add_argument("--topology", default=str(TOPOLOGY.relative_to(ROOT)),
                    help="the pipeline's topology file (the pass-through copies its app settings)")
    ap.add_argument("--commit-interval", type=float, default=None,
                    help="experiment: run a copy of the topology with this app.commit_interval (seconds)")
    ap.add_argument("--skip-drain", action="store_true",
                    help="experiment: no backlog drain; latency runs at the rates as asked")
    ap.add_argument("--pipeline-processes", type=int, default=1,
                    help="experiment: run the pipeline as N processes of one consumer group (peak RSS: the first)")
    ap.add_argument("--render", metavar="RESULTS_JSON", default=None,
                    help="only re-render the markdown of an earlier run's results.json (to --out)")
    args = ap.parse_args(argv)
    if args.render:
        md = render(load_report(Path(args.render)))
        print(md)
        if args.out:
            write_report(Path(args.out), md)
        return

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - set(SYSTEMS):
        ap.error(f"unknown systems {sorted(unknown)}")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    run_id = datetime.now(UTC).strftime("%m%d%H%M") + "-" + uuid.uuid4().hex[:4]
    work = Path(args.work_dir or f"/tmp/parcel-bench-{run_id}")
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    cmd = ".venv/bin/python -m bench.pipeline " + shlex.join(argv if argv is not None else sys.argv[1:])
    settings = get_settings()
    rep = Report(command=cmd.strip(), started=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                 machine=machine_facts(), backlog={})
    log(f"bench run {run_id}, work dir {work}")
    ensure_topics(settings.kafka.bootstrap_servers, [OUTPUTS[s] for s in systems if s not in PIPELINES],
                  settings.kafka.partitions, settings.kafka.replication_factor)
    topology = (ROOT / args.topology).resolve()
    if args.commit_interval is not None:
        text, n = re.subn(r"(?m)^(\s*commit_interval:\s*)[0-9.]+", rf"\g<1>{args.commit_interval}",
                          topology.read_text())
        if n != 1:
            ap.error(f"{topology}: no single app.commit_interval line to change")
        topology = work / f"{topology.stem}.commit_interval_{args.commit_interval}.yaml"
        topology.write_text(text)
        rep.notes.append(f"Experiment: the topology ran as a copy with app.commit_interval = "
                         f"{args.commit_interval} s (the pass-through copies it).")
    from topologies.lint import load_topology

    app_spec = load_topology(topology).app
    rep.machine.update(topology=args.topology if args.commit_interval is None else str(topology),
                       guarantee=app_spec.processing_guarantee, commit_interval=app_spec.commit_interval,
                       busy_commit_interval=app_spec.busy_commit_interval, busy_rate=app_spec.busy_rate)
    bench = Bench(settings, work, run_id, topology, args.pipeline_processes)
    if args.pipeline_processes > 1:
        rep.notes.append(f"Experiment: the pipeline ran as {args.pipeline_processes} processes of one consumer group "
                         f"(CPU: all of them; peak RSS and thread split: the first).")
    try:
        if not args.skip_drain:
            day, start, end, n_labels = bench.backlog(args.scans, args.seed)
            rep.backlog = {"scans": len(day.messages), "shipments": len(day.shipments), "kinds": day.kinds,
                           "records": sum(end[p] - start[p] for p in start)}
            wanted = bench.wanted_file(day.messages, "backlog")
            del day
            shared_used = False
            for s in systems:
                w, st, en, nl = wanted, start, end, n_labels
                if s in PIPELINES:
                    if shared_used:
                        # The pipeline writes the stores: a second pipeline drain gets fresh shipments (a
                        # backlog of the same size and mix from another seed), not the first one's again.
                        day, st, en, nl = bench.backlog(args.scans, args.seed + 50 + len(rep.drains))
                        w = bench.wanted_file(day.messages, f"backlog-{s}")
                        del day
                        rep.notes.append(f"{TITLES[s]}: drained its own backlog of the same size and mix "
                                         f"(seed {args.seed + 50 + len(rep.drains)}; the stores already hold the "
                                         f"first backlog's shipments).")
                    shared_used = True
                rep.drains[s] = bench.drain(s, w, st, en, nl,
                                            cap_s=args.naive_seconds if s == "naive" else None)
        k = 0
        for s in systems:
            drain = rep.drains.get(s)
            d_rate = drain.rate if drain is not None else math.inf
            done: dict[float, LatencyResult] = {}
            for i, req in enumerate(sorted(rates)):
                rate, note = req, ""
                if req > d_rate and i == 0:  # the lowest rate runs as asked: does the system keep up?
                    note = "above its drain rate"
                elif req > d_rate:
                    rate, note = max(100.0, math.floor(d_rate * 0.8 / 50) * 50), "80% of its drain rate"
                near = next((r for r in done if abs(r - rate) <= 0.1 * rate), None)
                if near is not None:  # within 10% of a rate already run: reuse that run
                    rep.latencies.append(replace(done[near], requested_rate=req, note=note))
                    continue
                k += 1
                done[rate] = bench.latency(s, rate, req, note, args.latency_seconds, args.seed + 100 + k)
                rep.latencies.append(done[rate])
        if args.profile_shipments and "pipeline" in systems:
            rep.profile = bench.profile(args.profile_shipments, args.seed + 999, cap_s=240)
    finally:
        bench.close()
        rep.machine["loadavg_end"] = os.getloadavg()
        rep.finished = datetime.now().astimezone().strftime("%H:%M %Z")
        (work / "results.json").write_text(json.dumps(asdict(rep), indent=1, default=str))
    md = render(rep)
    print(md)
    if args.out:
        write_report(Path(args.out), md)
        log(f"wrote {args.out} (raw: {work / 'results.json'})")


if __name__ == "__main__":
    main()
