"""Rules, templates, lint, quiet hours and reschedule tokens: pure, no servers."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from notifier.config import NOTIFICATIONS_DIR, NotifierSettings
from notifier.links import BadToken, reschedule_token, unsubscribe_token, verify_token, verify_unsubscribe
from notifier.lint import lint
from notifier.rules import RulesError, lint_rules, load_rules, parse_rules
from notifier.service import quiet_until
from notifier.store import Contact
from notifier.templates import Templates

RULES = NOTIFICATIONS_DIR / "rules.yaml"
TEMPLATES = NOTIFICATIONS_DIR / "templates"


def test_shipped_rules_and_templates_lint_clean() -> None:
    assert lint(RULES, TEMPLATES) == []


@pytest.mark.parametrize(("event_type", "reason", "level", "rule_id"), [
    ("PICKUP", None, "STANDARD", "shipped"),
    ("ARRIVAL", None, "STANDARD", None),
    ("OUT_FOR_DELIVERY", None, "STANDARD", "out_for_delivery"),
    ("OUT_FOR_DELIVERY", None, "OVERNIGHT", "out_for_delivery_priority"),
    ("DELIVERY_ATTEMPTED", "refused", "STANDARD", "delivery_attempted"),
    ("EXCEPTION", "address_not_found", "STANDARD", "exception_delivery_failure"),
    ("EXCEPTION", "damaged", "EXPRESS", "exception_damaged"),
    ("EXCEPTION", "weather_delay", "STANDARD", "exception_delay"),
    ("RETURN_TO_SENDER", "max_attempts_reached", "STANDARD", "return_to_sender"),
])
def test_most_specific_rule_wins(event_type: str, reason: str | None, level: str, rule_id: str | None) -> None:
    rule = load_rules(RULES).match(event_type, reason, level)
    assert (rule.id if rule else None) == rule_id


def test_windows_per_event_type_and_overrides() -> None:
    rules = load_rules(RULES)
    assert rules.window_s("OUT_FOR_DELIVERY") == 1800
    assert rules.window_s("PICKUP") == 1800  # default_window_s
    assert rules.window_s("PICKUP", {"PICKUP": 3}) == 3


def test_return_to_sender_reaches_both_parties() -> None:
    rule = load_rules(RULES).match("RETURN_TO_SENDER", None, "STANDARD")
    assert rule is not None and set(rule.audience) == {"recipient", "sender"}


T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def test_out_for_delivery_expires_after_half_a_day() -> None:
    rule = load_rules(RULES).match("OUT_FOR_DELIVERY", None, "STANDARD")
    assert rule is not None
    assert rule.stale(T0, T0 + timedelta(hours=11, minutes=59), "OUT_FOR_DELIVERY", T0) is None
    assert rule.stale(T0, T0 + timedelta(hours=12, seconds=1), "OUT_FOR_DELIVERY", T0) == "expired"
    assert rule.stale(T0.replace(tzinfo=None), T0 + timedelta(hours=13), "OUT_FOR_DELIVERY", T0) == "expired"


@pytest.mark.parametrize(("event_type", "reason", "status", "stale"), [
    # out for delivery: any later event makes "today" wrong
    ("OUT_FOR_DELIVERY", None, "DELIVERED", "superseded"),
    ("OUT_FOR_DELIVERY", None, "DELIVERY_ATTEMPTED", "superseded"),
    ("OUT_FOR_DELIVERY", None, "IN_TRANSIT", "superseded"),
    ("OUT_FOR_DELIVERY", None, "RETURN_TO_SENDER", "superseded"),
    # a failed attempt: no longer once delivered, attempted again or returning
    ("DELIVERY_ATTEMPTED", "refused", "RETURN_TO_SENDER", "superseded"),
    ("DELIVERY_ATTEMPTED", "refused", "DELIVERY_ATTEMPTED", "superseded"),
    ("DELIVERY_ATTEMPTED", "refused", "IN_TRANSIT", None),  # back at the station: the reschedule link still helps
    ("EXCEPTION", "access_denied", "DELIVERED", "superseded"),
    # shipped is news until the parcel is out; a delay until it is moving to the door again
    ("PICKUP", None, "IN_TRANSIT", None),
    ("PICKUP", None, "OUT_FOR_DELIVERY", "superseded"),
    ("EXCEPTION", "weather_delay", "IN_TRANSIT", None),
    ("EXCEPTION", "weather_delay", "DELIVERED", "superseded"),
    # never stale: damage, delivery, return
    ("EXCEPTION", "damaged", "DELIVERED", None),
    ("DELIVERED", None, "DELIVERED", None),
    ("RETURN_TO_SENDER", "max_attempts_reached", "RETURN_TO_SENDER", None),
])
def test_a_later_stored_event_supersedes_by_status(event_type: str, reason: str | None, status: str,
                                                   stale: str | None) -> None:
    rule = load_rules(RULES).match(event_type, reason, "STANDARD")
    assert rule is not None
    later = T0 + timedelta(minutes=40)
    assert rule.stale(T0, later, status, later) == stale
    # the event itself is the newest stored one (live operation): never superseded
    assert rule.stale(T0, later, status, T0) is None
    assert rule.stale(T0, later, status, None) is None


def test_lint_names_an_unknown_superseding_status() -> None:
    text = _rules("  - {id: a, when: {event_type: PICKUP}, template: shipped, channels: [email], "
                  "superseded_by: [TELEPORTED]}\n")
    problems = lint_rules(parse_rules(text, "r.yaml"), TEMPLATES)
    assert any("rule a: superseded_by: unknown status 'TELEPORTED'" in p for p in problems)


def _rules(body: str) -> str:
    return "languages: [en]\nrules:\n" + body


def test_lint_names_unknown_event_type_reason_and_level(tmp_path: Path) -> None:
    text = _rules(
        "  - {id: a, when: {event_type: TELEPORTED}, template: delivered, channels: [sms]}\n"
        "  - {id: b, when: {event_type: EXCEPTION, reason_code: [alien_abduction]}, template: exception, "
        "channels: [email]}\n"
        "  - {id: c, when: {event_type: PICKUP, service_level: [SAME_DAY]}, template: shipped, channels: [push]}\n")
    problems = lint_rules(parse_rules(text, "r.yaml"), TEMPLATES)
    assert any("rule a: when.event_type: unknown event type 'TELEPORTED'" in p for p in problems)
    assert any("rule b: when.reason_code: unknown reason code 'alien_abduction'" in p for p in problems)
    assert any("rule c: when.service_level: unknown service level 'SAME_DAY'" in p for p in problems)


def test_lint_names_missing_template_duplicate_ids_and_shadowed_rules() -> None:
    text = _rules(
        "  - {id: a, when: {event_type: PICKUP}, template: no_such_template, channels: [sms]}\n"
        "  - {id: a, when: {event_type: PICKUP}, template: shipped, channels: [email]}\n"
        "  - {id: d, when: {event_type: PICKUP}, template: shipped, channels: [email], reschedule: true}\n")
    problems = lint_rules(parse_rules(text, "r.yaml"), TEMPLATES)
    assert any("rule a: template: missing" in p and "no_such_template" in p for p in problems)
    assert any("id: duplicate rule id" in p for p in problems)
    assert any("same condition as rule a" in p for p in problems)
    assert any("rule d: reschedule:" in p for p in problems)


def test_rules_file_errors_name_the_field() -> None:
    with pytest.raises(RulesError, match=r"rules\.0\.channels\.0"):
        parse_rules(_rules("  - {id: a, when: {event_type: PICKUP}, template: shipped, channels: [fax]}\n"))
    with pytest.raises(RulesError, match="unknown|Extra inputs"):
        parse_rules(_rules("  - {id: a, when: {event_type: PICKUP}, template: shipped, channels: [sms], x: 1}\n"))


def test_lint_catches_a_template_with_an_unknown_variable(tmp_path: Path) -> None:
    shutil.copytree(TEMPLATES, tmp_path / "t")
    (tmp_path / "t" / "sms" / "en" / "delivered.j2").write_text("Delivered {{ no_such_value }}\n")
    problems = lint(RULES, tmp_path / "t")
    assert any("sms/en/delivered.j2" in p and "no_such_value" in p for p in problems)


CTX = {"name": "Ana", "recipient_name": "Ana", "audience": "recipient", "tracking_number": "PT123",
       "tracking_url": "http://x/t/PT123", "status": "DELIVERY_ATTEMPTED", "eta": "Tue 14:00",
       "reason_code": "recipient_unavailable", "attempt_count": 2, "max_attempts": 3,
       "reschedule_url": "http://x/r/tok", "facility": None, "return_tracking_number": "PTRET",
       "return_tracking_url": "http://x/t/PTRET", "severity": "warning"}


def test_failed_attempt_shows_attempt_count_and_reschedule_link() -> None:
    t = Templates(TEMPLATES)
    sms = t.render("sms", "en", "delivery_failed", CTX)
    assert sms.subject is None and "Attempt 2 of 3" in sms.body and "http://x/r/tok" in sms.body
    assert "nobody was available" in sms.body
    email = t.render("email", "es", "delivery_failed", CTX)
    assert email.subject == "No pudimos entregar el paquete PT123" and "Intento 2 de 3" in email.body


def test_unknown_language_falls_back_to_default() -> None:
    r = Templates(TEMPLATES).render("push", "fr", "delivered", {**CTX, "status": "DELIVERED"})
    assert r.subject == "Your parcel PT123 was delivered"


def test_return_template_differs_by_audience() -> None:
    t = Templates(TEMPLATES)
    sender = t.render("email", "en", "return_to_sender", {**CTX, "audience": "sender", "attempt_count": 3})
    recipient = t.render("email", "en", "return_to_sender", {**CTX, "attempt_count": 3})
    assert "coming back to you" in sender.body and "PTRET" in sender.body
    assert "returning to the sender" in recipient.body and "PTRET" in recipient.body


def _contact(tz: str, start: time | None, end: time | None) -> Contact:
    return Contact(uuid.uuid4(), "A", "a@x", "+1", None, "en", tz, start, end, True, True, True)


def test_quiet_hours_in_the_recipients_zone_across_midnight() -> None:
    c = _contact("America/New_York", time(22), time(7))
    # 03:30 UTC = 22:30 New York (EST, UTC-5): quiet until 07:00 New York = 12:00 UTC
    assert quiet_until(c, datetime(2026, 1, 15, 3, 30, tzinfo=UTC)) == datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    # 11:00 UTC = 06:00 New York: still quiet, until 12:00 UTC the same day
    assert quiet_until(c, datetime(2026, 1, 15, 11, 0, tzinfo=UTC)) == datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert quiet_until(c, datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) is None  # 07:00: the end is exclusive
    assert quiet_until(c, datetime(2026, 1, 15, 18, 0, tzinfo=UTC)) is None


def test_no_quiet_hours_never_defers() -> None:
    assert quiet_until(_contact("UTC", None, None), datetime(2026, 1, 15, 3, 0, tzinfo=UTC)) is None


def test_reschedule_token_is_verifiable_and_unforgeable() -> None:
    sid = uuid.uuid4()
    token = reschedule_token(sid, "s" * 32)
    assert verify_token(token, "s" * 32) == sid
    with pytest.raises(BadToken):
        verify_token(token, "t" * 32)
    other = reschedule_token(uuid.uuid4(), "s" * 32)
    with pytest.raises(BadToken):
        verify_token(token.split(".")[0] + "." + other.split(".")[1], "s" * 32)
    with pytest.raises(BadToken):
        verify_token("garbage", "s" * 32)


def test_unsubscribe_token_names_recipient_and_channel_and_is_unforgeable() -> None:
    rid = uuid.uuid4()
    token = unsubscribe_token(rid, "email", "secret-a")
    assert verify_unsubscribe(token, "secret-a") == (rid, "email")
    for bad in (token.replace(".email.", ".sms."), token[:-2] + "AA", "x.email.y", "", token + ".x"):
        with pytest.raises(BadToken):
            verify_unsubscribe(bad, "secret-a")
    with pytest.raises(BadToken):
        verify_unsubscribe(token, "secret-b")
    assert unsubscribe_token(rid, "sms", "secret-a") != token
    with pytest.raises(ValueError):
        unsubscribe_token(rid, "fax", "secret-a")


def test_settings_accept_env_json() -> None:
    cfg = NotifierSettings.model_validate({"windows": '{"PICKUP": 3}', "twilio": {"base_url": "http://x"}})
    assert cfg.windows == {"PICKUP": 3} and cfg.twilio.base_url == "http://x"
