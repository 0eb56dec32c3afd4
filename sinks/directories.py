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
from collections import OrderedDict
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


_SNAPSHOT_COLUMNS = """
SELECT s.shipment_id, s.tracking_number, s.service_level::text AS service_level, s.created_at, s.return_of,
       s.weight_grams,
       s.status::text AS status, s.attempt_count, s.last_event_at, s.last_event_id,
       o.lat AS origin_lat, o.lng AS origin_lng, o.zip AS origin_zip,
       COALESCE(s.dest_lat, d.lat) AS dest_lat, COALESCE(s.dest_lng, d.lng) AS dest_lng,
       COALESCE(s.recipient_address->>'zip', d.zip) AS dest_zip
FROM shipments s
LEFT JOIN facilities o ON o.facility_id = s.origin_facility_id
LEFT JOIN facilities d ON d.facility_id = s.destination_facility_id
"""

SNAPSHOT_SQL = _SNAPSHOT_COLUMNS + "WHERE s.shipment_id = %s\n"

# The shipment's own row, then the fresh labels stored at or after it, in store order (the order
# the label API publishes their LABEL_CREATED scans), in one round trip: an ordered scan of the
# partial index of migration 0007, which holds the rows no pipeline checkpoint has touched yet
# (`label_fresh`, cleared by the pipeline's UPDATE).
LABEL_SQL = f"""
({_SNAPSHOT_COLUMNS} WHERE s.shipment_id = %(id)s)
UNION ALL
({_SNAPSHOT_COLUMNS} WHERE s.label_fresh AND s.shipment_id <> %(id)s
   AND (s.stored_at, s.created_at) >= (SELECT stored_at, created_at FROM shipments WHERE shipment_id = %(id)s)
 ORDER BY s.stored_at, s.created_at LIMIT %(ahead)s)
"""


_HUB = ("ARRIVAL", "DEPARTURE")


def committed_state(events: list[Any]) -> dict[str, Any]:
    """Status, attempts and times as the shipment's committed tracking events say.

    Events apply in source-offset order (one shipment, one partition); rows of one record share
    its offset, and the pipeline's own RETURN_TO_SENDER row then wins. No event yet: the label."""
    if not events:
        return {"status": "LABEL_CREATED", "attempt_count": 0, "last_event_at": None, "last_hub_scan_at": None}

    def order(e: Any) -> tuple[int, int, int]:
        return (e.source_offset if e.source_offset is not None else -1, e.event_type == "RETURN_TO_SENDER",
                int(e.created_at.timestamp() * 1000))

    last = max(events, key=order)
    hubs = [e.created_at for e in events if e.event_type in _HUB]
    return {
        "status": last.status,
        "attempt_count": max(e.attempt_count or 0 for e in events),
        "last_event_at": _utc(max(e.created_at for e in events)),
        "last_hub_scan_at": _utc(max(hubs)) if hubs else None,
    }


def _utc(d: Any) -> Any:
    from datetime import UTC

    return d.replace(tzinfo=UTC) if d is not None and d.tzinfo is None else d


class PostgresShipments:
    """ShipmentDirectory: rebuild a shipment's stream state from PostgreSQL, with the last accepted
    event ids from its Cassandra partition so duplicate detection survives a rebuild."""

    def __init__(self, settings: Settings, recent_events: int = 128, *, label_ahead: int = 2000,
                 label_ttl_s: float = 30.0, label_cache: int = 20_000) -> None:
        self._settings = settings
        self._recent = recent_events
        self._label_ahead = label_ahead
        self._label_ttl = label_ttl_s
        self._label_cache = label_cache
        self._labels: OrderedDict[uuid.UUID, tuple[dict[str, Any], float]] = OrderedDict()
        self.label_reads = {"hit": 0, "read": 0}
        self._conn: psycopg.Connection[Any] | None = None
        self._session: Any = None
        self._cluster: Any = None
        self._select_events: Any = None

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
            self._select_events = self._session.prepare(
                "SELECT event_id, event_type, status, attempt_count, created_at, source_partition, source_offset "
                "FROM tracking_events WHERE shipment_id = ?")
        return self._session

    @_retry
    def load(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
        try:
            row = self._pg().execute(SNAPSHOT_SQL, (shipment_id,)).fetchone()
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            raise
        return self._snapshot(shipment_id, row, before)

    def load_label(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
        """`load` for a LABEL_CREATED that finds no stream state: the common case is a fresh label
        (the label API wrote the row, then published the scan), and labels come in bursts (a batch
        of labels, a backlog after downtime). So the read also returns the next `label_ahead` fresh
        labels stored at or after this one, and their LABEL_CREATED scans are answered from memory
        (for `label_ttl_s`): one round trip per burst instead of one per label.

        Why a remembered row is still the system of record's answer: it is only given to a
        LABEL_CREATED without stream state, and while a label has had no scan accepted, nothing but
        the partition owner's own LABEL_CREATED can change its status or last_event_id (the
        pipeline's PostgreSQL sink is their only writer, and a shipment's scans follow its label on
        one partition). A row whose label this process never sees (another partition's) just expires.
        Anything else (a rebuilt, lost or older state) goes through `load`."""
        hit = self._labels.pop(shipment_id, None)
        if hit is not None and hit[1] > time.monotonic():
            self.label_reads["hit"] += 1
            return ShipmentSnapshot(**hit[0], recent_event_ids=())
        return self._read_labels(shipment_id, before)  # the retry wrapper (~12 µs a call) only here

    @_retry
    def _read_labels(self, shipment_id: uuid.UUID, before: tuple[int, int] | None) -> ShipmentSnapshot | None:
        self.label_reads["read"] += 1
        try:
            rows = self._pg().execute(LABEL_SQL, {"id": shipment_id, "ahead": self._label_ahead}).fetchall()
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            raise
        own = next((r for r in rows if r["shipment_id"] == shipment_id), None)
        expires = time.monotonic() + self._label_ttl
        for r in rows:
            if r is own:
                continue
            r.pop("last_event_id")
            self._labels[r["shipment_id"]] = (r, expires)  # a snapshot is built only if its label comes
            self._labels.move_to_end(r["shipment_id"])  # newest reads are evicted last
        while len(self._labels) > self._label_cache:
            self._labels.popitem(last=False)
        return self._snapshot(shipment_id, own, before)

    def _snapshot(self, shipment_id: uuid.UUID, row: dict[str, Any] | None,
                  before: tuple[int, int] | None) -> ShipmentSnapshot | None:
        if row is None:
            return None
        if row.pop("last_event_id") is None and row["status"] == "LABEL_CREATED":
            # No checkpoint of the pipeline ever updated this row (the label API wrote it): nothing
            # of this shipment was committed to Cassandra either (both sinks flush in one checkpoint
            # before its commit; rows of an uncommitted one are ignored below anyway). A fresh
            # label's state is the row itself, without the Cassandra read.
            return ShipmentSnapshot(**row, recent_event_ids=())
        session = self._cassandra()
        events = list(session.execute(self._select_events, (shipment_id,)))
        if before is not None:
            # Only what was written before this record: rows a crashed process wrote for this record
            # or a later one belong to a checkpoint it never committed and that is being replayed.
            part, offset = before
            events = [e for e in events
                      if not (e.source_partition == part and e.source_offset is not None and e.source_offset >= offset)]
            row.update(committed_state(events))
        recent = sorted(events, key=lambda e: e.created_at, reverse=True)[: self._recent]
        return ShipmentSnapshot(**row, recent_event_ids=tuple(e.event_id for e in recent))
