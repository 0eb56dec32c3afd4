"""Label creation: a Shipment row (LABEL_CREATED, unguessable tracking number) in PostgreSQL, then
its LABEL_CREATED scan on `scan-events`. The row is written first, so the pipeline's transition
step always finds the shipment it is told about.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time

import psycopg

from config.settings import Settings
from models.domain import EventType, ServiceLevel
from sinks.stores import kafka_producer_config

# Crockford base32 without I, L, O, U: no ambiguous characters on a printed label.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_tracking_number(prefix: str = "PT") -> str:
    """prefix + 16 base32 characters of 80 random bits + a mod-32 check character."""
    n = secrets.randbits(80)
    body = "".join(_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(16)))
    check = _ALPHABET[sum((i + 1) * _ALPHABET.index(c) for i, c in enumerate(body)) % 32]
    return f"{prefix}{body}{check}"


def tracking_number_valid(tn: str, prefix: str = "PT") -> bool:
    body = tn[len(prefix):-1]
    if not tn.startswith(prefix) or len(body) != 16 or any(c not in _ALPHABET for c in body + tn[-1]):
        return False
    return _ALPHABET[sum((i + 1) * _ALPHABET.index(c) for i, c in enumerate(body)) % 32] == tn[-1]


@dataclass(frozen=True)
class Label:
    shipment_id: uuid.UUID
    tracking_number: str
    service_level: ServiceLevel
    origin_facility_id: str
    destination_facility_id: str
    dest_lat: float
    dest_lng: float
    created_at: datetime
    recipient_id: uuid.UUID
    sender_id: uuid.UUID | None = None  # filled by store_labels (a merchant), unless given

    def to_json(self) -> dict[str, str]:
        return {"shipment_id": str(self.shipment_id), "tracking_number": self.tracking_number}

    def label_event(self) -> dict[str, object]:
        return {
            "event_id": str(uuid.uuid4()), "shipment_id": str(self.shipment_id),
            "event_type": EventType.LABEL_CREATED.value, "facility_id": self.origin_facility_id,
            "scan_device_id": "label-api", "location": None, "created_at": self.created_at.isoformat(),
            "reason_code": None, "raw_scan_data": {"tracking_number": self.tracking_number},
        }


class LabelError(ValueError):
    pass


_FIRST = ["Ana", "Ben", "Chloe", "Dev", "Elena", "Farah", "Gus", "Hana", "Ivan", "Jada", "Kofi", "Lena"]
_LAST = ["Silva", "Okafor", "Nguyen", "Smith", "Kowalski", "Haddad", "Garcia", "Kim", "Novak", "Reyes"]


def _offset(lat: float, lng: float, rng: random.Random, km: float) -> tuple[float, float]:
    """A point up to `km` from (lat, lng): the recipient near their delivery station."""
    d, theta = km * math.sqrt(rng.random()), rng.random() * 2 * math.pi
    return lat + d / 111.0 * math.cos(theta), lng + d / (111.0 * math.cos(math.radians(lat))) * math.sin(theta)


def create_labels(
    settings: Settings,
    count: int,
    *,
    service_level: ServiceLevel | None = None,
    origin: str | None = None,
    destination: str | None = None,
    created_at: datetime | None = None,
    seed: int | None = None,
    emit: bool = True,
) -> list[Label]:
    """Create `count` shipments (random origins/destinations unless given) and emit their labels."""
    if count < 1:
        raise LabelError("count must be at least 1")
    rng = random.Random(seed)
    now = created_at or datetime.now(UTC)
    with psycopg.connect(settings.postgres.dsn) as conn:
        facilities = conn.execute(
            "SELECT facility_id, type::text, lat, lng, zip, city, state FROM facilities").fetchall()
        by_id = {f[0]: f for f in facilities}
        origins = [f for f in facilities if f[1] == "origin"]
        stations = [f for f in facilities if f[1] == "delivery_station"]
        if not origins or not stations:
            raise LabelError("no facility network: run `parcel seed` first")
        for fid, want in ((origin, "origin"), (destination, "delivery_station")):
            if fid is not None and (fid not in by_id or by_id[fid][1] != want):
                raise LabelError(f"{fid!r} is not a known {want} facility")
        labels: list[Label] = []
        for _ in range(count):
            o = by_id[origin] if origin else rng.choice(origins)
            d = by_id[destination] if destination else rng.choice(stations)
            lat, lng = _offset(d[2], d[3], rng, 6.0)
            level = service_level or rng.choices(list(ServiceLevel), weights=[60, 20, 8, 12])[0]
            labels.append(Label(uuid.UUID(int=rng.getrandbits(128), version=4), new_tracking_number(), level,
                                o[0], d[0], round(lat, 6), round(lng, 6), now,
                                uuid.UUID(int=rng.getrandbits(128), version=4)))
    store_labels(settings, labels, seed=seed)
    if emit:
        emit_labels(settings, labels)
    return labels


_TZ_BY_STATE = {
    **dict.fromkeys(["CT", "DC", "DE", "FL", "GA", "MA", "MD", "ME", "MI", "NC", "NH", "NJ", "NY", "OH", "PA",
                     "RI", "SC", "VA", "VT", "WV", "IN", "KY"], "America/New_York"),
    **dict.fromkeys(["AL", "AR", "IA", "IL", "KS", "LA", "MN", "MO", "MS", "ND", "NE", "OK", "SD", "TN", "TX",
                     "WI"], "America/Chicago"),
    **dict.fromkeys(["CO", "ID", "MT", "NM", "UT", "WY"], "America/Denver"),
    "AZ": "America/Phoenix", "CA": "America/Los_Angeles", "NV": "America/Los_Angeles", "OR": "America/Los_Angeles",
    "WA": "America/Los_Angeles", "AK": "America/Anchorage", "HI": "Pacific/Honolulu",
}
_SPANISH_HEAVY = {"TX", "CA", "FL", "NM", "AZ", "NV"}
_MERCHANTS = ["Acme Outfitters", "Blue Heron Books", "Cedar & Co", "Delta Electronics", "Evergreen Pantry"]
# Where simulated app users' devices receive pushes; the main job points it at the local provider
# sandbox (notifier/sandbox.py) so its pushes are delivered and visible.
PUSH_BASE = "https://push.parcel.example/v1/devices"


def _push_base() -> str:
    return os.environ.get("PARCEL_PUSH_BASE", PUSH_BASE)


def _preferences(rng: random.Random, state: str | None) -> dict[str, object]:
    """Notification preferences as carriers see them: most people take SMS and email, fewer have the
    app (push), a third keep quiet hours at night, Spanish is common in some states."""
    quiet = rng.random()
    start, end = (time(21), time(8)) if quiet < 0.25 else (time(22), time(7)) if quiet < 0.35 else (None, None)
    app_user = rng.random() < 0.45
    return {
        "language": "es" if rng.random() < (0.2 if state in _SPANISH_HEAVY else 0.06) else "en",
        "timezone": _TZ_BY_STATE.get(state or "", "America/New_York"),
        "quiet_hours_start": start, "quiet_hours_end": end,
        "opt_in_sms": rng.random() < 0.75, "opt_in_email": rng.random() < 0.95, "opt_in_push": app_user,
        "push_endpoint": f"{_push_base()}/{uuid.UUID(int=rng.getrandbits(128), version=4).hex}" if app_user else None,
    }


def store_labels(settings: Settings, labels: list[Label], *, seed: int | None = None) -> None:
    """Write the labels' recipients (with notification preferences), their senders (merchants) and
    Shipment rows (LABEL_CREATED) in one transaction."""
    rng = random.Random(seed)
    # A second stream for preferences and senders, so the names and addresses of a seed stay as before.
    prefs_rng = random.Random(f"prefs-{seed}") if seed is not None else random.Random()
    merchants: dict[str, uuid.UUID] = {}
    recipients, shipments = [], []
    with psycopg.connect(settings.postgres.dsn) as conn:
        cities = {r[0]: r[1:] for r in conn.execute("SELECT facility_id, zip, city, state FROM facilities")}
        for label in labels:
            zip_, city, state = cities.get(label.destination_facility_id, (None, None, None))
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            prefs = _preferences(prefs_rng, state)
            recipients.append((label.recipient_id, name, f"{name.lower().replace(' ', '.')}@example.com",
                               f"+1555{rng.randrange(10**6, 10**7)}", prefs["push_endpoint"], prefs["language"],
                               prefs["timezone"], prefs["quiet_hours_start"], prefs["quiet_hours_end"],
                               prefs["opt_in_sms"], prefs["opt_in_email"], prefs["opt_in_push"]))
            merchant = prefs_rng.choice(_MERCHANTS)
            if label.sender_id is None and merchant not in merchants:
                merchants[merchant] = uuid.UUID(int=prefs_rng.getrandbits(128), version=4)
            sender_id = label.sender_id or merchants[merchant]
            address = {"line1": f"{rng.randrange(1, 9999)} {rng.choice(['Oak', 'Pine', 'Main', 'Elm'])} St",
                       "city": city, "state": state, "zip": zip_, "name": name}
            shipments.append((label.shipment_id, label.tracking_number, sender_id, label.recipient_id,
                              json.dumps(address),
                              label.dest_lat, label.dest_lng, rng.randrange(100, 30000),
                              json.dumps({"l_cm": rng.randrange(10, 80), "w_cm": rng.randrange(10, 60),
                                          "h_cm": rng.randrange(2, 50)}),
                              label.service_level.value, label.origin_facility_id, label.destination_facility_id,
                              label.created_at))
        senders = [(sid, name, f"shipping@{name.lower().replace(' ', '').replace('&', 'and')}.example",
                    f"+1555{prefs_rng.randrange(10**6, 10**7)}") for name, sid in merchants.items()]
        with conn.cursor() as cur:
            # Merchants are senders (RETURN_TO_SENDER notifies them): email and SMS, no quiet hours.
            cur.executemany("INSERT INTO recipients (recipient_id, name, email, phone) VALUES (%s,%s,%s,%s) "
                            "ON CONFLICT (recipient_id) DO NOTHING", senders)
            cur.executemany(
                "INSERT INTO recipients (recipient_id, name, email, phone, push_endpoint, language, timezone, "
                "quiet_hours_start, quiet_hours_end, opt_in_sms, opt_in_email, opt_in_push) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", recipients)
            cur.executemany(
                "INSERT INTO shipments (shipment_id, tracking_number, sender_id, recipient_id, recipient_address, "
                "dest_lat, dest_lng, weight_grams, dimensions, service_level, status, origin_facility_id, "
                "destination_facility_id, created_at) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'LABEL_CREATED',%s,%s,%s)",
                shipments)


def emit_labels(settings: Settings, labels: list[Label]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka_producer_config(settings.kafka.bootstrap_servers,
                                              {"enable.idempotence": True, "linger.ms": 20}))
    topic = settings.kafka.topics["scan_events"]
    for label in labels:
        producer.produce(topic, key=str(label.shipment_id).encode(), value=json.dumps(label.label_event()).encode())
        producer.poll(0)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} LABEL_CREATED events were not delivered to {topic}")
