"""The reschedule flow behind the link in a failed-attempt message: the customer picks a new
delivery window or a pickup location (a nearby delivery station); the choice is stored in
`reschedule_requests`, published on `reschedule-requests` (keyed by shipment_id: the route
optimizer re-plans, the ETA can use it) and confirmed to the customer through the outbox (the
notifier's drainer sends it, with the customer's channels, language and quiet hours).

Order: one PostgreSQL transaction holds the request row and the confirmation rows; the Kafka
record is published (and flushed) inside it, and the transaction commits only after Kafka
acknowledged. A failed publish rolls the request back (HTTP 503, the customer tries again); a
request id sent by the client makes a retried submission idempotent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from config.settings import Settings
from notifier.config import notifier_settings
from notifier.links import BadToken, verify_token
from notifier.rules import load_rules
from notifier.service import quiet_until
from notifier.store import NotifierStore, OutboxRow
from notifier.templates import Templates
from sinks.stores import kafka_producer_config

TERMINAL = ("DELIVERED", "RETURN_TO_SENDER")
SLOTS = ((9, 12), (12, 15), (15, 18), (18, 21))
MAX_WINDOW = timedelta(hours=4)
HORIZON = timedelta(days=14)


class RescheduleError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RescheduleChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["window", "pickup"]
    window_start: datetime | None = None
    window_end: datetime | None = None
    pickup_facility_id: str | None = None
    request_id: uuid.UUID | None = None  # idempotency: the same id twice stores one request


@dataclass
class RescheduleService:
    settings: Settings
    secret: str | bytes
    producer: Any = None

    def __post_init__(self) -> None:
        self.cfg = notifier_settings(self.settings)
        rules = load_rules(self.cfg.rules_file)
        self.templates = Templates(self.cfg.templates_dir, rules.spec.default_language)
        self.store = NotifierStore(self.settings.postgres.dsn)

    def _publish(self, key: str, value: dict[str, Any]) -> None:
        if self.producer is None:
            from confluent_kafka import Producer

            self.producer = Producer(kafka_producer_config(self.settings.kafka.bootstrap_servers,
                                                           {"enable.idempotence": True, "linger.ms": 0}))
        topic = self.settings.kafka.topics.get("reschedules", "reschedule-requests")
        errors: list[Any] = []
        self.producer.produce(topic, key=key.encode(), value=json.dumps(value).encode(),
                              on_delivery=lambda err, msg: errors.append(err) if err else None)
        if self.producer.flush(10) or errors:
            raise RescheduleError(503, "publish_failed", "could not record the choice right now; try again")

    def shipment(self, token: str) -> dict[str, Any]:
        try:
            sid = verify_token(token, self.secret)
        except BadToken:
            raise RescheduleError(404, "invalid_link", "this reschedule link is not valid") from None
        row = self.store.conn.execute(
            "SELECT s.shipment_id, s.tracking_number, s.status::text AS status, s.dest_lat, s.dest_lng, "
            "s.destination_facility_id, r.recipient_id, r.name, r.email, r.phone, r.push_endpoint, r.language, "
            "r.timezone, r.quiet_hours_start, r.quiet_hours_end, r.opt_in_sms, r.opt_in_email, r.opt_in_push "
            "FROM shipments s LEFT JOIN recipients r ON r.recipient_id = s.recipient_id "
            "WHERE s.shipment_id = %s", (sid,)).fetchone()
        if row is None:
            raise RescheduleError(404, "invalid_link", "this reschedule link is not valid")
        return row

    def options(self, token: str, now: datetime | None = None) -> dict[str, Any]:
        s = self.shipment(token)
        now = now or datetime.now(UTC)
        tz = _tz(s["timezone"])
        local_today = now.astimezone(tz).date()
        windows = []
        for day in range(1, 4):
            d = local_today + timedelta(days=day)
            for a, b in SLOTS:
                start = datetime.combine(d, time(a), tzinfo=tz)
                windows.append({"window_start": start.astimezone(UTC).isoformat(),
                                "window_end": datetime.combine(d, time(b), tzinfo=tz).astimezone(UTC).isoformat(),
                                "label": f"{start.strftime('%a %d %b')} {a:02d}:00-{b:02d}:00"})
        lat, lng = s["dest_lat"], s["dest_lng"]
        if lat is None and s["destination_facility_id"]:
            f = self.store.facility(s["destination_facility_id"])
            lat, lng = (f["lat"], f["lng"]) if f else (None, None)
        stations = self.store.nearby_stations(lat, lng) if lat is not None else []
        return {"tracking_number": s["tracking_number"], "status": s["status"],
                "can_reschedule": s["status"] not in TERMINAL, "windows": windows,
                "pickup_locations": [{"facility_id": f["facility_id"], "name": f["name"],
                                      "address": f"{f['address']}, {f['city']}, {f['state']} {f['zip']}",
                                      "distance_km": round(float(f["km"]), 1)} for f in stations]}

    def submit(self, token: str, choice: RescheduleChoice, now: datetime | None = None) -> dict[str, Any]:
        s = self.shipment(token)
        now = now or datetime.now(UTC)
        if s["status"] in TERMINAL:
            raise RescheduleError(409, "not_reschedulable",
                                  f"shipment {s['tracking_number']} is {s['status']} and can no longer be rescheduled")
        pickup = None
        if choice.kind == "window":
            ws, we = choice.window_start, choice.window_end
            if ws is None or we is None:
                raise RescheduleError(422, "invalid_window", "a window needs window_start and window_end")
            if ws.tzinfo is None or we.tzinfo is None:
                raise RescheduleError(422, "invalid_window", "window times need a time zone (RFC 3339)")
            if we <= ws:
                raise RescheduleError(422, "invalid_window", "window_end must be after window_start")
            if ws <= now or ws > now + HORIZON:
                raise RescheduleError(422, "invalid_window", "the window must start in the next 14 days")
            if we - ws > MAX_WINDOW:
                raise RescheduleError(422, "invalid_window", "a window can be at most 4 hours long")
        else:
            if not choice.pickup_facility_id:
                raise RescheduleError(422, "invalid_pickup", "a pickup needs pickup_facility_id")
            pickup = self.store.facility(choice.pickup_facility_id)
            if pickup is None or pickup["type"] != "delivery_station":
                raise RescheduleError(422, "invalid_pickup",
                                      f"{choice.pickup_facility_id!r} is not a pickup location (delivery station)")
        request_id = choice.request_id or uuid.uuid4()
        with psycopg.connect(self.settings.postgres.dsn, row_factory=dict_row) as conn:
            existing = conn.execute("SELECT request_id FROM reschedule_requests WHERE request_id = %s",
                                    (request_id,)).fetchone()
            if existing is not None:
                return {"request_id": str(request_id), "status": "already_recorded",
                        "tracking_number": s["tracking_number"]}
            conn.execute("INSERT INTO reschedule_requests (request_id, shipment_id, kind, window_start, window_end, "
                         "pickup_facility_id, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                         (request_id, s["shipment_id"], choice.kind, choice.window_start if pickup is None else None,
                          choice.window_end if pickup is None else None,
                          pickup["facility_id"] if pickup else None, now))
            rows = self._confirmation(s, choice, pickup, request_id, now)
            if rows:
                cols = ", ".join(OutboxRow.COLUMNS)
                conn.cursor().executemany(
                    f"INSERT INTO notification_outbox ({cols}) VALUES ({', '.join(['%s'] * len(OutboxRow.COLUMNS))}) "
                    "ON CONFLICT DO NOTHING", [r.values() for r in rows])
            window = (choice.window_start, choice.window_end) if pickup is None else (None, None)
            event = {"request_id": str(request_id), "shipment_id": str(s["shipment_id"]),
                     "tracking_number": s["tracking_number"], "kind": choice.kind,
                     "window_start": window[0].isoformat() if window[0] else None,
                     "window_end": window[1].isoformat() if window[1] else None,
                     "pickup_facility_id": pickup["facility_id"] if pickup else None,
                     "pickup_location": {"lat": pickup["lat"], "lng": pickup["lng"]} if pickup else None,
                     "created_at": now.isoformat()}
            self._publish(str(s["shipment_id"]), event)  # inside the transaction: no row without its event
        return {"request_id": str(request_id), "status": "recorded", "tracking_number": s["tracking_number"],
                "kind": choice.kind, "confirmation_channels": [r.channel for r in rows],
                "window_start": event["window_start"], "window_end": event["window_end"],
                "pickup": {"facility_id": pickup["facility_id"], "name": pickup["name"]} if pickup else None}

    def _confirmation(self, s: dict[str, Any], choice: RescheduleChoice, pickup: dict[str, Any] | None,
                      request_id: uuid.UUID, now: datetime) -> list[OutboxRow]:
        if s["recipient_id"] is None:
            return []
        tz = _tz(s["timezone"])
        window = ""
        if pickup is None and choice.window_start and choice.window_end:
            a, b = choice.window_start.astimezone(tz), choice.window_end.astimezone(tz)
            window = f"{a.strftime('%a %d %b %H:%M')}-{b.strftime('%H:%M')}"
        base = self.cfg.public_base_url.rstrip("/")
        ctx = {"tracking_number": s["tracking_number"], "tracking_url": f"{base}/t/{s['tracking_number']}",
               "kind": choice.kind, "window": window, "pickup_name": pickup["name"] if pickup else "",
               "pickup_address": f"{pickup['address']}, {pickup['city']}" if pickup else "", "status": s["status"]}
        from notifier.store import Contact

        contact = Contact(**{k: s[k] for k in ("recipient_id", "name", "email", "phone", "push_endpoint", "language",
                                               "timezone", "quiet_hours_start", "quiet_hours_end", "opt_in_sms",
                                               "opt_in_email", "opt_in_push")})
        rows = []
        for channel in ("sms", "email"):
            address = contact.address(channel)
            if not address or not contact.opted_in(channel):
                continue
            r = self.templates.render(channel, contact.language, "reschedule_confirmed", ctx)
            until = quiet_until(contact, now) if channel in self.cfg.quiet_channels else None
            rows.append(OutboxRow(
                notification_id=f"reschedule:{request_id}:recipient:{channel}", event_id=None,
                shipment_id=s["shipment_id"], event_type="RESCHEDULE", rule_id="reschedule_confirmed",
                template="reschedule_confirmed", audience="recipient", recipient_id=contact.recipient_id,
                channel=channel, address=address, language=contact.language, subject=r.subject, body=r.body,
                state="deferred" if until else "pending", not_before=until, event_at=now))
        return rows


def _tz(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
