"""Local stand-ins for the providers outside the carrier, speaking their real protocols so the
real client libraries run: Twilio's Messages API (HTTP), an SMTP server (aiosmtpd), and a push
webhook endpoint. Each records what it received, with the time of receipt. Below them, the
harness of the notifier tests: the job as a separate process, and recipients/shipments to notify."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
from aiosmtpd.controller import Controller
from confluent_kafka import Producer

from api.testing import Process, topology_process
from config.settings import Settings
from notifier.config import NotifierSettings, notifier_settings
from notifier.sandbox import TwilioMessages, is_twilio_messages
from tests.integration.pipeline import wait_for as pipeline_wait_for


@dataclass
class Receipt:
    channel: str
    to: str
    body: str
    subject: str | None
    at: float
    raw: Any = None


@dataclass
class Providers:
    """Twilio + push on one HTTP server, email on an aiosmtpd server. Phone numbers or push paths in
    `fail` answer 500 (a provider outage) so tests can watch retries and dead letters."""

    receipts: list[Receipt] = field(default_factory=list)
    attempts: list[Receipt] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    reject: set[str] = field(default_factory=set)  # numbers Twilio refuses (400, code 21211)
    unsubscribed: set[str] = field(default_factory=set)  # numbers that replied STOP (400, code 21610)
    twilio: TwilioMessages = field(default_factory=TwilioMessages)  # what Twilio took, for its list API
    listings: list[str] = field(default_factory=list)  # GETs of the Messages list
    slow: dict[str, float] = field(default_factory=dict)  # numbers whose SMS is taken, answered this late
    smtp_peers: list[tuple[str, int]] = field(default_factory=list)  # the client end of each email's connection
    latency_s: float = 0.0  # every taken SMS waits this long before Twilio answers (a remote provider)
    in_flight: Counter[str] = field(default_factory=Counter)  # SMS being answered now: "*" and per number
    most_in_flight: Counter[str] = field(default_factory=Counter)  # the most at once, same keys
    lock: threading.Lock = field(default_factory=threading.Lock)
    http: ThreadingHTTPServer | None = None
    smtp: Controller | None = None

    def start(self) -> Providers:
        providers = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if is_twilio_messages(self.path):
                    with providers.lock:
                        providers.listings.append(self.path)
                    providers._answer(self, 200, providers.twilio.page(self.path))
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if is_twilio_messages(self.path):
                    providers._twilio(self, raw)
                elif self.path.startswith("/push/"):
                    providers._push(self, raw)
                else:
                    self.send_response(404)
                    self.end_headers()

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

        class SmtpHandler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                msg: Message = message_from_bytes(envelope.content)
                body = msg.get_payload(decode=True)
                text = body.decode() if isinstance(body, bytes) else str(msg.get_payload())
                for rcpt in envelope.rcpt_tos:
                    providers._record(Receipt("email", rcpt, text.strip(), msg["Subject"], time.time(), msg))
                with providers.lock:
                    providers.smtp_peers.append(tuple(session.peer))
                return "250 OK"

        with socket.socket() as probe:  # aiosmtpd's readiness check cannot use port 0: pick one
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._smtp_handler = SmtpHandler()
        self.smtp = Controller(self._smtp_handler, hostname="127.0.0.1", port=port)
        self.smtp.start()
        return self

    def restart_smtp(self) -> None:
        """The mail server goes away and comes back on the same port (its clients' connections die)."""
        assert self.smtp is not None
        port = self.smtp_port
        self.smtp.stop()
        self.smtp = Controller(self._smtp_handler, hostname="127.0.0.1", port=port)
        self.smtp.start()

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
        if self.smtp is not None:
            self.smtp.stop()

    @property
    def base_url(self) -> str:
        assert self.http is not None
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def smtp_port(self) -> int:
        assert self.smtp is not None
        return int(self.smtp.port)

    def push_url(self, name: str) -> str:
        return f"{self.base_url}/push/{name}"

    def notifier_cfg(self, settings: Settings, **update: Any) -> NotifierSettings:
        """The notifier's settings with SMS and email pointed at these servers (for an in-process
        `Notifier`; `env()` does the same for a notifier process), plus `update`."""
        cfg = notifier_settings(settings)
        return cfg.model_copy(update={"twilio": cfg.twilio.model_copy(update={"base_url": self.base_url}),
                                      "smtp": cfg.smtp.model_copy(update={"port": self.smtp_port}), **update})

    def env(self) -> dict[str, str]:
        """Settings overrides that point a notifier process at these servers."""
        return {"PARCEL_NOTIFIER__TWILIO__BASE_URL": self.base_url,
                "PARCEL_NOTIFIER__SMTP__HOST": "127.0.0.1", "PARCEL_NOTIFIER__SMTP__PORT": str(self.smtp_port)}

    def _record(self, r: Receipt) -> None:
        with self.lock:
            self.receipts.append(r)

    def _twilio(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        to = form.get("To", "")
        with self.lock:
            self.attempts.append(Receipt("sms", to, form.get("Body", ""), None, time.time(), form))
        if to in self.unsubscribed:
            self._answer(h, 400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                                  "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400})
            return
        if to in self.reject:
            self._answer(h, 400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                                  "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
            return
        if to in self.fail:
            body = {"code": 20500, "message": "Internal Server Error", "more_info":
                    "https://www.twilio.com/docs/errors/20500", "status": 500}
            self._answer(h, 500, body)
            return
        self._record(Receipt("sms", to, form.get("Body", ""), None, time.time(), form))
        msg = self.twilio.create(h.path, form)
        with self.lock:
            for k in ("*", to):
                self.in_flight[k] += 1
                self.most_in_flight[k] = max(self.most_in_flight[k], self.in_flight[k])
        try:
            if to in self.slow:
                time.sleep(self.slow[to])  # taken, but the answer comes after the client gave up
            elif self.latency_s:
                time.sleep(self.latency_s)
        finally:
            with self.lock:
                for k in ("*", to):
                    self.in_flight[k] -= 1
        self._answer(h, 201, msg)

    def _push(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        payload = json.loads(raw)
        with self.lock:
            self.attempts.append(Receipt("push", h.path, payload.get("body", ""), payload.get("title"), time.time()))
        if h.path in self.fail:
            self._answer(h, 503, {"error": "unavailable"})
            return
        self._record(Receipt("push", h.path, payload.get("body", ""), payload.get("title"), time.time(), payload))
        self._answer(h, 201, {"id": uuid.uuid4().hex})

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def for_address(self, address: str) -> list[Receipt]:
        with self.lock:
            return [r for r in self.receipts if r.to == address or r.to.endswith(address)]


# --- The notifier as a separate process, and this suite's test data --------------------------------

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topologies" / "notifier.yaml"
TOPIC = "notifications"


class NotifierProcess(Process):
    """`parcel run topologies/notifier.yaml` with the providers' settings in its environment."""

    def __init__(self, group: str, env: dict[str, str], log: Path, state_dir: Path,
                 topology: Path = TOPOLOGY) -> None:
        self.group, self.state_dir, self.topology = group, state_dir, topology
        p = topology_process(topology, group, state_dir, log, env=env)
        super().__init__(p.cmd, log, env)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, proc: Process | None = None) -> None:
    """The pipeline harness's wait, polling every 0.25 s (the dedupe-window tests are timed)."""
    pipeline_wait_for(cond, timeout, what, proc, interval=0.25)


def process_env(providers: Providers) -> dict[str, str]:
    return {**providers.env(),
            "PARCEL_NOTIFIER__WINDOWS": json.dumps({"PICKUP": 3}),
            "PARCEL_NOTIFIER__RATE_LIMITS": json.dumps({"sms": "200/second", "email": "200/second",
                                                        "push": "200/second"}),
            "PARCEL_NOTIFIER__RETRY__BACKOFF_INITIAL_S": "0.05",
            "PARCEL_NOTIFIER__RETRY__BACKOFF_MAX_S": "0.2",
            "PARCEL_NOTIFIER__DRAIN_INTERVAL_S": "0.5"}


# --- test data -----------------------------------------------------------------------------------


class Party:
    def __init__(self, providers: Providers, **prefs: Any) -> None:
        self.id = uuid.uuid4()
        tag = self.id.hex[:10]
        self.name = prefs.pop("name", f"Test {tag}")
        self.email = f"{tag}@example.com"
        self.phone = f"+1555{random.randrange(10**6, 10**7)}{random.randrange(10, 99)}"
        self.push = providers.push_url(tag)
        self.push_path = f"/push/{tag}"
        self.prefs = prefs

    def insert(self, pg: psycopg.Connection[Any]) -> None:
        cols = {"recipient_id": self.id, "name": self.name, "email": self.email, "phone": self.phone,
                "push_endpoint": self.push, **self.prefs}
        pg.execute(f"INSERT INTO recipients ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                   list(cols.values()))


class Parcel:
    created: list[uuid.UUID] = []  # every shipment the tests made, for cleanup_outbox()

    def __init__(self, pg: psycopg.Connection[Any], recipient: Party, *, sender: Party | None = None,
                 service_level: str = "STANDARD") -> None:
        recipient.insert(pg)
        if sender is not None:
            sender.insert(pg)
        self.id = uuid.uuid4()
        Parcel.created.append(self.id)
        self.tracking_number = "PTTEST" + uuid.uuid4().hex[:13].upper()
        self.recipient, self.sender, self.service_level = recipient, sender, service_level
        station = pg.execute("SELECT facility_id FROM facilities WHERE type = 'delivery_station' "
                             "ORDER BY facility_id LIMIT 1").fetchone()
        self.station = station[0] if station else None
        pg.execute("INSERT INTO shipments (shipment_id, tracking_number, sender_id, recipient_id, service_level, "
                   "status, destination_facility_id, created_at) VALUES (%s,%s,%s,%s,%s,'LABEL_CREATED',%s,now())",
                   (self.id, self.tracking_number, sender.id if sender else None, recipient.id, service_level,
                    self.station))

    def event(self, event_type: str, *, status: str | None = None, reason_code: str | None = None,
              attempt_count: int = 0, event_id: uuid.UUID | None = None,
              return_tn: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        return {
            "schema_version": 1, "event_id": str(event_id or uuid.uuid4()), "shipment_id": str(self.id),
            "tracking_number": self.tracking_number, "event_type": event_type, "status": status or event_type,
            "previous_status": None, "reason_code": reason_code, "attempt_count": attempt_count,
            "facility": {"id": self.station, "name": "Station", "city": "Testville"} if self.station else None,
            "created_at": (at or datetime.now(UTC)).isoformat(),
            "eta": {"at": (datetime.now(UTC) + timedelta(hours=5)).isoformat(), "source": "rule"},
            "return_shipment": {"shipment_id": str(uuid.uuid4()), "tracking_number": return_tn} if return_tn else None,
            "service_level": self.service_level, "driver_id": None, "route_id": None,
        }


    def stored(self, pg: psycopg.Connection[Any], status: str, last_event_at: datetime) -> None:
        """The shipment as the scan pipeline leaves it after an event (these tests feed the notifier
        without the pipeline)."""
        pg.execute("UPDATE shipments SET status = %s, last_event_at = %s WHERE shipment_id = %s",
                   (status, last_event_at, self.id))


def cleanup_outbox(dsn: str, shipment_ids: list[uuid.UUID] | None = None) -> None:
    """Drop the unsent outbox rows of the tests' shipments: left behind, a later notifier's drainer
    would try them against provider ports that no longer exist."""
    ids = list(shipment_ids if shipment_ids is not None else Parcel.created)
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("DELETE FROM notification_outbox WHERE state IN ('pending', 'deferred') "
                   "AND shipment_id = ANY(%s::uuid[])", (ids,))


def send(producer: Producer, *events: dict[str, Any]) -> None:
    for ev in events:
        producer.produce(TOPIC, key=ev["shipment_id"].encode(), value=json.dumps(ev).encode())
    assert producer.flush(30) == 0


def counts(providers: Providers, *parties: Party) -> Counter[tuple[str, str]]:
    """(channel, who) -> messages received, scoped to this test's parties."""
    who = {}
    for p in parties:
        who.update({("sms", p.phone): p.name, ("email", p.email): p.name, ("push", p.push_path): p.name})
    with providers.lock:
        return Counter((r.channel, who[(r.channel, r.to)]) for r in providers.receipts if (r.channel, r.to) in who)


def received(providers: Providers, channel: str, party: Party) -> list[Any]:
    to = {"sms": party.phone, "email": party.email, "push": party.push_path}[channel]
    with providers.lock:
        return [r for r in providers.receipts if r.channel == channel and r.to == to]


SETTLE_S = 2.5  # after the last expected message: long enough for a wrong extra one to show up


