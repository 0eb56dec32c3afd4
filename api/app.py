"""The HTTP API (FastAPI, versioned under /v1, OpenAPI at /openapi.json) and the tracking page.

Requests in; out: Kafka records (`scan-events`, `driver-locations`) for writes — the topologies
decide and persist — and reads from PostgreSQL, Cassandra and Redis. Routes:

  public (rate limited, never personal data)   GET /t/{tn}, /v1/track/{tn}, /v1/track/{tn}/poll,
                                                /v1/track/{tn}/stream (SSE)
  driver key                                    POST /v1/drivers/{driver_id}/location, POST /v1/scans
  operations key                                POST /v1/shipments, GET /v1/dispatch/drivers
  /metrics, /healthz, and the notifier and routing routers.

`create_app(settings)` builds everything; connections open lazily (first use) so the app object is
cheap to make in tests, and the live feed (api/live.py) starts with the server's lifespan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from sse_starlette.sse import EventSourceResponse

from api.auth import require
from api.live import LiveHub
from api.tracking import (
    Shipment,
    TrackingStore,
    driver_move_view,
    public_view,
    status_event_view,
)
from config.settings import Settings
from models.domain import TARGET_STATUS, EventType, ScanEvent, ServiceLevel, Status, is_allowed
from operators.driver_location import Heartbeat, parse_heartbeat
from operators.registry import MessageMeta, Reject
from operators.validate import ValidateConfig, validate_scan
from sinks.stores import kafka_producer_config

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"
NODE_MODULES = WEB / "node_modules"


class ApiMetrics:
    """Prometheus metrics on the app's own registry (tests stay isolated; /metrics serves it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("parcel_api_requests_total", "HTTP requests", ["route", "method", "code"],
                                registry=registry)
        self.latency = Histogram("parcel_api_request_seconds", "HTTP request time", ["route"], registry=registry)
        self.heartbeats = Counter("parcel_api_heartbeats_total", "driver heartbeats by outcome", ["outcome"],
                                  registry=registry)
        self.scans = Counter("parcel_api_scans_total", "submitted scans by outcome", ["outcome"], registry=registry)
        self.streams = Gauge("parcel_api_sse_streams", "open SSE streams", registry=registry)


