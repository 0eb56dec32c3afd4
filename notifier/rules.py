"""The rule engine: a normalized event in, the rule that decides its template, channels and
audiences out. Rules live in YAML (config/notifications/rules.yaml); matching and lint live here.

A rule matches on event_type, optionally narrowed by reason_code and/or service_level; the most
specific matching rule wins (a reason or service-level narrowing beats a bare event type), ties go
to the rule written first. No rule → the event is not announced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.domain import EventType, ReasonCode, ServiceLevel, Status

Channel = Literal["sms", "email", "push"]
Audience = Literal["recipient", "sender"]
CHANNELS: tuple[str, ...] = ("sms", "email", "push")
DEFAULT_WINDOW_S = 1800


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    event_type: str
    reason_code: list[str] | None = None
    service_level: list[str] | None = None


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    when: When
    template: str
    channels: list[Channel] = Field(min_length=1)
    audience: list[Audience] = Field(default_factory=lambda: ["recipient"], min_length=1)  # type: ignore[arg-type]
    # Offer the reschedule link (failed delivery attempts, delivery-failure exceptions).
    reschedule: bool = False
    # Escalation level shown to operations and in the template (info < warning < critical).
    severity: Literal["info", "warning", "critical"] = "info"
    # A message that is only true for a while ("out for delivery today") is not sent once its event
    # is older than this (a notifier catching up on a backlog, a scanner that uploaded late).
    expires_after_s: int | None = Field(default=None, ge=1)
    # ... nor once the shipment has moved on: a later event is stored and left it in one of these
    # statuses ("out for delivery" when it is already delivered).
    superseded_by: list[str] = Field(default_factory=list)

    def stale(self, event_at: datetime, now: datetime, status: str | None,
              last_event_at: datetime | None) -> str | None:
        """Why a message of this rule about an event at `event_at` should no longer be sent:
        "expired", "superseded", or None. `status` and `last_event_at` are the shipment's now."""
        if event_at.tzinfo is None:  # a time without a zone is UTC, as everywhere in the system
            event_at = event_at.replace(tzinfo=UTC)
        if self.expires_after_s is not None and now - event_at > timedelta(seconds=self.expires_after_s):
            return "expired"
        if (status in self.superseded_by and last_event_at is not None and last_event_at > event_at):
            return "superseded"
        return None

    @property
    def specificity(self) -> int:
        return (self.when.reason_code is not None) * 2 + (self.when.service_level is not None)


class RulesFile(_Strict):
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    default_language: str = "en"
    windows: dict[str, int] = Field(default_factory=dict)
    default_window_s: int = Field(default=DEFAULT_WINDOW_S, ge=1)
    rules: list[Rule]


class RulesError(ValueError):
    """The rules file cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class RuleSet:
    source: str
    spec: RulesFile

    @property
    def rules(self) -> list[Rule]:
        return self.spec.rules

    def match(self, event_type: str, reason_code: str | None, service_level: str | None) -> Rule | None:
        best: Rule | None = None
        for rule in self.spec.rules:
            w = rule.when
            if w.event_type != event_type:
                continue
            if w.reason_code is not None and reason_code not in w.reason_code:
                continue
            if w.service_level is not None and service_level not in w.service_level:
                continue
            if best is None or rule.specificity > best.specificity:
                best = rule
        return best

    def by_id(self, rule_id: str) -> Rule | None:
        return next((r for r in self.spec.rules if r.id == rule_id), None)

    def window_s(self, event_type: str, overrides: dict[str, int] | None = None) -> int:
        if overrides and event_type in overrides:
            return int(overrides[event_type])
        return int(self.spec.windows.get(event_type, self.spec.default_window_s))


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: invalid YAML: {exc}") from None
    try:
        return RuleSet(source, RulesFile.model_validate(data))
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise RulesError(f"{source}: invalid rules:\n" + "\n".join(lines)) from None


def load_rules(path: str | Path) -> RuleSet:
    p = Path(path)
    if not p.exists():
        raise RulesError(f"rules file {p} does not exist")
    return parse_rules(p.read_text(), str(p))


def template_path(templates_dir: Path, channel: str, language: str, template: str) -> Path:
    return templates_dir / channel / language / f"{template}.j2"


def lint_rules(ruleset: RuleSet, templates_dir: Path) -> list[str]:
    """Problems as `source: rule <id>: field: message` lines; empty when the rules are sound.

    Checks: known event types, reason codes, service levels and statuses; unique rule ids; a
    template for every channel of every rule in every language; windows named by known event types;
    two rules with the same condition (the second could never win); reschedule offered only where it
    fits.
    """
    problems: list[str] = []
    src = ruleset.source
    events = {e.value for e in EventType}
    reasons = {r.value for r in ReasonCode}
    levels = {s.value for s in ServiceLevel}
    statuses = {s.value for s in Status}
    spec = ruleset.spec
    if spec.default_language not in spec.languages:
        problems.append(f"{src}: default_language {spec.default_language!r} is not in languages")
    for et in spec.windows:
        if et not in events:
            problems.append(f"{src}: windows: unknown event type {et!r}")
    seen_ids: set[str] = set()
    seen_when: dict[tuple[object, ...], str] = {}
    for rule in spec.rules:
        where = f"{src}: rule {rule.id}"
        if rule.id in seen_ids:
            problems.append(f"{where}: id: duplicate rule id")
        seen_ids.add(rule.id)
        w = rule.when
        if w.event_type not in events:
            problems.append(f"{where}: when.event_type: unknown event type {w.event_type!r} "
                            f"(known: {', '.join(sorted(events))})")
        for rc in w.reason_code or []:
            if rc not in reasons:
                problems.append(f"{where}: when.reason_code: unknown reason code {rc!r}")
        for sl in w.service_level or []:
            if sl not in levels:
                problems.append(f"{where}: when.service_level: unknown service level {sl!r}")
        for st in rule.superseded_by:
            if st not in statuses:
                problems.append(f"{where}: superseded_by: unknown status {st!r} (known: {', '.join(sorted(statuses))})")
        key = (w.event_type, tuple(sorted(w.reason_code or [])) if w.reason_code is not None else None,
               tuple(sorted(w.service_level or [])) if w.service_level is not None else None)
        if key in seen_when:
            problems.append(f"{where}: when: same condition as rule {seen_when[key]} (it can never match)")
        seen_when.setdefault(key, rule.id)
        if rule.reschedule and w.event_type not in ("DELIVERY_ATTEMPTED", "EXCEPTION"):
            problems.append(f"{where}: reschedule: only DELIVERY_ATTEMPTED or EXCEPTION can offer a reschedule")
        for channel in rule.channels:
            for lang in spec.languages:
                path = template_path(templates_dir, channel, lang, rule.template)
                if not path.exists():
                    problems.append(f"{where}: template: missing {path}")
    return problems
