"""The alert rules are valid Prometheus rules (`promtool check rules`) and the address_not_found
alert fires on a jump and stays quiet on a normal day (`promtool test rules`). promtool comes from
the Debian package `prometheus` (stack/bootstrap.sh installs it); a missing promtool fails."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "notifier_alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "notifier_alerts_test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "notifier.json"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install the Debian package `prometheus` (make bootstrap)"
    return path


def test_alert_rules_pass_promtool_check() -> None:
    r = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_address_not_found_alert_fires_on_a_jump_only() -> None:
    r = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                       cwd=RULE_TESTS.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_queries_name_metrics_the_notifier_exports() -> None:
    from prometheus_client import CollectorRegistry

    from notifier.metrics import NotifierMetrics

    registry = CollectorRegistry()
    NotifierMetrics(registry)
    exported = {m.name for m in registry.collect()}
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has panels with queries"
    for expr in exprs:
        assert any(name in expr for name in exported), f"{expr!r} names no notifier metric"
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("exception", "dead letter", "outcome", "dedupe"):
        assert topic in titles
