"""Route plans in PostgreSQL (tables `routes` and `route_stops`, migration 0003): the read side the
tracking page and the ETA use ("you are stop 7 of 23", stops remaining), and the write side the
route_planner topology's sink uses.

Why one module: the meaning of a stop's status ("done", "attempted" count as visited; "planned" is
still ahead; "unserved" has no place in the order) must be the same for readers and the writer.
Connections are short-lived (one per call): reads are rare (a page view, an ETA batch) and this keeps
the module free of pool lifecycle; a caller with many ids uses `progress_many`, one query.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from config.settings import Settings

# Stop statuses. Visited stops keep their place in the order and are never re-sequenced.
PLANNED = "planned"
DONE = "done"  # DELIVERED
ATTEMPTED = "attempted"  # DELIVERY_ATTEMPTED or a delivery-failure EXCEPTION: visited, not delivered
UNSERVED = "unserved"  # the planner could not fit it (reason in unserved_reason)
VISITED = (DONE, ATTEMPTED)


@dataclass(frozen=True, slots=True)
class StopProgress:
    """Where one shipment stands on its driver's route."""

    route_id: str
    driver_id: str
    stop_number: int  # 1-based place in the route's order (visited stops included)
    total_stops: int  # stops in the order (unserved ones excluded)
    stops_remaining: int  # stops before this one not yet visited
    planned_arrival: datetime | None  # when service is planned to start (after any wait for a window)
    status: str = PLANNED  # this stop's own status: planned, done, attempted


PROGRESS_SQL = """
WITH mine AS (
    SELECT DISTINCT ON (rs.shipment_id) rs.shipment_id, rs.route_id, rs.driver_id, rs.seq, rs.planned_arrival,
           rs.status
    FROM route_stops rs
    WHERE rs.shipment_id = ANY(%s::uuid[]) AND rs.seq IS NOT NULL
    ORDER BY rs.shipment_id, rs.added_at DESC, rs.route_id DESC
)
SELECT m.shipment_id, m.route_id, m.driver_id, m.seq, m.planned_arrival, m.status,
       (SELECT count(*) FROM route_stops o WHERE o.route_id = m.route_id AND o.seq IS NOT NULL) AS total,
       (SELECT count(*) FROM route_stops o WHERE o.route_id = m.route_id AND o.seq < m.seq
                                             AND o.status = 'planned') AS ahead
FROM mine m
"""


@dataclass(frozen=True, slots=True)
class RouteRow:
    route_id: str
    driver_id: str
    depot_facility_id: str | None
    started_at: datetime
    shift_end: datetime
    plan_version: int
    last_source: str | None


@dataclass(frozen=True, slots=True)
class StopRow:
    shipment_id: uuid.UUID
    seq: int | None
    status: str
    planned_arrival: datetime | None
    window_start: datetime | None
    window_end: datetime | None
    visited_at: datetime | None
    added_at: datetime


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One stop's outcome of a (re-)plan, as the writer stores it."""

    shipment_id: uuid.UUID
    seq: int | None
    planned_arrival: datetime | None
    planned_departure: datetime | None
    status: str
    unserved_reason: str | None = None


@dataclass(frozen=True, slots=True)
class OpenStop:
    """A planned stop still ahead whose shipment is out for delivery: what its route ETA needs."""

    shipment_id: uuid.UUID
    stops_ahead: int  # planned stops before it on the route
    planned_arrival: datetime
    service_level: str
    created_at: datetime
    dest_lat: float | None
    dest_lng: float | None
    attempt_count: int
    weight_grams: int | None


def _as_uuid(v: uuid.UUID | str) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


