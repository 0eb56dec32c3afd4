"""The three channels, each behind the same `send(row) -> provider_ref` shape:

- SMS through the real `twilio` client; its API base URL is configurable (tests point it at a
  local server speaking Twilio's Messages API). Twilio's Messages API takes no idempotency key, so
  before sending a message that may already have gone out (its row was leased before: the holder
  died between the send and the mark; or the last try ended in a network error after the request
  left) the channel lists the recent messages to that number and reuses an accepted one with the
  same body instead of sending a second.
- Email over SMTP (smtplib) on a kept-open connection, with the outbox id as Message-ID so a mail
  system can drop a resend.
- Push as a webhook POST to the recipient's endpoint, with the outbox id as Idempotency-Key.

A provider error is a `SendError`, retryable (5xx, 429, network) or not (4xx: a bad number, a
gone subscription). `Sender` adds the provider's rate limit (shared across processes through
Redis) and tenacity's retries with exponential backoff around each channel.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from limits import parse as parse_rate
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as TwilioClient

from notifier.config import NotifierSettings

# Twilio answers 21610 when the number replied STOP to our sender (Twilio's own opt-out handling).
TWILIO_UNSUBSCRIBED = 21610
# SendError reason: the recipient opted out at the provider; not a failure, the preference changed.
OPTED_OUT = "recipient_opted_out"


class SendError(Exception):
    def __init__(self, reason: str, detail: str, *, retryable: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


class Channel(Protocol):
    name: str

    def send(self, row: Mapping[str, Any]) -> str: ...


def _status_error(channel: str, status: int, detail: str) -> SendError:
    retryable = status >= 500 or status == 429
    reason = "provider_unavailable" if retryable else "provider_rejected"
    return SendError(reason, f"{channel} provider answered {status}: {detail[:300]}", retryable=retryable)


class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending to a configured base URL instead of api.twilio.com."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


class SmsChannel:
    name = "sms"
    # Statuses of a message Twilio took and has not given up on (a failed one may be sent again).
    TAKEN = frozenset({"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read"})

    def __init__(self, cfg: NotifierSettings) -> None:
        t = cfg.twilio
        http = BaseUrlHttpClient(t.base_url, t.timeout_s) if t.base_url.rstrip("/") != "https://api.twilio.com" \
            else TwilioHttpClient(timeout=t.timeout_s)
        self.client = TwilioClient(t.account_sid, t.auth_token, http_client=http)
        self.from_number = t.from_number
        self._uncertain: set[str] = set()  # rows whose last request may have reached Twilio

    def send(self, row: Mapping[str, Any]) -> str:
        nid = str(row["notification_id"])
        if int(row.get("attempts") or 0) > 1 or nid in self._uncertain:
            sid = self.already_accepted(row)
            if sid is not None:
                self._uncertain.discard(nid)
                return sid
        try:
            msg = self.client.messages.create(to=row["address"], from_=self.from_number, body=row["body"])
        except TwilioRestException as exc:
            if exc.code == TWILIO_UNSUBSCRIBED:
                raise SendError(OPTED_OUT, f"sms: {exc.msg}", retryable=False) from None
            raise _status_error("sms", exc.status, str(exc.msg)) from None
        except (TwilioException, OSError) as exc:
            self._uncertain.add(nid)
            raise SendError("provider_unavailable", f"sms: {exc}", retryable=True) from None
        self._uncertain.discard(nid)
        return str(msg.sid)

    def already_accepted(self, row: Mapping[str, Any]) -> str | None:
        """The sid of a message Twilio already took for this row: to the same number, from ours, the
        same body, created since the row was planned (a minute of clock skew allowed). Looks at the
        20 newest messages to that number. Raises a retryable SendError when Twilio cannot be asked:
        sending blind could be the duplicate this check exists to prevent."""
        planned: datetime | None = row.get("created_at")
        try:
            recent = self.client.messages.list(to=row["address"], from_=self.from_number, limit=20)
        except TwilioRestException as exc:
            raise _status_error("sms", exc.status, f"listing recent messages: {exc.msg}") from None
        except (TwilioException, OSError) as exc:
            raise SendError("provider_unavailable", f"sms: listing recent messages: {exc}", retryable=True) from None
        for m in recent:
            if (m.body or "").strip() != str(row["body"]).strip() or m.status not in self.TAKEN:
                continue
            if planned is not None and m.date_created is not None and m.date_created < planned - timedelta(minutes=1):
                continue
            return str(m.sid)
        return None


class EmailChannel:
    """SMTP with a kept-open connection per sending thread: the handshake (EHLO, STARTTLS, AUTH) is
    paid once per `smtp.keepalive_s` of activity, not per message. A connection the server dropped
    meanwhile is noticed at the next send (SMTPServerDisconnected before the message went out) and
    that send is made once more on a fresh connection; any other error closes the connection."""

    name = "email"
    FOOTER = {"en": "Stop these emails", "es": "Dejar de recibir estos correos"}

    def __init__(self, cfg: NotifierSettings) -> None:
        self.cfg = cfg.smtp
        # row -> the recipient's one-click unsubscribe URL (set by the Notifier, which holds the secret)
        self.list_unsubscribe: Callable[[Mapping[str, Any]], str | None] | None = None
        self._local = threading.local()  # .smtp, .last_used: this thread's connection
        self._open: set[smtplib.SMTP] = set()  # every thread's, for close()
        self._lock = threading.Lock()
        self.connections = 0  # opened so far (observability and tests)

    def _connection(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        idle = time.monotonic() - getattr(self._local, "last_used", 0.0)
        if smtp is not None and (self.cfg.keepalive_s <= 0 or idle > self.cfg.keepalive_s):
            self._drop()
            smtp = None
        if smtp is None:
            smtp = smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s)
            try:
                if self.cfg.starttls:
                    smtp.starttls()
                if self.cfg.username:
                    smtp.login(self.cfg.username, self.cfg.password or "")
            except BaseException:
                smtp.close()
                raise
            self._local.smtp = smtp
            with self._lock:
                self._open.add(smtp)
                self.connections += 1
        return smtp

    @staticmethod
    def _quit(smtp: smtplib.SMTP) -> None:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _drop(self) -> None:
        """Close this thread's connection."""
        smtp = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            with self._lock:
                self._open.discard(smtp)
            self._quit(smtp)

    def close(self) -> None:
        """Close every thread's connection (the sending threads are done)."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for smtp in conns:
            self._quit(smtp)
        self._local = threading.local()

    def send(self, row: Mapping[str, Any]) -> str:
        msg = EmailMessage()
        msg["From"] = self.cfg.sender
        msg["To"] = row["address"]
        msg["Subject"] = row.get("subject") or ""
        msg_id = make_msgid(idstring=str(row["notification_id"]).replace(":", "."), domain="parcel.example")
        msg["Message-ID"] = msg_id
        msg["X-Notification-Id"] = str(row["notification_id"])
        body = row["body"]
        url = self.list_unsubscribe(row) if self.list_unsubscribe is not None else None
        if url:
            # RFC 2369 + RFC 8058: mail clients show an unsubscribe button that POSTs to the URL
            msg["List-Unsubscribe"] = f"<{url}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            label = self.FOOTER.get(str(row.get("language") or "en"), self.FOOTER["en"])
            body = f"{body.rstrip()}\n\n--\n{label}: {url}\n"
        msg.set_content(body)
        try:
            try:
                self._connection().send_message(msg)
            except smtplib.SMTPServerDisconnected:
                if self.cfg.keepalive_s <= 0:
                    raise
                self._drop()  # a kept connection the server had dropped: once more, fresh
                self._connection().send_message(msg)
            self._local.last_used = time.monotonic()
        except smtplib.SMTPResponseException as exc:
            self._drop()
            retryable = exc.smtp_code < 500  # 4xx is transient in SMTP; 5xx is a permanent refusal
            raise SendError("provider_unavailable" if retryable else "provider_rejected",
                            f"email: {exc.smtp_code} {exc.smtp_error!r}", retryable=retryable) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise SendError("provider_unavailable", f"email: {exc}", retryable=True) from None
        if self.cfg.keepalive_s <= 0:
            self._drop()
        return msg_id


class PushChannel:
    name = "push"

    def __init__(self, cfg: NotifierSettings) -> None:
        self.client = httpx.Client(timeout=cfg.push.timeout_s)

    def send(self, row: Mapping[str, Any]) -> str:
        payload = {"notification_id": row["notification_id"], "shipment_id": str(row["shipment_id"]),
                   "event_type": row["event_type"], "title": row.get("subject"), "body": row["body"]}
        try:
            r = self.client.post(row["address"], json=payload, headers={"Idempotency-Key": row["notification_id"]})
        except httpx.ConnectError as exc:
            if "Name or service not known" in str(exc) or "nodename nor servname" in str(exc):
                # NXDOMAIN is an authoritative answer: the endpoint's host does not exist (a dead
                # subscription, like 410 Gone). A temporary resolver failure stays retryable.
                raise SendError("endpoint_unresolvable", f"push: {exc}", retryable=False) from None
            raise SendError("provider_unavailable", f"push: {exc}", retryable=True) from None
        except httpx.HTTPError as exc:
            raise SendError("provider_unavailable", f"push: {exc}", retryable=True) from None
        if r.status_code >= 300:
            raise _status_error("push", r.status_code, r.text)
        return r.headers.get("X-Message-Id") or str(r.status_code)


class Sender:
    """One channel with its rate limit and retries; `send` raises SendError after the last try."""

    def __init__(self, channel: Channel, cfg: NotifierSettings, redis_url: str,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.cfg = cfg
        self.rate = parse_rate(cfg.rate_limits.get(channel.name, "100/second"))
        self.limiter = MovingWindowRateLimiter(storage_from_string(redis_url))
        self.on_retry = on_retry

    def _wait_for_slot(self) -> None:
        while not self.limiter.hit(self.rate, "parcel-notifier", self.channel.name):
            stats = self.limiter.get_window_stats(self.rate, "parcel-notifier", self.channel.name)
            time.sleep(min(1.0, max(0.01, stats.reset_time - time.time())))

    def _retrying(self, state: RetryCallState) -> None:
        if self.on_retry is not None:
            self.on_retry(self.channel.name)

    def send(self, row: Mapping[str, Any]) -> str:
        r = self.cfg.retry
        retrying = Retrying(
            stop=stop_after_attempt(r.attempts),
            wait=wait_exponential_jitter(multiplier=r.backoff_initial_s, max=r.backoff_max_s,
                                         jitter=r.backoff_initial_s),
            retry=retry_if_exception(lambda e: isinstance(e, SendError) and e.retryable),
            before_sleep=self._retrying, reraise=True)
        for attempt in retrying:
            with attempt:
                self._wait_for_slot()
                return self.channel.send(row)
        raise AssertionError("unreachable")  # pragma: no cover


def build_channels(cfg: NotifierSettings) -> dict[str, Channel]:
    return {"sms": SmsChannel(cfg), "email": EmailChannel(cfg), "push": PushChannel(cfg)}
