"""Streaming jobs as background processes of the local machine: `parcel run FILE` started detached,
with a pid file and a log under the stack dir. Used by the demo (`make run`); `parcel down` stops
them. In production each job is a service of its own (systemd unit, Kubernetes deployment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.settings import ROOT, Settings


@dataclass
class Job:
    name: str
    pid: int | None
    log: Path
    metrics_port: int

    @property
    def running(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True


def _paths(settings: Settings, name: str) -> tuple[Path, Path]:
    d = Path(settings.stack.dir) / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.pid", d / f"{name}.log"


def job(settings: Settings, name: str, metrics_port: int = 0) -> Job:
    pid_file, log = _paths(settings, name)
    pid = None
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text().split()[0])
        except (ValueError, IndexError):
            pid = None
    return Job(name, pid, log, metrics_port)


def start(settings: Settings, name: str, topology: Path, metrics_port: int, instance_id: str = "1",
          env: dict[str, str] | None = None) -> Job:
    """Start `parcel run topology` detached unless it already runs; returns the job."""
    return start_command(settings, name, [str(ROOT / "cli.py"), "run", str(topology), "--metrics-port",
                                          str(metrics_port), "--instance-id", instance_id],
                         metrics_port, env=env)


def start_command(settings: Settings, name: str, args: list[str], metrics_port: int = 0,
                  env: dict[str, str] | None = None) -> Job:
    """Start `python ARGS` detached (own session, pid file, log) unless it already runs."""
    current = job(settings, name, metrics_port)
    if current.running:
        return current
    pid_file, log = _paths(settings, name)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    pid_file.write_text(str(proc.pid))
    time.sleep(1.0)
    if proc.poll() is not None:
        raise RuntimeError(f"job {name} exited at start ({proc.returncode}); see {log}")
    return Job(name, proc.pid, log, metrics_port)


def stop_all(settings: Settings, timeout: float = 30.0) -> list[str]:
    stopped = []
    for pid_file in sorted((Path(settings.stack.dir) / "jobs").glob("*.pid")):
        j = job(settings, pid_file.stem)
        if j.running and j.pid is not None:
            os.killpg(j.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while j.running and time.monotonic() < deadline:
                time.sleep(0.3)
            if j.running:
                os.killpg(j.pid, signal.SIGKILL)
            stopped.append(j.name)
        pid_file.unlink(missing_ok=True)
    return stopped
