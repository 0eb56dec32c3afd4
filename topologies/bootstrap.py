"""The composition root (cosmicpython's bootstrap): settings in, the `Resources` every step and sink
of a topology needs out — PostgreSQL-backed directories, the ETA estimator, metrics on their own
registry served at /metrics, and the tracking-number secret. Built once per job at start-up.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from config.settings import Settings
from operators.metrics import PipelineMetrics
from operators.registry import Resources

log = logging.getLogger(__name__)

SECRET_ENV = "PARCEL_TRACKING_SECRET"


def tracking_secret(settings: Settings) -> str:
    """The HMAC key for derived tracking numbers: the environment's, else a local one kept under
    the stack dir (created once), so a developer's replays derive the same numbers."""
    value = os.environ.get(SECRET_ENV)
    if value:
        return value
    path = Path(settings.stack.dir) / "tracking_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def resources_for(settings: Settings, topology: str, *, serve_metrics: bool = True,
                  metrics_port: int | None = None) -> Resources:
    from models.eta import load_estimator
    from sinks.directories import PostgresFacilities, PostgresShipments

    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, topology)
    port = settings.metrics.port if metrics_port is None else metrics_port
    if serve_metrics and port:
        start_http_server(port, addr="127.0.0.1", registry=registry)
        log.info("metrics for %s on http://127.0.0.1:%d/metrics", topology, port)
    facilities = PostgresFacilities(settings)
    return Resources(
        settings=settings,
        facilities=facilities,
        facility_lookup=facilities,
        shipments=PostgresShipments(settings),
        estimator=load_estimator(settings.eta or None, routes=True),
        metrics=metrics,
        secrets={SECRET_ENV: tracking_secret(settings)},
    )
