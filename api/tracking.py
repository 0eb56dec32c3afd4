"""The tracking read side: a tracking number in, the public view of its shipment out — status and
progress steps, ETA, the timeline from Cassandra with facility names and cities from PostgreSQL, and
the driver (Redis GEO) only while the shipment is OUT_FOR_DELIVERY.

What a public view never holds: the recipient's name, street address, ZIP, phone or e-mail. The
destination is the city and a point rounded to ~100 m (enough for the map, not a house). The view
is built by pure functions (`public_view`, `progress_steps`) so the privacy rule is unit-tested.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from config.settings import Settings
from models.domain import Status
from sinks.redis_geo import driver_key

log = logging.getLogger(__name__)

# The customer's progress bar: the happy path; EXCEPTION / attempts / returns show as a note on it.
STEPS: tuple[tuple[str, str], ...] = (
    ("LABEL_CREATED", "Label created"),
    ("PICKED_UP", "Picked up"),
    ("IN_TRANSIT", "In transit"),
    ("OUT_FOR_DELIVERY", "Out for delivery"),
    ("DELIVERED", "Delivered"),
)
STATUS_LABELS: dict[str, str] = {
    **dict(STEPS),
    "DELIVERY_ATTEMPTED": "Delivery attempted",
    "EXCEPTION": "Delayed",
    "RETURN_TO_SENDER": "Returning to sender",
}
# Where an off-path status sits on the bar (the step reached before it).
_STEP_OF = {"DELIVERY_ATTEMPTED": "OUT_FOR_DELIVERY", "EXCEPTION": "IN_TRANSIT", "RETURN_TO_SENDER": "IN_TRANSIT"}
DEST_DECIMALS = 3  # ~110 m of latitude: the neighbourhood on the map, never the house


def progress_steps(status: str, history: list[str] | None = None) -> list[dict[str, Any]]:
    """The bar's steps with done/current flags; `history` (statuses seen) lifts EXCEPTION's place."""
    names = [s for s, _ in STEPS]
    anchor = _STEP_OF.get(status, status)
    if status == "EXCEPTION" and history:
        seen = [names.index(h) for h in history if h in names]
        anchor = names[max(seen)] if seen else "LABEL_CREATED"
    idx = names.index(anchor) if anchor in names else 0
    return [{"key": k, "label": label, "done": i < idx or (i == idx and status == "DELIVERED"),
             "current": i == idx} for i, (k, label) in enumerate(STEPS)]


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    r = 6372.7976  # Redis GEO's earth radius, so pushed distances match GEODIST's
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def eta_view(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("eta") is None:
        return None
    interval = row.get("eta_interval")
    lower = getattr(interval, "lower", None)
    upper = getattr(interval, "upper", None)
    source = row.get("eta_source") or "rule"
    return {
        "at": row["eta"].isoformat(),
        "source": source,
        # the rule-based fallback is a coarse estimate: the page says so
        "estimated": source == "rule",
        "interval": {"from": lower.isoformat() if lower else None, "to": upper.isoformat() if upper else None},
        "model_version": row.get("model_version"),
    }


def event_view(ev: Any, facilities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fac = facilities.get(ev.facility_id) if ev.facility_id else None
    return {
        "at": ev.created_at.isoformat() + ("Z" if ev.created_at.tzinfo is None else ""),
        "event_type": ev.event_type,
        "status": ev.status,
        "status_label": STATUS_LABELS.get(ev.status, ev.status),
        "reason_code": ev.reason_code,
        "facility": {"name": fac["name"], "city": fac["city"], "state": fac["state"]} if fac else None,
    }


@dataclass
class DriverView:
    driver_id: str
    lat: float | None = None
    lng: float | None = None
    distance_km: float | None = None
    progress: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        # The driver id stays internal; the page needs the point, the distance and the stop count.
        out: dict[str, Any] = {"position": None, "distance_km": None}
        if self.lat is not None and self.lng is not None:
            out["position"] = {"lat": round(self.lat, 5), "lng": round(self.lng, 5)}
            out["distance_km"] = None if self.distance_km is None else round(self.distance_km, 2)
        if self.progress:
            out.update(self.progress)
        return out


@dataclass
class Shipment:
    """What the read side loads for one tracking number (internal: holds the exact destination)."""

    row: dict[str, Any]
    events: list[Any] = field(default_factory=list)
    facilities: dict[str, dict[str, Any]] = field(default_factory=dict)
    driver: DriverView | None = None

    @property
    def shipment_id(self) -> uuid.UUID:
        return self.row["shipment_id"]

    @property
    def tracking_number(self) -> str:
        return self.row["tracking_number"]

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def dest(self) -> tuple[float, float] | None:
        if self.row.get("dest_lat") is None or self.row.get("dest_lng") is None:
            return None
        return float(self.row["dest_lat"]), float(self.row["dest_lng"])

    def driver_id_from_events(self) -> str | None:
        for ev in reversed(self.events):
            if ev.event_type == "OUT_FOR_DELIVERY":
                return ev.driver_id
        return None


def public_view(s: Shipment, base_url: str = "") -> dict[str, Any]:
    """The JSON the public routes return: nothing personal (see module docstring)."""
    row = s.row
    dest = s.dest
    history = [ev.status for ev in s.events]
    view: dict[str, Any] = {
        "tracking_number": s.tracking_number,
        "status": s.status,
        "status_label": STATUS_LABELS.get(s.status, s.status),
        "service_level": row.get("service_level"),
        "attempt_count": row.get("attempt_count") or 0,
        "last_event_at": row["last_event_at"].isoformat() if row.get("last_event_at") else None,
        "steps": progress_steps(s.status, history),
        "eta": eta_view(row) if s.status not in ("DELIVERED", "RETURN_TO_SENDER") else None,
        "destination": {
            "city": row.get("dest_city"),
            "state": row.get("dest_state"),
            "approx": {"lat": round(dest[0], DEST_DECIMALS), "lng": round(dest[1], DEST_DECIMALS)} if dest else None,
        },
        "events": [event_view(ev, s.facilities) for ev in s.events],
        # Only while out for delivery; otherwise nothing about the driver, not even an empty object's keys.
        "driver": s.driver.public() if s.driver is not None and s.status == Status.OUT_FOR_DELIVERY else None,
        "links": {"page": f"{base_url}/t/{s.tracking_number}",
                  "stream": f"{base_url}/v1/track/{s.tracking_number}/stream",
                  "poll": f"{base_url}/v1/track/{s.tracking_number}/poll"},
    }
    return view


def driver_move_view(move: dict[str, Any], dest: tuple[float, float] | None) -> dict[str, Any]:
    """An SSE `driver` event from a live pub/sub message: the point and the distance left."""
    lat, lng = float(move["lat"]), float(move["lng"])
    out: dict[str, Any] = {"position": {"lat": round(lat, 5), "lng": round(lng, 5)},
                           "recorded_at": move.get("recorded_at"), "distance_km": None}
    if dest is not None:
        out["distance_km"] = round(haversine_km(lat, lng, dest[0], dest[1]), 2)
    return out


def status_event_view(note: dict[str, Any]) -> dict[str, Any]:
    """An SSE `status` event from a normalized `notifications` record, without internal ids."""
    fac = note.get("facility") or None
    status = note.get("status")
    return {
        "event_type": note.get("event_type"),
        "status": status,
        "status_label": STATUS_LABELS.get(status or "", status),
        "previous_status": note.get("previous_status"),
        "reason_code": note.get("reason_code"),
        "at": note.get("created_at"),
        "facility": {"name": fac.get("name"), "city": fac.get("city")} if fac else None,
        "eta": note.get("eta"),
        "steps": progress_steps(status or "LABEL_CREATED"),
    }


# --- Stores -------------------------------------------------------------------------------------

SHIPMENT_SQL = """
SELECT s.shipment_id, s.tracking_number, s.status::text AS status, s.service_level::text AS service_level,
       s.eta, s.eta_source, s.eta_interval, s.model_version, s.attempt_count, s.last_event_at,
       COALESCE(s.dest_lat, d.lat) AS dest_lat, COALESCE(s.dest_lng, d.lng) AS dest_lng,
       COALESCE(s.recipient_address->>'city', d.city) AS dest_city,
       COALESCE(s.recipient_address->>'state', d.state) AS dest_state
