"""Processes of the benchmark: the system under test as its own process group, its peak RSS
(VmHWM), and CPU time per process class from /proc (where the machine's two cores went)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "topologies" / "scan_pipeline.yaml"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pipeline_cmd(group: str, state_dir: Path, profile_out: Path | None = None,
                 topology: Path = TOPOLOGY, instance_id: int = 1) -> list[str]:
    """`parcel run` of the scan pipeline; with profile_out, under bench.profiled (SIGUSR1/SIGUSR2)."""
    prof = ["-m", "bench.profiled", str(profile_out)] if profile_out else []
    return [sys.executable, *prof, "cli.py", "run", str(topology), "--metrics-port", "0", "--group", group,
            "--state-dir", str(state_dir), "--instance-id", str(instance_id)]


def passthrough_cmd(group: str, state_dir: Path, output: str, topology: Path = TOPOLOGY) -> list[str]:
    return [sys.executable, "-m", "bench.passthrough", "--group", group, "--state-dir", str(state_dir),
            "--output", output, "--topology", str(topology)]


def naive_cmd(group: str, output: str) -> list[str]:
    return [sys.executable, "-m", "bench.naive", "--group", group, "--output", output]


class Proc:
    """A child in its own session (stop() signals its group, never anything else)."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.cmd, self.log = cmd, log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(cmd, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.cmd[1:4]} exited with {self.p.returncode}; log {self.log}:\n{tail}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.alive():
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(30)
        self._out.close()
        return self.p.returncode


def thread_ticks(pid: int) -> dict[int, ProcTicks]:
    """utime+stime per thread of a process (comm: the thread's name, e.g. librdkafka's rdk:broker1)."""
    out = {}
    for d in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        out[int(d.name)] = ProcTicks(comm, pid, int(f[11]) + int(f[12]))
    return out


def thread_cpu(pid: int, before: Mapping[int, ProcTicks], after: Mapping[int, ProcTicks]) -> dict[str, float]:
    """CPU seconds per thread class between two thread_ticks() of one process."""
    out: dict[str, float] = {}
    for tid, a in after.items():
        b = before.get(tid)
        delta = (a.ticks - (b.ticks if b is not None else 0)) / CLK_TCK
        if tid == pid:
            name = "main thread (Python: poll, steps, flush)"
        elif a.comm.startswith("rdk:"):
            name = "librdkafka threads"
        elif a.comm.lower().startswith("rocksdb"):
            name = "RocksDB background threads"
        else:
            name = "other threads (Cassandra driver I/O, lag reporter, ...)"
        out[name] = out.get(name, 0.0) + delta
    return out


class ProcGroup:
    """Several processes of one system (the pipeline scaled out in one consumer group), used like a Proc."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def stop(self, timeout: float = 60) -> None:
        for p in self.procs:
            p.stop(timeout)


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a live process (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class ProcTicks:
    comm: str
    ppid: int
    ticks: int  # utime + stime


def snapshot() -> dict[int, ProcTicks]:
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        out[int(d.name)] = ProcTicks(comm, int(f[1]), int(f[11]) + int(f[12]))
    return out


def machine_busy_ticks() -> tuple[int, int, int]:
    """(busy, total, niced) jiffies of all CPUs since boot, from /proc/stat; niced: time of processes
    with a positive nice value (lower-priority jobs that mostly soak up idle time)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f[:8]) - idle, sum(f[:8]), f[1]


def cpu_by_class(before: Mapping[int, ProcTicks], after: Mapping[int, ProcTicks],
                 classes: Mapping[str, set[int]], tree_roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per class: pids listed in `classes`, the children of
    `tree_roots` (PostgreSQL backends), and 'other'. A process gone by `after` is not counted."""
    owner: dict[int, str] = {}
    for name, pids in classes.items():
        for pid in pids:
            owner[pid] = name
    for name, root in tree_roots.items():
        owner[root] = name
    out: dict[str, float] = {name: 0.0 for name in [*classes, *tree_roots, "other"]}
    for pid, a in after.items():
        b = before.get(pid)
        delta = a.ticks - (b.ticks if b is not None and b.comm == a.comm else 0)
        if delta <= 0:
            continue
        name = owner.get(pid)
        if name is None:
            name = next((n for n, r in tree_roots.items() if a.ppid == r), "other")
        out[name] += delta / CLK_TCK
    return out
