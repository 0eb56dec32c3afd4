"""The channels against local provider servers through the real client libraries (twilio, smtplib,
httpx): the provider's rate limit is respected (python-limits on the real Redis, shared by every
process), a refusal (4xx) is not retried, an outage (5xx) is retried with backoff."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from config.settings import Settings
from notifier.channels import EmailChannel, PushChannel, Sender, SendError, SmsChannel
from notifier.config import NotifierSettings, RetrySettings, TwilioSettings
from tests.integration.providers import Providers


@pytest.fixture(scope="module")
def providers() -> Iterator[Providers]:
    p = Providers().start()
    yield p
    p.stop()


def _cfg(providers: Providers, rate: str = "100/second") -> NotifierSettings:
    return NotifierSettings(
        twilio=TwilioSettings(base_url=providers.base_url),
        smtp={"host": "127.0.0.1", "port": providers.smtp_port},
        retry=RetrySettings(attempts=3, backoff_initial_s=0.05, backoff_max_s=0.1),
        rate_limits={"sms": rate, "email": rate, "push": rate})


class _Tagged(SmsChannel):
    """The SMS channel under a name of its own, so this test's rate-limit window is not shared with
    a notifier running elsewhere on the same Redis."""

    def __init__(self, cfg: NotifierSettings) -> None:
        super().__init__(cfg)
        self.name = f"sms-test-{uuid.uuid4().hex[:8]}"


def _row(address: str, channel: str = "sms") -> dict[str, str]:
    return {"notification_id": f"{uuid.uuid4()}:recipient:{channel}", "address": address, "body": "hello",
            "subject": "Hi", "shipment_id": str(uuid.uuid4()), "event_type": "DELIVERED"}


def test_sms_rate_limit_is_respected(stack: Settings, providers: Providers) -> None:
    channel = _Tagged(_cfg(providers))
    cfg = _cfg(providers).model_copy(update={"rate_limits": {channel.name: "4/second"}})
    sender = Sender(channel, cfg, stack.redis.url)
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    t0 = time.monotonic()
    refs = [sender.send(_row(phone)) for _ in range(9)]
    elapsed = time.monotonic() - t0
    assert all(r.startswith("SM") for r in refs)
    assert elapsed >= 1.9, f"9 messages at 4/s need two more windows, took {elapsed:.2f} s"
    stamps = sorted(r.at for r in providers.receipts if r.to == phone)
    assert len(stamps) == 9
    for i in range(len(stamps) - 4):
        # (receipt times carry the HTTP round trip, which varies by up to ~0.1 s between requests)
        assert stamps[i + 4] - stamps[i] >= 0.8, "never more than 4 in any second"


def test_an_sms_whose_answer_was_lost_is_not_sent_again(stack: Settings, providers: Providers) -> None:
    """Twilio took the message but the answer came after the client's timeout: the retry asks
    Twilio's list of recent messages first and takes that message's sid instead of sending again."""
    cfg = _cfg(providers)
    cfg = cfg.model_copy(update={"twilio": cfg.twilio.model_copy(update={"timeout_s": 0.5})})
    sender = Sender(SmsChannel(cfg), cfg, stack.redis.url)
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    providers.slow[phone] = 2.0
    ref = sender.send(_row(phone))
    assert len([r for r in providers.receipts if r.to == phone]) == 1
    listing = providers.twilio.page(f"/2010-04-01/Accounts/x/Messages.json?To={phone.replace('+', '%2B')}")
    assert [m["sid"] for m in listing["messages"]] == [ref]


def test_a_row_leased_again_is_sent_when_twilio_has_no_such_message(stack: Settings, providers: Providers) -> None:
    cfg = _cfg(providers)
    channel = SmsChannel(cfg)
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    first = channel.send(_row(phone))  # another message to the same number, another body
    before = len(providers.listings)
    again = {**_row(phone), "body": "hello again", "attempts": 2}
    ref = channel.send(again)
    assert ref != first and len(providers.listings) == before + 1
    assert sorted(r.body for r in providers.receipts if r.to == phone) == ["hello", "hello again"]
    assert channel.send(again) == ref, "once taken, the same row is matched, not sent"
    assert len([r for r in providers.receipts if r.to == phone]) == 2


def test_emails_share_one_smtp_connection_and_survive_a_dropped_one(providers: Providers) -> None:
    channel = EmailChannel(_cfg(providers))
    start = len(providers.smtp_peers)
    for i in range(3):
        channel.send({**_row(f"keep{i}@example.com", "email"), "body": f"message {i}"})
    assert channel.connections == 1 and len(set(providers.smtp_peers[start:])) == 1
    providers.restart_smtp()  # the server goes away and comes back: the kept connection is dead
    channel.send({**_row("after-restart@example.com", "email"), "body": "after"})
    assert channel.connections == 2
    assert [r.body for r in providers.receipts if r.to == "after-restart@example.com"] == ["after"]
    channel.close()


def test_an_idle_smtp_connection_is_reopened(providers: Providers) -> None:
    cfg = _cfg(providers)
    channel = EmailChannel(cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"keepalive_s": 0.2})}))
    channel.send(_row("idle1@example.com", "email"))
    time.sleep(0.4)
    channel.send(_row("idle2@example.com", "email"))
    assert channel.connections == 2
    channel.close()


def test_refusal_is_not_retried_outage_is(stack: Settings, providers: Providers) -> None:
    cfg = _cfg(providers)
    sender = Sender(SmsChannel(cfg), cfg, stack.redis.url)
    bad, down = (f"+1555{uuid.uuid4().int % 10**7:07d}" for _ in range(2))
    providers.reject.add(bad)
    providers.fail.add(down)
    with pytest.raises(SendError) as refused:
        sender.send(_row(bad))
    assert refused.value.reason == "provider_rejected" and not refused.value.retryable
    assert len([a for a in providers.attempts if a.to == bad]) == 1
    with pytest.raises(SendError) as outage:
        sender.send(_row(down))
    assert outage.value.reason == "provider_unavailable"
    assert len([a for a in providers.attempts if a.to == down]) == 3


def test_email_and_push_reach_their_servers(stack: Settings, providers: Providers) -> None:
    cfg = _cfg(providers)
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    ref = Sender(EmailChannel(cfg), cfg, stack.redis.url).send(_row(email, "email"))
    got = [r for r in providers.receipts if r.to == email]
    assert len(got) == 1 and got[0].subject == "Hi" and got[0].raw["Message-ID"] == ref
    path = f"/push/{uuid.uuid4().hex[:10]}"
    Sender(PushChannel(cfg), cfg, stack.redis.url).send(_row(providers.base_url + path, "push"))
    assert [r.body for r in providers.receipts if r.to == path] == ["hello"]
