"""Read ports for the pure steps, backed by the systems of record: facilities (PostgreSQL, cached in
memory: a few hundred rows) and shipment snapshots (PostgreSQL + the last event ids from Cassandra)
that rebuild lost stream state. A store that cannot answer raises after bounded retries; the job
stops without committing offsets rather than guess.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from config.settings import Settings
from models.domain import Facility, ShipmentSnapshot

log = logging.getLogger(__name__)

_retry = retry(
    retry=retry_if_exception_type(psycopg.OperationalError),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(60),
    reraise=True,
)


class PostgresFacilities:
    """FacilityDirectory + FacilityLookup over the `facilities` table, refreshed every `ttl_s`."""

    def __init__(self, settings: Settings, ttl_s: float = 300.0) -> None:
        self._dsn = settings.postgres.dsn
        self._ttl = ttl_s
        self._loaded_at = 0.0
        self._by_id: dict[str, Facility] = {}
        self._zip: dict[str, str] = {}
        self._lock = threading.Lock()

    @_retry
    def _load(self) -> None:
        with psycopg.connect(self._dsn, connect_timeout=5) as conn:
            rows = conn.execute("SELECT facility_id, name, city, type::text, lat, lng, zip FROM facilities").fetchall()
        self._by_id = {r[0]: Facility(facility_id=r[0], name=r[1], city=r[2], type=r[3], lat=r[4], lng=r[5])
                       for r in rows}
        self._zip = {r[0]: r[6] for r in rows}
        self._loaded_at = time.monotonic()

    def _fresh(self, facility_id: str | None = None) -> None:
        stale = time.monotonic() - self._loaded_at > self._ttl
        # an id we have not seen may be a facility opened since the last load: reload (rate-limited)
        missing = facility_id is not None and facility_id not in self._by_id and \
            time.monotonic() - self._loaded_at > 5.0
        if stale or missing or not self._by_id:
            with self._lock:
                self._load()

    def exists(self, facility_id: str) -> bool:
        self._fresh(facility_id)
        return facility_id in self._by_id

    def get(self, facility_id: str) -> Facility | None:
        self._fresh(facility_id)
        return self._by_id.get(facility_id)

    def zip_of(self, facility_id: str) -> str | None:
        return self._zip.get(facility_id)


SNAPSHOT_SQL = """
SELECT s.shipment_id, s.tracking_number, s.service_level::text AS service_level, s.created_at, s.return_of,
       s.status::text AS status, s.attempt_count, s.last_event_at,
       o.lat AS origin_lat, o.lng AS origin_lng, o.zip AS origin_zip,
       COALESCE(s.dest_lat, d.lat) AS dest_lat, COALESCE(s.dest_lng, d.lng) AS dest_lng,
       COALESCE(s.recipient_address->>'zip', d.zip) AS dest_zip
FROM shipments s
LEFT JOIN facilities o ON o.facility_id = s.origin_facility_id
LEFT JOIN facilities d ON d.facility_id = s.destination_facility_id
WHERE s.shipment_id = %s
"""


class PostgresShipments:
    """ShipmentDirectory: rebuild a shipment's stream state from PostgreSQL, with the last accepted
    event ids from its Cassandra partition so duplicate detection survives a rebuild."""

    def __init__(self, settings: Settings, recent_events: int = 128) -> None:
        self._settings = settings
        self._recent = recent_events
        self._conn: psycopg.Connection[Any] | None = None
        self._session: Any = None
        self._cluster: Any = None
        self._select_ids: Any = None

    def _pg(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._settings.postgres.dsn, connect_timeout=5, autocommit=True,
                                         row_factory=dict_row)
        return self._conn

    def _cassandra(self) -> Any:
        if self._session is None:
            from sinks.stores import cassandra_cluster

            self._cluster = cassandra_cluster(self._settings)
            self._session = self._cluster.connect(self._settings.cassandra.keyspace)
            self._select_ids = self._session.prepare(
                "SELECT event_id FROM tracking_events WHERE shipment_id = ? ORDER BY created_at DESC LIMIT ?")
        return self._session

    @_retry
    def load(self, shipment_id: uuid.UUID) -> ShipmentSnapshot | None:
        try:
            row = self._pg().execute(SNAPSHOT_SQL, (shipment_id,)).fetchone()
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            raise
        if row is None:
            return None
        session = self._cassandra()
        ids = tuple(r.event_id for r in session.execute(self._select_ids, (shipment_id, self._recent)))
        return ShipmentSnapshot(**row, recent_event_ids=ids)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._cluster is not None:
            self._cluster.shutdown()
