"""notify_plan: a normalized event (bytes from `notifications`) in, a `PlannedEvent` (the event and
the rule that decides its template, channels and audiences) out. No rule → Drop("no_rule"), unless
the event carries a reason code, which the operations view still counts downstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from notifier.config import notifier_settings
from notifier.events import NotificationEvent
from notifier.rules import Rule, load_rules
from operators.registry import BuildContext, Drop, Emit, Outcome, Reject, StepConfig, StepContext, operator


class NotifyPlanConfig(StepConfig):
    # Default: notifier.rules_file from settings (config/notifications/rules.yaml).
    rules_file: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    event: NotificationEvent
    rule: Rule | None
    kafka_timestamp_ms: int = 0


class NotifyPlanStep:
    def __init__(self, step_id: str, rules: Any) -> None:
        self.step_id = step_id
        self.rules = rules

    def __call__(self, value: Any, ctx: StepContext) -> Outcome:
        if value is None:
            return Reject("malformed_json", "empty value or tombstone")
        try:
            data = orjson.loads(value) if isinstance(value, bytes | str) else value
        except orjson.JSONDecodeError:
            return Reject("malformed_json", "value is not JSON")
        if not isinstance(data, dict):
            return Reject("invalid_payload", "value is not a JSON object")
        try:
            event = NotificationEvent.model_validate(data)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            return Reject("invalid_payload", fields)
        rule = self.rules.match(event.notify_type,
                                event.reason_code.value if event.reason_code else None, event.service_level)
        if rule is None and event.reason_code is None:
            return Drop("no_rule")
        return Emit(PlannedEvent(event, rule, ctx.message.timestamp_ms))


@operator("notify_plan", config=NotifyPlanConfig, rejects=("malformed_json", "invalid_payload"))
def build_notify_plan(ctx: BuildContext, config: NotifyPlanConfig) -> NotifyPlanStep:
    """Decode a normalized event and pick its notification rule (config/notifications/rules.yaml)."""
    path = config.rules_file
    if path is None:
        settings = ctx.resources.settings
        path = str(notifier_settings(settings).rules_file) if settings is not None else None
    if path is None:
        from notifier.config import NotifierSettings

        path = str(NotifierSettings().rules_file)
    return NotifyPlanStep(ctx.step_id, load_rules(path))
