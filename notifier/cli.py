"""`parcel notify ...`: lint the rules and templates, drain deferred sends, redrive dead letters,
and print the operations view of exceptions."""

from __future__ import annotations

import time
from pathlib import Path

import typer

notify_app = typer.Typer(help="Notifier: rules lint, deferred sends, dead-letter redrive", no_args_is_help=True)


@notify_app.command("lint")
def lint_cmd(rules: Path = typer.Option(None, help="rules file (default: notifier.rules_file)"),
             templates: Path = typer.Option(None, help="templates dir (default: notifier.templates_dir)")) -> None:
    """Check rules against known event types, reason codes, service levels and templates."""
    from config.settings import get_settings
    from notifier.config import notifier_settings
    from notifier.lint import lint

    cfg = notifier_settings(get_settings())
    problems = lint(rules or cfg.rules_file, templates or cfg.templates_dir)
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{rules or cfg.rules_file}: OK")


def _notifier():  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    from config.settings import get_settings
    from notifier.metrics import NotifierMetrics
    from notifier.service import Notifier
    from topologies.bootstrap import tracking_secret

    s = get_settings()
    return Notifier(s, secret=tracking_secret(s), metrics=NotifierMetrics(CollectorRegistry()))


@notify_app.command("drain")
def drain_cmd(loop: bool = typer.Option(False, "--loop", help="keep draining every drain_interval_s")) -> None:
    """Send deferred messages whose quiet hours ended, and pending messages nobody holds."""
    n = _notifier()
    try:
        while True:
            r = n.drain()
            if r.sent or r.dead:
                typer.echo(f"sent {r.sent}, dead-lettered {r.dead}")
            if not loop:
                break
            time.sleep(n.cfg.drain_interval_s)
    finally:
        n.close()


@notify_app.command("redrive")
def redrive_cmd(ids: list[str] = typer.Argument(None, help="notification ids (default: every dead row)")) -> None:
    """Put dead-lettered messages back to pending (after the provider recovered); the drainer sends them."""
    from config.settings import get_settings
    from notifier.store import NotifierStore

    n = NotifierStore(get_settings().postgres.dsn).redrive(ids or None)
    typer.echo(f"{n} message(s) back to pending")


@notify_app.command("exceptions")
def exceptions_cmd(days: int = typer.Option(1, help="how many days back")) -> None:
    """Exceptions and failed attempts by day, region, facility and reason code."""
    from config.settings import get_settings
    from notifier.store import NotifierStore

    rows = NotifierStore(get_settings().postgres.dsn).conn.execute(
        "SELECT day, region, facility_id, reason_code, events FROM exception_daily "
        "WHERE day > current_date - %s ORDER BY day DESC, events DESC", (days,)).fetchall()
    for r in rows:
        typer.echo(f"{r['day']}  {r['region'] or '-':<12} {r['facility_id'] or '-':<14} {r['reason_code']:<22} "
                   f"{r['events']}")
