"""`parcel api ...`: serve the HTTP API and tracking page with uvicorn, in the foreground or as a
background job of the local machine (pid file and log under .stack/jobs, stopped by `parcel down`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

from config.settings import ROOT, Settings, get_settings
from topologies.jobs import Job, job

api_app = typer.Typer(help="HTTP API and tracking page", no_args_is_help=True)

JOB_NAME = "api"


@api_app.command("serve")
def serve(
    host: str = typer.Option(None, help="default: api.host"),
    port: int = typer.Option(None, help="default: api.port"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (each holds its own live feed)"),
    log_level: str = typer.Option("info"),
) -> None:
    """Serve the API in the foreground (uvicorn)."""
    import uvicorn

    s = get_settings()
    uvicorn.run("api.app:default_app", factory=True, host=host or s.api.host, port=port or s.api.port,
                workers=workers, log_level=log_level, proxy_headers=False)


def base_url(settings: Settings) -> str:
    return (settings.api.public_url or f"http://{settings.api.host}:{settings.api.port}").rstrip("/")


def wait_healthy(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until /healthz answers and the live feed listens (a page opened then misses nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the API exited at start ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200 and json.loads(r.read()).get("live"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not answer {url}/healthz within {timeout:.0f} s")


def start_background(settings: Settings, *, port: int | None = None) -> Job:
    """Start `parcel api serve` detached unless it already runs (as topologies/jobs.py does for
    topologies): .stack/jobs/api.pid and api.log; `parcel down` stops it with the other jobs."""
    current = job(settings, JOB_NAME)
    if current.running:
        return current
    d = Path(settings.stack.dir) / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    log = d / f"{JOB_NAME}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "api", "serve", "--port", str(port or settings.api.port),
             "--log-level", "warning"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    (d / f"{JOB_NAME}.pid").write_text(str(proc.pid))
    try:
        wait_healthy(f"http://{settings.api.host}:{port or settings.api.port}", proc=proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {log}") from None
    return Job(JOB_NAME, proc.pid, log, 0)


@api_app.command("start")
def start() -> None:
    """Start the API in the background (idempotent); prints its URL and log."""
    s = get_settings()
    j = start_background(s)
    typer.echo(f"api running (pid {j.pid}) at {base_url(s)}  log {j.log}")
