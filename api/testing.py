"""Processes for tests and the benchmark on the real stack: the API under uvicorn on a free port, and
the driver-locations topology in its own consumer group (started at the topic's end)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from config.settings import ROOT, Settings

DRIVER_TOPOLOGY = ROOT / "topologies" / "driver_locations.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(n: int, low: int = 20_000, high: int = 32_000) -> int:
    """The first of `n` consecutive free ports, for jobs that take `port + k` (the main job's
    streaming jobs do). Picked below Linux's ephemeral range (32768-60999): there the neighbour of a
    free port is often some client's outgoing connection, or becomes one before the job binds it."""
    import random

    for _ in range(200):
        base = random.randrange(low, high - n)
        socks: list[socket.socket] = []
        try:
            for k in range(n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports in {low}-{high}")


class Process:
    """A child in its own process group, logging to a file; stop() is SIGTERM then SIGKILL."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd, self.log, self.env = cmd, log, env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> Process:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **extra_env})
        return self

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown hook, no final commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{' '.join(self.cmd[1:4])} exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text(errors='replace')[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


def api_server(log: Path, *, port: int | None = None, env: dict[str, str] | None = None) -> tuple[Process, str]:
    """`parcel api serve` on a free port; returns once /healthz answers."""
    from api.cli import wait_healthy

    port = port or free_port()
    p = Process([sys.executable, "cli.py", "api", "serve", "--port", str(port), "--log-level", "warning"], log,
                env).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=60, proc=p.proc)
    except RuntimeError as exc:
        p.stop()
        raise AssertionError(f"{exc}:\n{log.read_text(errors='replace')[-3000:]}") from None
    return p, url


def start_at_end(settings: Settings, group: str, topic: str) -> None:
    """Commit the topic's end offsets for a new group: the job reads only what comes next."""
    from topologies.lag import commit_end_offsets

    commit_end_offsets(settings.kafka.bootstrap_servers, group, topic)


def topology_process(topology: Path, group: str, state_dir: Path, log: Path, *, instance_id: str | None = "1",
                     env: dict[str, str] | None = None) -> Process:
    """`parcel run TOPOLOGY` in a given consumer group and state dir, metrics off (not started)."""
    return Process([sys.executable, "cli.py", "run", str(topology), "--metrics-port", "0", "--group", group,
                    "--state-dir", str(state_dir), *(["--instance-id", instance_id] if instance_id else [])],
                   log, env)


def driver_locations_job(settings: Settings, workdir: Path, *, env: dict[str, str] | None = None,
                         group: str | None = None) -> Process:
    """The driver-locations topology in a fresh consumer group that starts at the topic's end."""
    group = group or f"test-driver-locations-{uuid.uuid4().hex[:8]}"
    start_at_end(settings, group, settings.kafka.topics["driver_locations"])
    return topology_process(DRIVER_TOPOLOGY, group, workdir / group, workdir / f"{group}.log", instance_id=None,
                            env=env).start()


def wait_for(condition: Any, timeout: float, what: str, *procs: Process, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            p.assert_alive()
        got = condition()
        if got:
            return got
        time.sleep(every)
    tails = "\n".join(f"--- {p.log}:\n{p.log.read_text(errors='replace')[-2000:]}" for p in procs)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
