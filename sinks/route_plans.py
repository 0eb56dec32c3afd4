"""route_plans: RouteEvent batches in (operators/route_plan.py) → route_stops rows with sequence and
planned arrivals out (tables of migration 0003, read through routing/store.py).

Per checkpoint batch, per route, in one PostgreSQL transaction holding the route's row lock:
* OUT_FOR_DELIVERY adds the shipment to the driver's route (the first one creates the route: depot =
  the scan's delivery station, shift from the scan's time for `shift_hours`), with the delivery window
  of its latest 'window' reschedule request when there is one;
* DELIVERED marks the stop done (no re-plan when it was the next planned stop: the order ahead is
  unchanged; a re-plan when the driver skipped ahead, so the visited prefix stays in visit order);
* a failed attempt marks it attempted and re-plans the rest; a reschedule sets the new window, or
  takes the stop out of the order for a pickup, and re-plans;
* the route is re-planned only if one of these changed something, with visited stops fixed.

Idempotent under replay (the engine replays a checkpoint after a crash): adding a stop already on
the route, marking a visited stop again, or setting the same window changes nothing, so nothing is
re-planned; and a batch's writes commit together or not at all. An unreachable PostgreSQL raises
backpressure (pause, seek back, retry).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import psycopg
from pydantic import Field
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from models.domain import EventType, ServiceLevel, Status
from models.eta.base import EtaRequest
from operators.registry import BuildContext, StepConfig, sink
from operators.route_plan import RouteEvent
from routing.models import SpeedProfile
from routing.planner import plan as plan_route
from routing.replan import PICKUP, RouteState, StopState, build_request, rows_from_plan
from routing.store import ATTEMPTED, DONE, UNSERVED, RouteRow, RouteStore

log = logging.getLogger(__name__)

STOPS_SQL = """
SELECT rs.shipment_id, s.dest_lat, s.dest_lng, rs.status, rs.unserved_reason, rs.window_start, rs.window_end,
       rs.visited_at, rs.seq, rs.planned_arrival, rs.planned_departure
FROM route_stops rs JOIN shipments s ON s.shipment_id = rs.shipment_id
WHERE rs.route_id = %s ORDER BY rs.added_at, rs.shipment_id
"""

# The latest 'window' reschedule of each shipment (the notifier records the customer's choice there).
WINDOWS_SQL = """
SELECT DISTINCT ON (shipment_id) shipment_id, window_start, window_end
FROM reschedule_requests WHERE shipment_id = ANY(%s::uuid[]) AND kind = 'window'
ORDER BY shipment_id, created_at DESC
"""


class RoutePlansConfig(StepConfig):
    shift_hours: float = Field(default=10.0, gt=0, le=24, description="A route's shift from its first scan")
    service_s: int = Field(default=120, ge=0, description="Seconds on site per stop")
    time_limit_s: float = Field(default=2.0, gt=0, le=60, description="Solver budget per re-plan")
    speed_kmh: float = Field(default=28.0, gt=0)
    detour_factor: float = Field(default=1.35, ge=1.0)
    retry_after_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: int = Field(default=5, ge=1)


def _skipped_ahead(conn: psycopg.Connection[Any], route_id: str, shipment_id: uuid.UUID) -> bool:
    """True if a stop planned before this one is still open (the driver left the planned order)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM route_stops o, route_stops me WHERE me.route_id = %s AND me.shipment_id = %s "
        "AND o.route_id = me.route_id AND o.status = 'planned' AND (me.seq IS NULL OR o.seq < me.seq))",
        (route_id, shipment_id)).fetchone()
    return bool(row and row[0])


