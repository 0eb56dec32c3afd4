"""Typed settings of the notifier, read from the `notifier:` section of config/settings.yaml and
PARCEL_NOTIFIER__<KEY> environment overrides (nested: PARCEL_NOTIFIER__TWILIO__BASE_URL=...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.settings import CONFIG_DIR, Settings

NOTIFICATIONS_DIR = CONFIG_DIR / "notifications"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TwilioSettings(_Strict):
    account_sid: str = "AC00000000000000000000000000000000"
    auth_token: str = "local-dev-token"
    from_number: str = "+15005550006"
    # Tests point this at a local server speaking Twilio's Messages API; production keeps the default.
    base_url: str = "https://api.twilio.com"
    timeout_s: float = 10.0


class SmtpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = 1025
    sender: str = "Parcel Tracking <notify@parcel.example>"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    # The connection (with its STARTTLS and login) is kept open between messages and reopened when
    # it has been idle this long (servers drop idle clients; many after 60 s or more) or was dropped.
    # 0: a connection per message.
    keepalive_s: float = Field(default=30.0, ge=0)


class PushSettings(_Strict):
    timeout_s: float = 5.0


class RetrySettings(_Strict):
    attempts: int = Field(default=3, ge=1, le=10)
    backoff_initial_s: float = Field(default=0.2, ge=0)
    backoff_max_s: float = Field(default=5.0, ge=0)


class NotifierSettings(_Strict):
    rules_file: Path = NOTIFICATIONS_DIR / "rules.yaml"
    templates_dir: Path = NOTIFICATIONS_DIR / "templates"
    # Base of the links in messages: the tracking page and the reschedule form (/r/{token}).
    public_base_url: str = "http://127.0.0.1:8080"  # the API (api.port) serves /t/ and /r/
    # Dedupe window per event type (seconds); overrides the rules file's `windows`.
    windows: dict[str, int] = Field(default_factory=dict)
    # Provider rate limits (python-limits syntax), enforced through Redis so every process of the
    # job shares them: a long code sends about one SMS a second.
    rate_limits: dict[str, str] = Field(
        default_factory=lambda: {"sms": "1/second", "email": "50/second", "push": "100/second"})
    # Messages of one channel in flight at once per process, at most (worker threads; each email
    # worker holds its own SMTP connection). A remote provider answers in tens to hundreds of
    # milliseconds, so one sender at a time caps a channel at a few messages a second whatever its
    # rate limit. A batch starts with one worker per channel and adds one each time a worker's
    # messages took `slow_send_s` or more apiece: a provider that answers at once (a local relay)
    # keeps one worker, since on few cores more threads only contend for the interpreter. Messages
    # to the same address stay on one worker, in order.
    concurrency: dict[str, int] = Field(default_factory=lambda: {"sms": 4, "email": 2, "push": 4})
    slow_send_s: float = Field(default=0.02, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    # Quiet hours hold back the intrusive channels only; an email waits in the inbox anyway.
    quiet_channels: list[str] = Field(default_factory=lambda: ["sms", "push"])
    lease_s: float = Field(default=60.0, gt=0)
    drain_interval_s: float = Field(default=2.0, gt=0)
    dead_letter_topic: str = "scan-events-dlq"

    @field_validator("windows", "rate_limits", "concurrency", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        # Environment overrides arrive as JSON text: PARCEL_NOTIFIER__WINDOWS='{"PICKUP": 3}'.
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("concurrency")
    @classmethod
    def _at_least_one(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 1 or n > 64}
        if bad:
            raise ValueError(f"concurrency per channel must be 1-64, got {bad}")
        return v

    def workers(self, channel: str) -> int:
        return self.concurrency.get(channel, 1)


def notifier_settings(settings: Settings) -> NotifierSettings:
    return NotifierSettings.model_validate(settings.notifier or {})