FROM shipments s LEFT JOIN facilities d ON d.facility_id = s.destination_facility_id
WHERE s.tracking_number = %s
"""


class TrackingStore:
    """PostgreSQL (shipment, facilities), Cassandra (timeline), Redis (driver) for the read routes.

    Thread-safe: FastAPI runs these sync calls in its thread pool; each thread keeps one PostgreSQL
    connection (autocommit, reopened after an error), Cassandra and Redis clients are shared.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cluster: Any = None
        self._session: Any = None
        self._select: Any = None
        self._redis: Any = None
        self._facilities: dict[str, dict[str, Any]] = {}
        self._route_store: Any = None
        self._route_store_checked = False

    # connections ---------------------------------------------------------------------------

    def pg(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.settings.postgres.dsn, autocommit=True, row_factory=dict_row,
                                   connect_timeout=5)
            self._local.conn = conn
        return conn

    def query(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            return self.pg().execute(sql, params).fetchall()
        except psycopg.OperationalError:
            self._local.conn = None
            return self.pg().execute(sql, params).fetchall()

    def cassandra(self) -> Any:
        with self._lock:
            if self._session is None:
                from sinks.stores import cassandra_cluster

                self._cluster = cassandra_cluster(self.settings)
                self._session = self._cluster.connect(self.settings.cassandra.keyspace)
                self._select = self._session.prepare(
                    "SELECT created_at, event_id, event_type, status, facility_id, reason_code, driver_id "
                    "FROM tracking_events WHERE shipment_id = ?")
        return self._session

    def redis(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.settings.redis.url, socket_timeout=5)
        return self._redis

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        if self._redis is not None:
            self._redis.close()

    # reads ---------------------------------------------------------------------------------

    def facilities(self) -> dict[str, dict[str, Any]]:
        if not self._facilities:
            rows = self.query("SELECT facility_id, name, city, state FROM facilities", ())
            self._facilities = {r["facility_id"]: r for r in rows}
        return self._facilities

    def shipment_row(self, tracking_number: str) -> dict[str, Any] | None:
        rows = self.query(SHIPMENT_SQL, (tracking_number,))
        return rows[0] if rows else None

    def status_of(self, shipment_id: uuid.UUID) -> str | None:
        rows = self.query("SELECT status::text AS status FROM shipments WHERE shipment_id = %s", (shipment_id,))
        return rows[0]["status"] if rows else None

    def events(self, shipment_id: uuid.UUID) -> list[Any]:
        session = self.cassandra()
        # clustering order (created_at, event_id): one partition read is the timeline in order
        return list(session.execute(self._select, (shipment_id,)))

    def load(self, tracking_number: str, *, with_events: bool = True) -> Shipment | None:
        row = self.shipment_row(tracking_number)
        if row is None:
            return None
        s = Shipment(row=row)
        if with_events:
            s.events = self.events(s.shipment_id)
            ids = {ev.facility_id for ev in s.events if ev.facility_id}
            facs = self.facilities()
            if ids - facs.keys():  # a facility opened since the cache was filled
                self._facilities = {}
                facs = self.facilities()
            s.facilities = facs
        if s.status == Status.OUT_FOR_DELIVERY:
            if not with_events:  # the OUT_FOR_DELIVERY scan names the driver
                s.events = self.events(s.shipment_id)
            s.driver = self.driver_of(s)
        return s

    def route_progress(self, shipment_id: uuid.UUID) -> Any:
        """StopProgress from routing/store.py, or None while it (or its table) does not exist."""
        if not self._route_store_checked:
            self._route_store_checked = True
            try:
                from routing.store import RouteStore

                self._route_store = RouteStore(self.settings)
            except ImportError:
                self._route_store = None
        if self._route_store is None:
            return None
        try:
            return self._route_store.progress(shipment_id)
        except psycopg.errors.UndefinedTable:
            return None

    def driver_of(self, s: Shipment) -> DriverView | None:
        progress = self.route_progress(s.shipment_id)
        driver_id = getattr(progress, "driver_id", None) or s.driver_id_from_events()
        if driver_id is None:
            return None
        view = DriverView(driver_id=driver_id)
        if progress is not None:
            planned = getattr(progress, "planned_arrival", None)
            view.progress = {
                "stop_number": progress.stop_number, "total_stops": progress.total_stops,
                "stops_remaining": progress.stops_remaining,
                "planned_arrival": planned.isoformat() if isinstance(planned, datetime) else None,
            }
        r = self.redis()
        key = driver_key(driver_id)
        pos = r.geopos(key, driver_id)[0]
        if pos is None:  # no heartbeat within the TTL: position unknown, not a stale dot
            return view
        view.lng, view.lat = float(pos[0]), float(pos[1])
        dest = s.dest
        if dest is not None:
            # GEODIST needs both points in one key; GEOSEARCH FROMLONLAT ... WITHDIST is the same
            # Redis distance from the delivery address to the driver, without writing the address.
            hits = r.geosearch(key, longitude=dest[1], latitude=dest[0], radius=20_000, unit="km", withdist=True)
            for member, dist in hits:
                if (member.decode() if isinstance(member, bytes) else member) == driver_id:
                    view.distance_km = float(dist)
        return view

    def drivers_near(self, lat: float, lng: float, radius_km: float, day: str, limit: int) -> list[dict[str, Any]]:
        """Dispatch search: GEOSEARCH on fleet:{day}, keeping drivers whose own key has not expired."""
        from sinks.redis_geo import fleet_key

        r = self.redis()
        hits = r.geosearch(fleet_key(day), longitude=lng, latitude=lat, radius=radius_km, unit="km",
                           withdist=True, withcoord=True, sort="ASC", count=limit * 2 if limit else None)
        if not hits:
            return []
        ids = [(h[0].decode() if isinstance(h[0], bytes) else h[0]) for h in hits]
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.exists(driver_key(i))
        alive = pipe.execute()
        out = [{"driver_id": i, "distance_km": round(float(h[1]), 3), "lat": float(h[2][1]), "lng": float(h[2][0])}
               for i, h, a in zip(ids, hits, alive, strict=True) if a]
        return out[:limit] if limit else out