class Context:
    """Per-app dependencies, created on first use (no I/O at import or app creation)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = TrackingStore(settings)
        self.hub = LiveHub(settings)
        self._producer: Any = None
        self._facilities: Any = None

    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(kafka_producer_config(self.settings.kafka.bootstrap_servers,
                                                            {"enable.idempotence": True, "linger.ms": 5}))
        return self._producer

    def facilities(self) -> Any:
        if self._facilities is None:
            from sinks.directories import PostgresFacilities

            self._facilities = PostgresFacilities(self.settings)
        return self._facilities

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        self.store.close()


def _error(code: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=code)


def _base_url(settings: Settings, request: Request | None = None) -> str:
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    if request is not None:
        return str(request.base_url).rstrip("/")
    return f"http://{settings.api.host}:{settings.api.port}"


# --- bodies (documented in OpenAPI) --------------------------------------------------------------


class ShipmentIn(BaseModel):
    service_level: ServiceLevel | None = None
    origin_facility_id: str | None = Field(default=None, max_length=64)
    destination_facility_id: str | None = Field(default=None, max_length=64)


class HeartbeatIn(BaseModel):
    """A GPS fix; lat/lng are checked by the same rules as the driver-locations topology."""

    lat: Any = Field(description="degrees, -85.05..85.05")
    lng: Any = Field(description="degrees, -180..180")
    recorded_at: datetime | None = Field(default=None, description="RFC 3339 with zone; default: now")
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    route_id: str | None = None


def compact_view(s: Shipment, base_url: str) -> dict[str, Any]:
    """public_view without the timeline: the SSE snapshot and the polling fallback."""
    view = public_view(s, base_url)
    view.pop("events", None)
    return view


def create_app(settings: Settings, *, live: bool = True) -> FastAPI:
    """The app: routes, rate limits, metrics, static assets; `live=False` skips the live feed."""
    ctx = Context(settings)
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    limiter = Limiter(key_func=get_remote_address, storage_uri=settings.api.rate_limit_storage)
    # One budget per client address across every public route and tracking number: a per-path limit
    # (slowapi's default keys by path) would let a scraper enumerate tracking numbers unhindered.
    public_limit = limiter.shared_limit(settings.api.public_rate_limit, scope="public")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if live:
            await ctx.hub.start()
        try:
            yield
        finally:
            if live:
                await ctx.hub.stop()
            await run_in_threadpool(ctx.close)

    app = FastAPI(title="parcel tracking API", version="1.0.0", lifespan=lifespan,
                  description="Shipments, scans, tracking (JSON, SSE), driver locations, dispatch search.")
    app.state.settings = settings
    app.state.ctx = ctx
    app.state.limiter = limiter
    app.state.metrics = metrics
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        metrics.requests.labels(name, request.method, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - t0)
        return response

    templates = Jinja2Templates(directory=str(WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")
    # The map library and the offline US outline come from npm (`make web`), served by us: no CDN.
    for mount, sub in (("leaflet", "leaflet/dist"), ("topojson", "topojson-client/dist"), ("us-atlas", "us-atlas")):
        app.mount(f"/vendor/{mount}", StaticFiles(directory=str(NODE_MODULES / sub), check_dir=False), name=mount)

    # --- operations ------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        # live: the notifications consumer has its partitions and the driver channel is subscribed
        return {"status": "ok", "live": live and ctx.hub.ready}

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        metrics.streams.set(ctx.hub.streams)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/shipments", status_code=201, tags=["shipments"])
    def create_shipment(body: ShipmentIn, request: Request, _: str = Depends(require("operations"))) -> Any:
        """Create a shipment and its label: a PostgreSQL row, then LABEL_CREATED on scan-events."""
        from api.labels import LabelError, create_labels

        try:
            (label,) = create_labels(settings, 1, service_level=body.service_level, origin=body.origin_facility_id,
                                     destination=body.destination_facility_id)
        except LabelError as exc:
            return _error(422, "invalid_label", str(exc))
        base = _base_url(settings, request)
        return {**label.to_json(), "tracking_url": f"{base}/t/{label.tracking_number}"}

    @app.get("/v1/dispatch/drivers", tags=["dispatch"])
    def dispatch_drivers(
        lat: float = Query(ge=-85.05112878, le=85.05112878), lng: float = Query(ge=-180, le=180),
        radius_km: float = Query(5.0, gt=0, le=500), limit: int = Query(20, ge=1, le=500),
        day: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="fleet date, default today (UTC)"),
        _: str = Depends(require("operations")),
    ) -> dict[str, Any]:
        """Drivers with a live position within `radius_km` (GEOSEARCH on fleet:{date}), nearest first."""
        d = day or datetime.now(UTC).strftime("%Y-%m-%d")
        return {"day": d, "drivers": ctx.store.drivers_near(lat, lng, radius_km, d, limit)}

    # --- driver apps ------------------------------------------------------------------------

    @app.post("/v1/drivers/{driver_id}/location", status_code=202, tags=["drivers"])
    def driver_location(driver_id: str, body: HeartbeatIn, _: str = Depends(require("driver"))) -> Any:
        """Queue one GPS heartbeat on driver-locations (fire-and-forget; the topology writes Redis GEO)."""
        now = datetime.now(UTC)
        data = body.model_dump(exclude_none=True, mode="json")
        data.setdefault("recorded_at", now.isoformat())
        data["driver_id"] = driver_id
        hb = parse_heartbeat(data, now=now)
        if isinstance(hb, Reject):
            metrics.heartbeats.labels(hb.reason).inc()
            return _error(422, hb.reason, _reason_text(hb), detail=hb.detail)
        publish_heartbeat(ctx, hb)
        metrics.heartbeats.labels("queued").inc()
        return {"queued": True, "driver_id": driver_id, "recorded_at": hb.recorded_at.isoformat()}

    scan_schema = ScanEvent.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post("/v1/scans", status_code=202, tags=["scans"], openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": scan_schema}}},
        "responses": {"409": {"description": "the state machine forbids this scan now"},
                      "422": {"description": "invalid payload, with the validator's reason"}}})
    async def submit_scan(request: Request, _: str = Depends(require("driver"))) -> Any:
        """Validate like the pipeline, check the state machine against PostgreSQL, queue on scan-events."""
        raw = await request.body()
        return await run_in_threadpool(_submit_scan, ctx, raw, metrics)

    # --- public -----------------------------------------------------------------------------

    @app.get("/v1/track/{tracking_number}", tags=["tracking"])
    @public_limit
    def track(request: Request, tracking_number: str) -> Any:
        """Status, progress steps, ETA, the timeline; the driver only while OUT_FOR_DELIVERY."""
        s = ctx.store.load(tracking_number)
        if s is None:
            return _error(404, "unknown_tracking_number", f"no shipment has tracking number {tracking_number!r}")
        return public_view(s, _base_url(settings, request))

    @app.get("/v1/track/{tracking_number}/poll", tags=["tracking"])
    @public_limit
    def track_poll(request: Request, tracking_number: str) -> Any:
        """The polling fallback of the SSE stream: status, ETA and driver, no timeline (cheap)."""
        s = ctx.store.load(tracking_number, with_events=False)
        if s is None:
            return _error(404, "unknown_tracking_number", f"no shipment has tracking number {tracking_number!r}")
        return compact_view(s, _base_url(settings, request))

    @app.get("/v1/track/{tracking_number}/stream", tags=["tracking"])
    @public_limit
    async def track_stream(request: Request, tracking_number: str) -> Any:
        """Server-Sent Events: `snapshot` first, then `status` (scans) and `driver` (GPS moves)."""
        s = await run_in_threadpool(ctx.store.load, tracking_number, with_events=False)
        if s is None:
            return _error(404, "unknown_tracking_number", f"no shipment has tracking number {tracking_number!r}")
        return EventSourceResponse(_stream(ctx, s, _base_url(settings, request), metrics), ping=15)

    @app.get("/t/{tracking_number}", response_class=HTMLResponse, include_in_schema=False)
    @public_limit
    def page(request: Request, tracking_number: str) -> Any:
        s = ctx.store.load(tracking_number)
        view = public_view(s, _base_url(settings, request)) if s is not None else None
        return templates.TemplateResponse(
            request, "track.html",
            {"view": view, "tracking_number": tracking_number, "tile_url": settings.api.tile_url,
             "tile_attribution": settings.api.tile_attribution,
             "poll_interval_s": max(5.0, min(settings.api.heartbeat_interval_s, 30.0))},
            status_code=200 if view is not None else 404)

    from notifier.http import router as notifier_router
    from routing.http import router as routing_router

    app.include_router(notifier_router)
    app.include_router(routing_router)
    return app


def _reason_text(r: Reject) -> str:
    detail = r.detail
    if isinstance(detail, dict):
        if "error" in detail:
            return f"{r.reason}: {detail['error']}"
        errs = detail.get("errors")
        if errs:
            return f"{r.reason}: " + "; ".join(f"{e['field']}: {e['error']}" for e in errs)
    return r.reason


def publish_heartbeat(ctx: Context, hb: Heartbeat) -> None:
    producer = ctx.producer()
    producer.produce(ctx.settings.kafka.topics["driver_locations"], key=hb.driver_id.encode(),
                     value=json.dumps(hb.to_json()).encode())
    producer.poll(0)


_SCAN_VALIDATE = ValidateConfig(require_key=False, reference_time="clock")


def _submit_scan(ctx: Context, raw: bytes, metrics: ApiMetrics) -> JSONResponse:
    now = datetime.now(UTC)
    meta = MessageMeta(topic="http", partition=-1, offset=-1, key=None, timestamp_ms=int(now.timestamp() * 1000))
    outcome = validate_scan(raw, meta, config=_SCAN_VALIDATE, clock=lambda: now, facilities=ctx.facilities())
    if isinstance(outcome, Reject):
        metrics.scans.labels(outcome.reason).inc()
        return _error(422, outcome.reason, _reason_text(outcome), detail=outcome.detail)
    event = outcome.value
    current = ctx.store.status_of(event.shipment_id)
    if current is None:
        metrics.scans.labels("unknown_shipment").inc()
        return _error(404, "unknown_shipment", f"no shipment {event.shipment_id}; create it with POST /v1/shipments",
                      shipment_id=str(event.shipment_id))
    requested = TARGET_STATUS[event.event_type]
    # LABEL_CREATED only ever creates the state (POST /v1/shipments does that): never an edge.
    if event.event_type is EventType.LABEL_CREATED or not is_allowed(Status(current), requested):
        metrics.scans.labels("invalid_transition").inc()
        return _error(409, "invalid_transition", f"{event.event_type.value} is not allowed while {current}",
                      shipment_id=str(event.shipment_id), current_status=current,
                      requested_status=requested.value)
    # Checked against PostgreSQL as of now; the pipeline re-checks in order and dead-letters a scan
    # that a concurrent one made invalid, so the 202 means "queued", not "accepted".
    producer = ctx.producer()
    errors: list[Any] = []
    producer.produce(ctx.settings.kafka.topics["scan_events"], key=str(event.shipment_id).encode(),
                     value=json.dumps(event.to_json_dict()).encode(),
                     on_delivery=lambda err, _msg: errors.append(err) if err else None)
    left = producer.flush(10)
    if left or errors:
        metrics.scans.labels("kafka_unavailable").inc()
        return _error(503, "kafka_unavailable", "the scan could not be queued; retry with the same event_id")
    metrics.scans.labels("queued").inc()
    return JSONResponse({"queued": True, "event_id": str(event.event_id), "shipment_id": str(event.shipment_id),
                         "current_status": current, "requested_status": requested.value}, status_code=202)


async def _stream(ctx: Context, s: Shipment, base_url: str, metrics: ApiMetrics) -> AsyncIterator[dict[str, str]]:
    hub = ctx.hub
    q = hub.queue()
    tn_key = f"tn:{s.tracking_number}"
    driver_id = s.driver.driver_id if s.driver is not None else None
    hub.subscribe(tn_key, q)
    if driver_id:
        hub.subscribe(f"driver:{driver_id}", q)
    dest = s.dest
    metrics.streams.inc()
    try:
        yield {"event": "snapshot", "data": json.dumps(compact_view(s, base_url))}
        while True:
            kind, data = await q.get()
            if kind == "status":
                status = data.get("status")
                new_driver = data.get("driver_id") if status == Status.OUT_FOR_DELIVERY else None
                if status == Status.OUT_FOR_DELIVERY and new_driver is None:
                    progress = await run_in_threadpool(ctx.store.route_progress, s.shipment_id)
                    new_driver = getattr(progress, "driver_id", None)
                if new_driver != driver_id:
                    if driver_id:
                        hub.unsubscribe(f"driver:{driver_id}", q)
                    if new_driver:
                        hub.subscribe(f"driver:{new_driver}", q)
                    driver_id = new_driver
                yield {"event": "status", "data": json.dumps(status_event_view(data))}
            elif kind == "driver" and data.get("driver_id") == driver_id:
                yield {"event": "driver", "data": json.dumps(driver_move_view(data, dest))}
    finally:
        hub.unsubscribe(tn_key, q)
        if driver_id:
            hub.unsubscribe(f"driver:{driver_id}", q)
        metrics.streams.dec()


def default_app() -> FastAPI:
    """uvicorn factory (`uvicorn --factory api.app:default_app`): settings from file + environment."""
    from config.settings import get_settings

    return create_app(get_settings())


__all__ = ["create_app", "default_app", "publish_heartbeat"]
