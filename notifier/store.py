"""PostgreSQL access of the notifier: contacts and preferences, the outbox (planned messages and
their state), the permanent DELIVERED flag and the exception events of the operations view.

One connection per thread (the job's sink thread and the deferred-send drainer each get their own).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from notifier.rules import CHANNELS


@dataclass(frozen=True)
class Contact:
    recipient_id: uuid.UUID
    name: str
    email: str | None
    phone: str | None
    push_endpoint: str | None
    language: str
    timezone: str
    quiet_hours_start: time | None
    quiet_hours_end: time | None
    opt_in_sms: bool
    opt_in_email: bool
    opt_in_push: bool

    def address(self, channel: str) -> str | None:
        return {"sms": self.phone, "email": self.email, "push": self.push_endpoint}[channel]

    def opted_in(self, channel: str) -> bool:
        return {"sms": self.opt_in_sms, "email": self.opt_in_email, "push": self.opt_in_push}[channel]


@dataclass(frozen=True)
class ShipmentContacts:
    shipment_id: uuid.UUID
    tracking_number: str
    service_level: str
    status: str
    destination_facility_id: str | None
    dest_lat: float | None
    dest_lng: float | None
    recipient: Contact | None
    sender: Contact | None
    last_event_at: datetime | None = None  # the newest stored event's time (stale-message rules)


@dataclass
class OutboxRow:
    notification_id: str
    event_id: uuid.UUID | None
    shipment_id: uuid.UUID
    event_type: str
    rule_id: str
    template: str
    audience: str
    recipient_id: uuid.UUID | None
    channel: str
    address: str
    language: str
    subject: str | None
    body: str
    state: str = "pending"
    not_before: datetime | None = None
    event_at: datetime | None = None
    attempts: int = 0

    lease_owner: str | None = None
    lease_s: float = 0.0

    COLUMNS = ("notification_id", "event_id", "shipment_id", "event_type", "rule_id", "template", "audience",
               "recipient_id", "channel", "address", "language", "subject", "body", "state", "not_before",
               "event_at", "lease_owner")

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in self.COLUMNS)


_CONTACT_COLS = ("recipient_id", "name", "email", "phone", "push_endpoint", "language", "timezone",
                 "quiet_hours_start", "quiet_hours_end", "opt_in_sms", "opt_in_email", "opt_in_push")


def _contact(row: dict[str, Any], prefix: str) -> Contact | None:
    if row.get(f"{prefix}recipient_id") is None:
        return None
    return Contact(**{c: row[f"{prefix}{c}"] for c in _CONTACT_COLS})


class NotifierStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local = threading.local()

    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.dsn, row_factory=dict_row, autocommit=True)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    # --- reads ----------------------------------------------------------------------------------

    def contacts(self, shipment_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ShipmentContacts]:
        cols = ", ".join([f"r.{c} AS r_{c}" for c in _CONTACT_COLS] + [f"p.{c} AS p_{c}" for c in _CONTACT_COLS])
        rows = self.conn.execute(
            f"SELECT s.shipment_id, s.tracking_number, s.service_level::text AS service_level, "
            f"s.status::text AS status, s.last_event_at, s.destination_facility_id, s.dest_lat, s.dest_lng, {cols} "
            "FROM shipments s LEFT JOIN recipients r ON r.recipient_id = s.recipient_id "
            "LEFT JOIN recipients p ON p.recipient_id = s.sender_id WHERE s.shipment_id = ANY(%s)",
            (list(set(shipment_ids)),)).fetchall()
        return {r["shipment_id"]: ShipmentContacts(
            r["shipment_id"], r["tracking_number"], r["service_level"], r["status"], r["destination_facility_id"],
            r["dest_lat"], r["dest_lng"], _contact(r, "r_"), _contact(r, "p_"), r["last_event_at"]) for r in rows}

    def shipment_states(self, shipment_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, tuple[str, datetime | None]]:
        """shipment_id -> (status, last_event_at) as stored now."""
        rows = self.conn.execute("SELECT shipment_id, status::text AS status, last_event_at FROM shipments "
                                 "WHERE shipment_id = ANY(%s)", (list(set(shipment_ids)),)).fetchall()
        return {r["shipment_id"]: (r["status"], r["last_event_at"]) for r in rows}

    def regions(self, facility_ids: Iterable[str]) -> dict[str, str]:
        rows = self.conn.execute("SELECT facility_id, region FROM facilities WHERE facility_id = ANY(%s)",
                                 (list(set(facility_ids)),)).fetchall()
        return {r["facility_id"]: r["region"] for r in rows}

    def facility(self, facility_id: str) -> dict[str, Any] | None:
        return self.conn.execute("SELECT facility_id, name, address, city, state, zip, region, lat, lng, "
                                 "type::text AS type FROM facilities WHERE facility_id = %s",
                                 (facility_id,)).fetchone()

    def nearby_stations(self, lat: float, lng: float, limit: int = 3) -> list[dict[str, Any]]:
        # Equirectangular distance is plenty to rank stations within a metro area.
        return self.conn.execute(
            "SELECT facility_id, name, address, city, state, zip, "
            "111.0 * sqrt(power(lat - %(lat)s, 2) + power((lng - %(lng)s) * cos(radians(%(lat)s)), 2)) AS km "
            "FROM facilities WHERE type = 'delivery_station' ORDER BY km LIMIT %(n)s",
            {"lat": lat, "lng": lng, "n": limit}).fetchall()

    # --- writes ---------------------------------------------------------------------------------

    def record_exceptions(self, rows: Sequence[tuple[Any, ...]]) -> set[uuid.UUID]:
        """Insert exception events (replay-safe by event_id); the ids that were new."""
        if not rows:
            return set()
        new: set[uuid.UUID] = set()
        with self.conn.transaction(), self.conn.cursor() as cur:
            for row in rows:
                cur.execute("INSERT INTO exception_events (event_id, shipment_id, day, event_type, reason_code, "
                            "facility_id, region, attempt_count, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id", row)
                got = cur.fetchone()
                if got:
                    new.add(got["event_id"])
        return new

    def plan(self, rows: Sequence[OutboxRow], *, delivered: tuple[uuid.UUID, uuid.UUID] | None = None) -> bool:
        """Insert the planned messages of one event (a replay finds them: ON CONFLICT DO NOTHING).

        For DELIVERED, `delivered=(shipment_id, event_id)` sets the permanent flag in the same
        transaction; False when another event already owns the flag (a duplicate DELIVERED).
        """
        with self.conn.transaction(), self.conn.cursor() as cur:
            if delivered is not None:
                cur.execute("INSERT INTO delivered_notifications (shipment_id, event_id) VALUES (%s, %s) "
                            "ON CONFLICT (shipment_id) DO NOTHING", delivered)
                if cur.rowcount == 0:
                    owner = cur.execute("SELECT event_id FROM delivered_notifications WHERE shipment_id = %s",
                                        (delivered[0],)).fetchone()
                    if owner is None or owner["event_id"] != delivered[1]:
                        return False
            if rows:
                # Pending rows are born leased by their planner: no drainer can take them while it
                # sends (the lease expires if the planner dies, and then the drainer sends them).
                cols = ", ".join(OutboxRow.COLUMNS)
                marks = ", ".join(["%s"] * len(OutboxRow.COLUMNS))
                cur.executemany(f"INSERT INTO notification_outbox ({cols}, lease_until) VALUES ({marks}, "
                                "CASE WHEN %s THEN now() + make_interval(secs => %s) END) "
                                "ON CONFLICT (notification_id) DO NOTHING",
                                [(*r.values(), r.lease_owner is not None and r.state == "pending", r.lease_s)
                                 for r in rows])
        return True

    def release_delivered(self, shipment_id: uuid.UUID, event_id: uuid.UUID) -> None:
        self.conn.execute("DELETE FROM delivered_notifications WHERE shipment_id = %s AND event_id = %s",
                          (shipment_id, event_id))

    def lease(self, owner: str, *, event_ids: Sequence[uuid.UUID] | None = None,
              shipment_ids: Sequence[uuid.UUID] | None = None, lease_s: float,
              limit: int = 200) -> list[dict[str, Any]]:
        """Take (or keep) the lease on pending rows of these events, or on any free pending row.

        Only the holder sends. A row is free when nobody holds it or its lease expired (the holder
        died): an expired row goes to whoever asks next, so it is sent once, at most `lease_s` late.
        """
        where = ["state = 'pending'", "(lease_until IS NULL OR lease_until < now() OR lease_owner = %(owner)s)"]
        params: dict[str, Any] = {"lease": lease_s, "limit": limit, "owner": owner}
        if event_ids is not None:
            where.append("event_id = ANY(%(events)s)")
            params["events"] = list(event_ids)
        if shipment_ids is not None:
            where.append("shipment_id = ANY(%(shipments)s)")
            params["shipments"] = list(shipment_ids)
        return self.conn.execute(
            "UPDATE notification_outbox SET lease_until = now() + make_interval(secs => %(lease)s), "
            "lease_owner = %(owner)s, attempts = attempts + 1 WHERE notification_id IN (SELECT notification_id "
            f"FROM notification_outbox WHERE {' AND '.join(where)} ORDER BY created_at LIMIT %(limit)s "
            "FOR UPDATE SKIP LOCKED) RETURNING *", params).fetchall()

    def still_mine(self, notification_id: str, owner: str, lease_s: float) -> bool:
        """Renew the lease right before a send; False if another process took the row over (this
        one was slower than its lease), so the slow one never sends a second copy."""
        row = self.conn.execute(
            "UPDATE notification_outbox SET lease_until = now() + make_interval(secs => %s) "
            "WHERE notification_id = %s AND state = 'pending' AND lease_owner = %s RETURNING 1",
            (lease_s, notification_id, owner)).fetchone()
        return row is not None

    def release_deferred(self) -> int:
        """Deferred rows whose quiet hours ended become pending (the drainer sends them next)."""
        cur = self.conn.execute("UPDATE notification_outbox SET state = 'pending', lease_until = NULL "
                                "WHERE state = 'deferred' AND not_before <= now()")
        return cur.rowcount

    def mark_sent(self, notification_id: str, provider_ref: str | None) -> None:
        self.conn.execute("UPDATE notification_outbox SET state = 'sent', sent_at = now(), provider_ref = %s, "
                          "lease_until = NULL WHERE notification_id = %s", (provider_ref, notification_id))

    def opt_out(self, recipient_id: uuid.UUID, channel: str) -> bool:
        """The recipient no longer wants messages on this channel; False if there is no such recipient."""
        if channel not in CHANNELS:  # the column name is built from it
            raise ValueError(f"unknown channel {channel!r}")
        return self.conn.execute(f"UPDATE recipients SET opt_in_{channel} = false WHERE recipient_id = %s "
                                 "RETURNING 1", (recipient_id,)).fetchone() is not None

    def mark_skipped(self, notification_id: str, why: str) -> None:
        """Not sent, on purpose: the message went stale (expired or superseded) before its send."""
        self.conn.execute("UPDATE notification_outbox SET state = 'skipped', last_error = %s, lease_until = NULL "
                          "WHERE notification_id = %s AND state = 'pending'", (why[:2000], notification_id))

    def mark_dead(self, notification_id: str, error: str) -> None:
        self.conn.execute("UPDATE notification_outbox SET state = 'dead', last_error = %s, lease_until = NULL "
                          "WHERE notification_id = %s", (error[:2000], notification_id))

    def redrive(self, notification_ids: Sequence[str] | None = None) -> int:
        """Dead rows back to pending (after the provider recovered): nothing dead-lettered is lost."""
        if notification_ids:
            cur = self.conn.execute("UPDATE notification_outbox SET state = 'pending', lease_until = NULL "
                                    "WHERE state = 'dead' AND notification_id = ANY(%s)", (list(notification_ids),))
        else:
            cur = self.conn.execute("UPDATE notification_outbox SET state = 'pending', lease_until = NULL "
                                    "WHERE state = 'dead'")
        return cur.rowcount