class RouteStore:
    """Reads (and, for the planner sink, writes) route plans in PostgreSQL."""

    def __init__(self, settings: Settings, *, connect_timeout_s: int = 5) -> None:
        self._dsn = settings.postgres.dsn
        self._timeout = connect_timeout_s

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._dsn, connect_timeout=self._timeout)

    # --- read side (tracking page, ETA) ---------------------------------------------------------

    def progress(self, shipment_id: uuid.UUID | str) -> StopProgress | None:
        """The shipment's place on its latest planned route; None if it is on no route (or unserved)."""
        sid = _as_uuid(shipment_id)
        return self.progress_many([sid]).get(sid)

    def progress_many(self, shipment_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, StopProgress]:
        """`progress` for many shipments in one query; shipments on no route are absent."""
        ids = list({_as_uuid(s) for s in shipment_ids})
        if not ids:
            return {}
        with self.connect() as conn:
            rows = conn.execute(PROGRESS_SQL, (ids,)).fetchall()
        return {
            r[0]: StopProgress(
                route_id=r[1], driver_id=r[2], stop_number=r[3], total_stops=int(r[6]), stops_remaining=int(r[7]),
                planned_arrival=r[4], status=r[5],
            )
            for r in rows
        }

    # --- write side (sinks/route_plans.py) -----------------------------------------------------

    @staticmethod
    def load_route(conn: psycopg.Connection[Any], route_id: str) -> tuple[RouteRow | None, list[StopRow]]:
        """The route and its stops, locked for update (one writer per route at a time)."""
        with conn.cursor(row_factory=dict_row) as cur:
            r = cur.execute(
                "SELECT route_id, driver_id, depot_facility_id, started_at, shift_end, plan_version, last_source "
                "FROM routes WHERE route_id = %s FOR UPDATE", (route_id,)).fetchone()
            if r is None:
                return None, []
            stops = cur.execute(
                "SELECT shipment_id, seq, status, planned_arrival, window_start, window_end, visited_at, added_at "
                "FROM route_stops WHERE route_id = %s ORDER BY seq NULLS LAST, added_at, shipment_id",
                (route_id,)).fetchall()
        return RouteRow(**r), [StopRow(**s) for s in stops]

    @staticmethod
    def upsert_route(conn: psycopg.Connection[Any], route: RouteRow) -> None:
        conn.execute(
            "INSERT INTO routes (route_id, driver_id, depot_facility_id, started_at, shift_end) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (route_id) DO NOTHING",
            (route.route_id, route.driver_id, route.depot_facility_id, route.started_at, route.shift_end))

    @staticmethod
    def add_stop(conn: psycopg.Connection[Any], route_id: str, driver_id: str, shipment_id: uuid.UUID,
                 added_at: datetime) -> bool:
        """Put a shipment on a route (idempotent); True if it was new."""
        cur = conn.execute(
            "INSERT INTO route_stops (route_id, shipment_id, driver_id, added_at, status) "
            "VALUES (%s, %s, %s, %s, 'planned') ON CONFLICT (route_id, shipment_id) DO NOTHING",
            (route_id, shipment_id, driver_id, added_at))
        return cur.rowcount == 1

    @staticmethod
    def set_windows(conn: psycopg.Connection[Any], route_id: str,
                    windows: dict[uuid.UUID, tuple[datetime | None, datetime | None]]) -> None:
        for sid, (start, end) in windows.items():
            conn.execute("UPDATE route_stops SET window_start = %s, window_end = %s, updated_at = now() "
                         "WHERE route_id = %s AND shipment_id = %s", (start, end, route_id, sid))

    @staticmethod
    def mark_visited(conn: psycopg.Connection[Any], route_id: str, shipment_id: uuid.UUID, status: str,
                     at: datetime) -> bool:
        """Mark a stop done/attempted; True if that changed it (a replay changes nothing)."""
        cur = conn.execute(
            "UPDATE route_stops SET status = %s, visited_at = %s, updated_at = now() "
            "WHERE route_id = %s AND shipment_id = %s AND status NOT IN ('done', 'attempted')",
            (status, at, route_id, shipment_id))
        return cur.rowcount == 1

    @staticmethod
    def save_plan(conn: psycopg.Connection[Any], route_id: str, rows: list[PlannedRow], *, engine: str,
                  objective: float, planned_at: datetime, source: str | None) -> None:
        for r in rows:
            conn.execute(
                "UPDATE route_stops SET seq = %s, planned_arrival = %s, planned_departure = %s, status = %s, "
                "unserved_reason = %s, planned_at = %s, updated_at = now() "
                "WHERE route_id = %s AND shipment_id = %s",
                (r.seq, r.planned_arrival, r.planned_departure, r.status, r.unserved_reason, planned_at,
                 route_id, r.shipment_id))
        conn.execute(
            "UPDATE routes SET engine = %s, objective = %s, plan_version = plan_version + 1, planned_at = %s, "
            "last_source = COALESCE(%s, last_source), updated_at = now() WHERE route_id = %s",
            (engine, objective, planned_at, source, route_id))

    @staticmethod
    def open_stops_out_for_delivery(conn: psycopg.Connection[Any], rows: list[PlannedRow]) -> list[OpenStop]:
        """The plan's stops still ahead, in planned order, whose shipment is out for delivery, with
        what the ETA needs: the stops before each one and the shipment's facts."""
        ahead = sorted((r for r in rows if r.seq is not None and r.status == PLANNED and r.planned_arrival is not None),
                       key=lambda r: r.seq or 0)
        if not ahead:
            return []
        facts = {r[0]: r[1:] for r in conn.execute(
            "SELECT shipment_id, service_level::text, created_at, dest_lat, dest_lng, attempt_count, weight_grams "
            "FROM shipments WHERE shipment_id = ANY(%s) AND status = 'OUT_FOR_DELIVERY'",
            ([r.shipment_id for r in ahead],)).fetchall()}
        out = []
        for k, r in enumerate(ahead):
            f = facts.get(r.shipment_id)
            if f is not None:
                assert r.planned_arrival is not None
                out.append(OpenStop(r.shipment_id, k, r.planned_arrival, f[0], f[1], f[2], f[3], f[4] or 0, f[5]))
        return out

    @staticmethod
    def set_route_etas(conn: psycopg.Connection[Any], etas: list[tuple[uuid.UUID, Any]]) -> int:
        """Store ETAs (models.eta.base.Eta) on shipments still out for delivery; returns rows changed.
        The status guard keeps a plan from overwriting a shipment the pipeline has moved on since."""
        rows = [{"shipment_id": sid, "eta": e.at, "source": e.source, "low": e.low, "high": e.high,
                 "model_version": e.model_version} for sid, e in etas if e.at is not None]
        if not rows:
            return 0
        cur = conn.execute(
            "UPDATE shipments AS s SET eta = v.eta, eta_source = v.source, "
            "eta_interval = CASE WHEN v.low IS NULL OR v.high IS NULL THEN NULL "
            "ELSE tstzrange(LEAST(v.low, v.high), GREATEST(v.low, v.high), '[]') END, "
            "model_version = v.model_version, updated_at = now() "
            "FROM json_to_recordset(%s::json) AS v(shipment_id uuid, eta timestamptz, source text, low timestamptz, "
            "high timestamptz, model_version text) "
            "WHERE s.shipment_id = v.shipment_id AND s.status = 'OUT_FOR_DELIVERY'",
            (orjson.dumps(rows).decode(),))
        return cur.rowcount

    @staticmethod
    def route_of(conn: psycopg.Connection[Any], shipment_id: uuid.UUID) -> str | None:
        """The latest route holding this shipment (reschedules arrive without a route id)."""
        row = conn.execute(
            "SELECT route_id FROM route_stops WHERE shipment_id = %s ORDER BY added_at DESC LIMIT 1",
            (shipment_id,)).fetchone()
        return None if row is None else row[0]
