"""`parcel notify lint`: the rules against the known event types, reason codes, service levels and
channels, every template present in every language and rendering with sample values."""

from __future__ import annotations

from pathlib import Path

from notifier.rules import CHANNELS, RulesError, lint_rules, load_rules
from notifier.templates import Templates, lint_templates


def lint(rules_file: Path, templates_dir: Path) -> list[str]:
    try:
        ruleset = load_rules(rules_file)
    except RulesError as exc:
        return [str(exc)]
    problems = lint_rules(ruleset, templates_dir)
    templates = Templates(templates_dir, ruleset.spec.default_language)
    names = {r.template for r in ruleset.rules} | {"reschedule_confirmed"}
    problems += lint_templates(templates, names, CHANNELS, ruleset.spec.languages)
    return problems
