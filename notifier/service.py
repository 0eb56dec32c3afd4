"""The notifier's decisions and sends: planned events in (from the `notify_plan` step), messages at
the providers out. Used by the `notify_deliver` sink, the deferred-send drainer, the CLI and the
benchmark.

Crash safety (docs/notifier.md): claim → plan → lease → send → mark.
1. Claim the dedupe window in Redis with the event id as the value (DELIVERED: the permanent
   PostgreSQL flag, owned by the event id, in the same transaction as step 2).
2. Plan: write one outbox row per (audience, channel), id `<event_id>:<audience>:<channel>`,
   ON CONFLICT DO NOTHING — a replay finds the rows it wrote before.
3. Lease pending rows (UPDATE ... lease_until), send, mark sent; a final failure marks the row dead,
   dead-letters it with a reason and releases the claim when nothing of the event reached the
   customer. An expired lease (the process died) makes the row sendable again by the drainer.
The offsets of `notifications` are committed only after the sink returns (at-least-once), so a
kill -9 anywhere replays the record: its own claim lets it through, and the outbox keeps it from
planning or sending twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import redis

from config.settings import Settings
from models.domain import EventType
from notifier.channels import OPTED_OUT, Channel, EmailChannel, Sender, SendError, build_channels
from notifier.config import NotifierSettings, notifier_settings
from notifier.dedupe import Claim, Dedupe
from notifier.links import reschedule_token, unsubscribe_token
from notifier.metrics import NotifierMetrics
from notifier.rules import RuleSet, load_rules
from notifier.store import Contact, NotifierStore, OutboxRow, ShipmentContacts
from notifier.templates import Templates
from operators.notify_plan import PlannedEvent
from sinks.stores import kafka_producer_config

log = logging.getLogger("notifier")

# Test-only: sleep this long right after the dedupe claim (before the send), so a test can kill -9
# the process inside the crash window. Never set in production.
PAUSE_ENV = "PARCEL_NOTIFIER_TEST_PAUSE_AFTER_CLAIM_S"
# Test-only: "<channel>=<seconds>", sleep that long after the provider took a message of that channel
# and before it is marked sent (the window where a crash can repeat a message). Never set in production.
PAUSE_AFTER_SEND_ENV = "PARCEL_NOTIFIER_TEST_PAUSE_AFTER_SEND"
MAX_ATTEMPTS_SHOWN = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


def quiet_until(contact: Contact, now: datetime) -> datetime | None:
    """The UTC end of the recipient's quiet hours when `now` falls inside them, else None."""
    start, end = contact.quiet_hours_start, contact.quiet_hours_end
    if start is None or end is None or start == end:
        return None
    try:
        tz = ZoneInfo(contact.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    local = now.astimezone(tz)
    t = local.timetz().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    until = datetime.combine(local.date(), end, tzinfo=tz)
    if until <= local:
        until += timedelta(days=1)
    return until.astimezone(UTC)


@dataclass
class DeadLetters:
    """Dead-letter envelopes (DESIGN section 3) of undeliverable messages, on the DLQ topic."""

    bootstrap: str
    topic: str
    _producer: Any = None

    def send(self, envelope: dict[str, Any], key: str | None) -> None:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(kafka_producer_config(self.bootstrap, {"enable.idempotence": True,
                                                                            "linger.ms": 5}))
        self._producer.produce(self.topic, key=key.encode() if key else None, value=orjson.dumps(envelope))
        self._producer.poll(0)

    def flush(self) -> None:
        if self._producer is not None and self._producer.flush(30):
            raise RuntimeError(f"dead letters not delivered to {self.topic}")


@dataclass
class _Lane:
    """One channel's share of a batch: the address groups still to send and its workers."""

    channel: str
    queue: deque[list[dict[str, Any]]]
    most: int
    futures: list[Future[list[tuple[dict[str, Any], str]]]]
    workers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_worker(self, notifier: Notifier) -> None:
        with self.lock:
            if self.workers >= self.most or not self.queue:
                return
            self.workers += 1
        self.futures.append(notifier.pool.submit(notifier._send_lane, self))  # list.append is atomic


@dataclass
class HandleResult:
    planned: int = 0
    duplicates: int = 0
    sent: int = 0
    dead: int = 0
    deferred: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class Notifier:
    def __init__(self, settings: Settings, *, secret: str | bytes, metrics: NotifierMetrics,
                 channels: Mapping[str, Channel] | None = None, clock: Callable[[], datetime] = utc_now,
                 cfg: NotifierSettings | None = None) -> None:
        self.settings = settings
        self.cfg = cfg or notifier_settings(settings)
        self.rules: RuleSet = load_rules(self.cfg.rules_file)
        self.templates = Templates(self.cfg.templates_dir, self.rules.spec.default_language)
        self.secret = secret
        self.metrics = metrics
        self.clock = clock
        self.store = NotifierStore(settings.postgres.dsn)
        self.redis = redis.Redis.from_url(settings.redis.url)
        self.dedupe = Dedupe(self.redis)
        chans = dict(channels) if channels is not None else build_channels(self.cfg)
        email = chans.get("email")
        if isinstance(email, EmailChannel):
            email.list_unsubscribe = self.unsubscribe_url
        self.senders = {name: Sender(ch, self.cfg, settings.redis.url,
                                     on_retry=lambda c: metrics.outcome(c, "retried"))
                        for name, ch in chans.items()}
        # Workers per channel (`concurrency`): channels send in parallel, so a failing or slow provider
        # (retries, backoff, rate limit) never holds up the others, and a channel keeps several
        # messages in flight to a provider that takes a while to answer.
        self.pool = ThreadPoolExecutor(max_workers=max(1, sum(self.cfg.workers(c) for c in self.senders)),
                                       thread_name_prefix="notify-send")
        self.dead_letters = DeadLetters(settings.kafka.bootstrap_servers, self.cfg.dead_letter_topic)
        self.pause_after_claim = float(os.environ.get(PAUSE_ENV) or 0)
        channel, _, secs = (os.environ.get(PAUSE_AFTER_SEND_ENV) or "").partition("=")
        self.pause_after_send = (channel, float(secs or 0))
        # Lease owner id: this process and this instance (the drainer has its own).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def unsubscribe_url(self, row: Mapping[str, Any]) -> str | None:
        """The one-click unsubscribe link of a message's recipient on its channel (notifier/http.py)."""
        if not row.get("recipient_id"):
            return None
        token = unsubscribe_token(row["recipient_id"], row["channel"], self.secret)
        return f"{self.cfg.public_base_url.rstrip('/')}/u/{token}"

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for sender in self.senders.values():
            close = getattr(sender.channel, "close", None)
            if close is not None:
                close()  # the kept-open SMTP connection
        self.store.close()

    # --- decide ---------------------------------------------------------------------------------

    def handle(self, items: Iterable[tuple[PlannedEvent, dict[str, Any] | None]], *, send: bool = True) -> HandleResult:
        """Decide and send one batch (a checkpoint's records of one partition)."""
        items = list(items)
        result = HandleResult()
        if not items:
            return result
        contacts = self.store.contacts(p.event.shipment_id for p, _ in items)
        self._record_exceptions([p.event for p, _ in items], contacts)
        now = self.clock()
        to_send: list[uuid.UUID] = []
        sources: dict[uuid.UUID, dict[str, Any] | None] = {}
        for planned, source in items:
            ev = planned.event
            if planned.rule is None:
                self.metrics.decided.labels(ev.notify_type, "no_rule").inc()
                continue
            contact = contacts.get(ev.shipment_id)
            if contact is None:
                self._dead_letter(source, str(ev.shipment_id), "unknown_shipment",
                                  "the shipment of this event is not in PostgreSQL", {"event_id": str(ev.event_id)})
                continue
            stale = planned.rule.stale(ev.created_at, now, contact.status, contact.last_event_at)
            if stale is not None:
                self._stale(planned, stale, contact, result)
                continue
            rows, skipped = self.plan_rows(planned, contact, now)
            delivered = ev.notify_type == EventType.DELIVERED.value
            claim = Claim.NEW
            if not delivered:
                window = self.rules.window_s(ev.notify_type, self.cfg.windows)
                claim = self.dedupe.claim(str(ev.shipment_id), ev.notify_type, str(ev.event_id), window)
                if claim == Claim.TAKEN:
                    self._duplicate(planned, result)
                    continue
                self._pause(ev.event_id)
            if not self.store.plan(rows, delivered=(ev.shipment_id, ev.event_id) if delivered else None):
                self._duplicate(planned, result)
                continue
            if delivered:
                self._pause(ev.event_id)
            self.metrics.dedupe.labels(ev.notify_type, "miss").inc()
            self.metrics.decided.labels(ev.notify_type, "notify").inc()
            if claim == Claim.NEW:  # a replay (OWN) counted these the first time
                for channel, why in skipped:
                    self.metrics.outcome(channel, why)
                    result.skipped[why] = result.skipped.get(why, 0) + 1
                deferred = [r for r in rows if r.state == "deferred"]
                for r in deferred:
                    self.metrics.outcome(r.channel, "deferred")
                result.deferred += len(deferred)
            result.planned += len(rows)
            to_send.append(ev.event_id)
            sources[ev.event_id] = source
        if send and to_send:
            leased = self.store.lease(self.owner, event_ids=to_send, lease_s=self.cfg.lease_s)
            self.send_rows(leased, sources, result)
        self.dead_letters.flush()
        return result

    def _duplicate(self, planned: PlannedEvent, result: HandleResult) -> None:
        ev = planned.event
        result.duplicates += 1
        self.metrics.dedupe.labels(ev.notify_type, "hit").inc()
        self.metrics.decided.labels(ev.notify_type, "duplicate").inc()
        for channel in planned.rule.channels if planned.rule else ():
            self.metrics.outcome(channel, "duplicate")
        log.info("notification suppressed as duplicate: shipment_id=%s event_type=%s event_id=%s",
                 ev.shipment_id, ev.notify_type, ev.event_id)

    def _stale(self, planned: PlannedEvent, why: str, contact: ShipmentContacts, result: HandleResult) -> None:
        """A message that is no longer true is not sent: nothing is claimed, planned or sent."""
        ev, rule = planned.event, planned.rule
        assert rule is not None  # handle() judges only events with a rule
        self.metrics.decided.labels(ev.notify_type, why).inc()
        for channel in rule.channels:
            self.metrics.outcome(channel, why)
            result.skipped[why] = result.skipped.get(why, 0) + 1
        log.info("notification not sent (%s): shipment_id=%s event_type=%s event_at=%s status=%s last_event_at=%s",
                 why, ev.shipment_id, ev.notify_type, ev.created_at.isoformat(), contact.status,
                 contact.last_event_at.isoformat() if contact.last_event_at else None)

    def _pause(self, event_id: uuid.UUID) -> None:
        if self.pause_after_claim > 0:
            log.warning("test knob: paused after claim, before send (event_id=%s)", event_id)
            time.sleep(self.pause_after_claim)

    def context(self, planned: PlannedEvent, sc: ShipmentContacts, contact: Contact, audience: str) -> dict[str, Any]:
        ev = planned.event
        base = self.cfg.public_base_url.rstrip("/")
        eta = ev.eta_at
        eta_text = None
        if eta is not None:
            try:
                eta_text = eta.astimezone(ZoneInfo(contact.timezone)).strftime("%a %d %b %H:%M")
            except (ZoneInfoNotFoundError, ValueError):
                eta_text = eta.strftime("%a %d %b %H:%M UTC")
        ret = ev.return_shipment
        return {
            "name": contact.name, "recipient_name": sc.recipient.name if sc.recipient else "",
            "audience": audience, "tracking_number": ev.tracking_number,
            "tracking_url": f"{base}/t/{ev.tracking_number}", "status": ev.status,
            "eta": eta_text, "reason_code": ev.reason_code.value if ev.reason_code else None,
            "attempt_count": ev.attempt_count, "max_attempts": MAX_ATTEMPTS_SHOWN,
            "reschedule_url": f"{base}/r/{reschedule_token(ev.shipment_id, self.secret)}",
            "facility": ev.facility.model_dump() if ev.facility else None,
            "return_tracking_number": ret.tracking_number if ret else None,
            "return_tracking_url": f"{base}/t/{ret.tracking_number}" if ret else None,
            "severity": planned.rule.severity if planned.rule else "info",
        }

    def plan_rows(self, planned: PlannedEvent, sc: ShipmentContacts,
                  now: datetime) -> tuple[list[OutboxRow], list[tuple[str, str]]]:
        """The outbox rows of one event, and the (channel, reason) pairs it will not send."""
        rule = planned.rule
        assert rule is not None
        ev = planned.event
        rows: list[OutboxRow] = []
        skipped: list[tuple[str, str]] = []
        for audience in rule.audience:
            contact = sc.recipient if audience == "recipient" else sc.sender
            if contact is None:
                log.info("notification suppressed (no %s on file): shipment_id=%s", audience, ev.shipment_id)
                skipped.extend((ch, "no_contact") for ch in rule.channels)
                continue
            ctx = self.context(planned, sc, contact, audience)
            for channel in rule.channels:
                address = contact.address(channel)
                if not address:
                    log.info("notification suppressed (no %s address): shipment_id=%s audience=%s",
                             channel, ev.shipment_id, audience)
                    skipped.append((channel, "no_contact"))
                    continue
                if not contact.opted_in(channel):
                    log.info("notification suppressed (opted out): shipment_id=%s channel=%s audience=%s",
                             ev.shipment_id, channel, audience)
                    skipped.append((channel, "opted_out"))
                    continue
                rendered = self.templates.render(channel, contact.language, rule.template, ctx)
                until = quiet_until(contact, now) if channel in self.cfg.quiet_channels else None
                rows.append(OutboxRow(
                    notification_id=f"{ev.event_id}:{audience}:{channel}", event_id=ev.event_id,
                    shipment_id=ev.shipment_id, event_type=ev.notify_type, rule_id=rule.id,
                    template=rule.template, audience=audience, recipient_id=contact.recipient_id, channel=channel,
                    address=address, language=contact.language, subject=rendered.subject, body=rendered.body,
                    state="deferred" if until else "pending", not_before=until, event_at=ev.created_at,
                    lease_owner=self.owner, lease_s=self.cfg.lease_s))
        return rows, skipped

    def _record_exceptions(self, events: list[Any], contacts: dict[uuid.UUID, ShipmentContacts]) -> None:
        with_reason = [e for e in events if e.reason_code is not None]
        if not with_reason:
            return
        fac_of = {e.event_id: (e.facility.id if e.facility else
                               (contacts[e.shipment_id].destination_facility_id if e.shipment_id in contacts else None))
                  for e in with_reason}
        regions = self.store.regions(f for f in fac_of.values() if f)
        rows = [(e.event_id, e.shipment_id, e.created_at.astimezone(UTC).date(), e.event_type.value,
                 e.reason_code.value, fac_of[e.event_id], regions.get(fac_of[e.event_id] or ""), e.attempt_count,
                 e.created_at) for e in with_reason]
        new = self.store.record_exceptions(rows)
        for r in rows:
            if r[0] in new:
                self.metrics.exceptions.labels(r[4], r[5] or "unknown", r[6] or "unknown", r[3]).inc()

    # --- send -----------------------------------------------------------------------------------

    def send_rows(self, rows: list[dict[str, Any]], sources: Mapping[uuid.UUID, dict[str, Any] | None] | None = None,
                  result: HandleResult | None = None) -> HandleResult:
        """Send leased rows, channels in parallel; mark each sent or dead (dead-lettered)."""
        result = result or HandleResult()
        # Per channel, the rows of each address in planned order (UPDATE ... RETURNING gives leased
        # rows in no set order; created_at is the planning order). The channel's workers take one
        # address's rows at a time from a shared queue: a recipient's messages go out one after the
        # other, in order, and a worker that is done early takes the next address.
        by_address: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
        for r in sorted(rows, key=lambda r: (r["created_at"], r["notification_id"])):
            by_address[r["channel"]].setdefault(str(r["address"]), []).append(r)
        futures: list[Future[list[tuple[dict[str, Any], str]]]] = []
        for ch, groups in by_address.items():
            lane = _Lane(ch, deque(groups.values()), self.cfg.workers(ch), futures)
            lane.add_worker(self)
        outcomes: dict[uuid.UUID | None, list[str]] = defaultdict(list)
        done = 0
        while done < len(futures):  # a worker may add another before it finishes
            f = futures[done]
            done += 1
            for row, outcome in f.result():
                outcomes[row["event_id"]].append(outcome)
                if outcome == "sent":
                    result.sent += 1
                else:
                    result.dead += 1
                    source = (sources or {}).get(row["event_id"])
                    self._dead_letter(source, str(row["shipment_id"]), outcome,
                                      row.get("last_error") or "", _dead_value(row), step="deliver")
        for r in rows:
            got = outcomes.pop(r["event_id"], None)
            if got and "sent" not in got and r["event_id"] is not None:
                # Nothing of this event reached anyone: free the window so a later event can.
                if r["event_type"] == EventType.DELIVERED.value:
                    self.store.release_delivered(r["shipment_id"], r["event_id"])
                else:
                    self.dedupe.release(str(r["shipment_id"]), r["event_type"], str(r["event_id"]))
        self.dead_letters.flush()
        return result

    def _send_lane(self, lane: _Lane) -> list[tuple[dict[str, Any], str]]:
        out: list[tuple[dict[str, Any], str]] = []
        while True:
            try:
                rows = lane.queue.popleft()  # thread-safe
            except IndexError:
                return out
            t0 = time.monotonic()
            out += self._send_channel(lane.channel, rows)
            if (time.monotonic() - t0) / len(rows) >= self.cfg.slow_send_s:
                lane.add_worker(self)  # a slow provider: keep one more message in flight

    def _send_channel(self, channel: str, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        sender = self.senders.get(channel)
        out: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            if sender is None:
                row["last_error"] = f"channel {channel!r} is not configured"
                self.store.mark_dead(row["notification_id"], row["last_error"])
                self.metrics.outcome(channel, "dead_lettered")
                self.metrics.dead_letters.labels(channel, "channel_unavailable").inc()
                out.append((row, "channel_unavailable"))
                continue
            if not self.store.still_mine(row["notification_id"], self.owner, self.cfg.lease_s):
                log.warning("lease of %s lost to another process; not sending it", row["notification_id"])
                continue
            try:
                ref = sender.send(row)
            except SendError as exc:
                if exc.reason == OPTED_OUT and row.get("recipient_id"):
                    # They replied STOP to an earlier text: record it, so nothing more is planned.
                    self.store.opt_out(row["recipient_id"], channel)
                    self.store.mark_skipped(row["notification_id"], f"opted_out: {exc.detail}")
                    self.metrics.outcome(channel, "opted_out")
                    log.info("recipient opted out at the provider: %s channel=%s", row["notification_id"], channel)
                    continue
                row["last_error"] = f"{exc.reason}: {exc.detail}"
                self.store.mark_dead(row["notification_id"], row["last_error"])
                self.metrics.outcome(channel, "dead_lettered")
                self.metrics.dead_letters.labels(channel, exc.reason).inc()
                log.warning("notification dead-lettered: %s channel=%s reason=%s detail=%s",
                            row["notification_id"], channel, exc.reason, exc.detail)
                out.append((row, exc.reason))
                continue
            if self.pause_after_send[0] == channel and self.pause_after_send[1] > 0:
                log.warning("test knob: paused after send, before mark (%s)", row["notification_id"])
                time.sleep(self.pause_after_send[1])
            self.store.mark_sent(row["notification_id"], ref)
            self.metrics.outcome(channel, "sent")
            if row.get("event_at") is not None:
                self.metrics.latency.labels(channel).observe(max(0.0, (utc_now() - row["event_at"]).total_seconds()))
            out.append((row, "sent"))
        return out

    def drain(self, shipment_ids: list[uuid.UUID] | None = None) -> HandleResult:
        """Deferred rows whose quiet hours ended, and pending rows nobody holds (a dead process's,
        or planned by the reschedule form): lease and send them."""
        self.store.release_deferred()
        rows = self.store.lease(self.owner, shipment_ids=shipment_ids, lease_s=self.cfg.lease_s)
        if not rows:
            return HandleResult()
        result = HandleResult()
        return self.send_rows(self._drop_stale(rows, result), result=result)

    def _drop_stale(self, rows: list[dict[str, Any]], result: HandleResult) -> list[dict[str, Any]]:
        """Rows that waited (quiet hours, a dead holder's lease) are judged again before their send:
        the ones whose message went stale meanwhile are marked `skipped` with the reason."""
        states = self.store.shipment_states(r["shipment_id"] for r in rows)
        now = self.clock()
        fresh: list[dict[str, Any]] = []
        for r in rows:
            rule = self.rules.by_id(r["rule_id"])
            status, last_event_at = states.get(r["shipment_id"], (None, None))
            why = rule.stale(r["event_at"], now, status, last_event_at) if rule and r["event_at"] else None
            if why is None:
                fresh.append(r)
                continue
            since = last_event_at.isoformat() if last_event_at else "-"
            self.store.mark_skipped(r["notification_id"],
                                    f"{why}: event at {r['event_at'].isoformat()}, shipment {status} since {since}")
            self.metrics.outcome(r["channel"], why)
            result.skipped[why] = result.skipped.get(why, 0) + 1
            log.info("notification not sent (%s): %s status=%s", why, r["notification_id"], status)
        return fresh

    def _dead_letter(self, source: dict[str, Any] | None, key: str | None, reason: str, detail: str,
                     value: Any, *, step: str = "plan") -> None:
        self.dead_letters.send({
            "topology": "notifier", "step": step, "reason": reason, "detail": detail,
            "source": source, "key": key, "value": value, "failed_at": utc_now().isoformat(),
        }, key)


def _dead_value(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: str(row[k]) if row.get(k) is not None else None
            for k in ("notification_id", "event_id", "shipment_id", "event_type", "channel", "audience",
                      "recipient_id", "attempts")}