@sink("route_plans", config=RoutePlansConfig)
class RoutePlansSink(BatchingSink):
    """Keep each driver route's stops and their planned order in PostgreSQL, re-planning on changes."""

    def __init__(self, ctx: BuildContext, config: RoutePlansConfig) -> None:
        super().__init__()
        self._ctx = ctx
        self._config = config
        self._store: RouteStore | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._speed = SpeedProfile(default_kmh=config.speed_kmh, detour_factor=config.detour_factor)

    def setup(self) -> None:
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._store is None:
            self._store = RouteStore(self._ctx.require("settings"), connect_timeout_s=self._config.connect_timeout_s)
        if self._conn is None or self._conn.closed:
            self._conn = self._store.connect()
            self._conn.autocommit = True  # each route's writes run in an explicit conn.transaction()
        return self._conn

    def write(self, batch: SinkBatch) -> None:
        events: list[RouteEvent] = [item.value for item in batch]
        if not events:
            return
        t0 = time.perf_counter()
        try:
            conn = self._connect()
            by_route: dict[str, list[RouteEvent]] = defaultdict(list)
            for ev in events:
                route_id = ev.route_id
                if route_id is None:
                    route_id = RouteStore.route_of(conn, ev.shipment_id)
                if route_id is None:
                    log.info("route event %s for shipment %s on no route: ignored", ev.kind, ev.shipment_id)
                    continue
                by_route[route_id].append(ev)
            for route_id, route_events in by_route.items():
                with conn.transaction():
                    self._apply(conn, route_id, route_events)
        except psycopg.OperationalError as exc:
            log.warning("postgres write failed (%s); backing off %.1fs", exc, self._config.retry_after_s)
            if self._conn is not None:
                self._conn.close()
            raise SinkBackpressureError(retry_after=self._config.retry_after_s) from exc
        metrics = self._ctx.resources.metrics
        if metrics is not None:
            metrics.sink_flush(self._ctx.step_id, time.perf_counter() - t0, len(events))

    def _apply(self, conn: psycopg.Connection[Any], route_id: str, events: list[RouteEvent]) -> None:
        route, stops = RouteStore.load_route(conn, route_id)
        if route is None:
            first = next((e for e in events if e.kind == "add"), None)
            if first is None:
                log.info("events for unknown route %s ignored", route_id)
                return
            route = RouteRow(route_id=route_id, driver_id=first.driver_id or "", depot_facility_id=first.facility_id,
                             started_at=first.at, shift_end=first.at + timedelta(hours=self._config.shift_hours),
                             plan_version=0, last_source=None)
            RouteStore.upsert_route(conn, route)
            route, stops = RouteStore.load_route(conn, route_id)
            assert route is not None
        current = {s.shipment_id: s for s in stops}
        replan = False
        added: list[uuid.UUID] = []
        for ev in events:
            if ev.kind == "add":
                if RouteStore.add_stop(conn, route_id, route.driver_id, ev.shipment_id, ev.at):
                    added.append(ev.shipment_id)
                    replan = True
            elif ev.shipment_id not in current and ev.shipment_id not in added:
                log.info("%s for shipment %s, which is not on route %s: ignored", ev.kind, ev.shipment_id, route_id)
            elif ev.kind == "delivered":
                # In the planned order nothing ahead changes; out of order (a stop planned earlier is still
                # open), the visited prefix and the driver's position changed: re-plan.
                if RouteStore.mark_visited(conn, route_id, ev.shipment_id, DONE, ev.at):
                    replan |= _skipped_ahead(conn, route_id, ev.shipment_id)
            elif ev.kind == "attempted":
                replan |= RouteStore.mark_visited(conn, route_id, ev.shipment_id, ATTEMPTED, ev.at)
            elif ev.kind == "window":
                old = current.get(ev.shipment_id)
                if old is None or (old.window_start, old.window_end) != (ev.window_start, ev.window_end) or (
                        old.status == UNSERVED):
                    RouteStore.set_windows(conn, route_id, {ev.shipment_id: (ev.window_start, ev.window_end)})
                    conn.execute("UPDATE route_stops SET status = 'planned', unserved_reason = NULL "
                                 "WHERE route_id = %s AND shipment_id = %s AND status = 'unserved'",
                                 (route_id, ev.shipment_id))
                    replan = True
            elif ev.kind == "pickup":
                cur = conn.execute(
                    "UPDATE route_stops SET status = 'unserved', unserved_reason = %s, seq = NULL, "
                    "planned_arrival = NULL, planned_departure = NULL, updated_at = now() "
                    "WHERE route_id = %s AND shipment_id = %s AND status NOT IN ('done', 'attempted') "
                    "AND unserved_reason IS DISTINCT FROM %s", (PICKUP, route_id, ev.shipment_id, PICKUP))
                replan |= cur.rowcount == 1
        if added:
            rows = conn.execute(WINDOWS_SQL, (added,)).fetchall()
            RouteStore.set_windows(conn, route_id, {r[0]: (r[1], r[2]) for r in rows})
        if replan:
            self._replan(conn, route, max(e.at for e in events), events[-1].source)

    def _replan(self, conn: psycopg.Connection[Any], route: RouteRow, now: datetime, source: str) -> None:
        depot = conn.execute("SELECT lat, lng FROM facilities WHERE facility_id = %s",
                             (route.depot_facility_id,)).fetchone()
        if depot is None:
            log.warning("route %s: depot %s unknown; not planned", route.route_id, route.depot_facility_id)
            return
        stops = [StopState(*r) for r in conn.execute(STOPS_SQL, (route.route_id,)).fetchall()]
        state = RouteState(route.route_id, route.driver_id, depot[0], depot[1], route.started_at, route.shift_end,
                           stops)
        request, rows = build_request(state, now, service_s=self._config.service_s, speed=self._speed,
                                      time_limit_s=self._config.time_limit_s)
        engine, objective = "none", 0.0
        if request is not None:
            result = plan_route(request)
            rows += rows_from_plan(state, result)
            engine, objective = result.engine, result.objective
        RouteStore.save_plan(conn, route.route_id, rows, engine=engine, objective=objective, planned_at=now,
                             source=source)
        refreshed = self._refresh_etas(conn, rows, now)
        log.info("route %s planned (%s): %d stops, %d unserved, %d ETAs from the plan", route.route_id, engine,
                 sum(1 for r in rows if r.seq is not None), sum(1 for r in rows if r.seq is None), refreshed)

    def _refresh_etas(self, conn: psycopg.Connection[Any], rows: list[Any], now: datetime) -> int:
        """Each open stop's ETA from the new plan: the estimator gets its planned arrival and the stops
        ahead of it (remaining_stops) and answers from the route (models/eta/route.py)."""
        estimator = self._ctx.resources.estimator
        if estimator is None:
            return 0
        stops = RouteStore.open_stops_out_for_delivery(conn, rows)
        if not stops:
            return 0
        requests = [EtaRequest(
            shipment_id=str(st.shipment_id), service_level=ServiceLevel(st.service_level),
            status=Status.OUT_FOR_DELIVERY, event_type=EventType.OUT_FOR_DELIVERY, event_at=now,
            shipment_created_at=st.created_at, dest_lat=st.dest_lat, dest_lng=st.dest_lng,
            attempt_count=st.attempt_count, weight_kg=st.weight_grams / 1000.0 if st.weight_grams else None,
            remaining_stops=st.stops_ahead, planned_arrival=st.planned_arrival,
        ) for st in stops]
        etas = estimator.estimate(requests)
        return RouteStore.set_route_etas(conn, [(st.shipment_id, e) for st, e in zip(stops, etas, strict=True)])
