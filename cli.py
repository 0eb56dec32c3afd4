"""parcel: the one command-line entry point.

Stack (up, down, status, migrate, seed), topologies (run, lint, describe), tools (label, simulate)
and the sub-apps of the ETA model (`parcel eta ...`) and the route optimizer (`parcel route ...`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from config.settings import SettingsError, check_all_reachable, get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(msg, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def up(
    only: list[str] = typer.Option(None, "--only", help="start only these servers"),
    migrate_: bool = typer.Option(True, "--migrate/--no-migrate", help="apply migrations after start"),
    seed_: bool = typer.Option(True, "--seed/--no-seed", help="load the facility network"),
) -> None:
    """Start the local stack (idempotent), create topics, migrate and seed."""
    from stack.servers import StackError
    from stack.servers import up as stack_up

    s = get_settings()
    t0 = time.monotonic()
    typer.echo(f"stack: starting under {s.stack.dir}")
    try:
        stack_up(s, only=only)
    except StackError as exc:
        _fail(str(exc))
    if migrate_ and not only:
        migrate(target="head")
    if seed_ and not only:
        seed(path=None)
    typer.echo(f"stack: ready in {time.monotonic() - t0:.1f} s")


@app.command()
def down() -> None:
    """Stop the background jobs and every server of the local stack (data is kept under .stack/)."""
    from stack.servers import down as stack_down
    from topologies.jobs import stop_all

    for name in stop_all(get_settings()):
        typer.echo(f"  job        {name} stopped")
    stack_down(get_settings(), echo=typer.echo)


@app.command()
def status(check: bool = typer.Option(False, "--check", help="exit 1 unless every server is up")) -> None:
    """Report each server: address, up or down, pid, memory, log file."""
    from stack.servers import status as stack_status

    rows = stack_status(get_settings())
    for r in rows:
        rss = f"{r.rss_mb:7.0f} MB" if r.rss_mb else "      - "
        state = typer.style("up  ", fg=typer.colors.GREEN) if r.up else typer.style("down", fg=typer.colors.RED)
        typer.echo(f"  {r.name:<10} {r.address:<16} {state} pid={r.pid or '-':<8} rss={rss}  log={r.log}")
    if check and not all(r.up for r in rows):
        raise typer.Exit(1)


@app.command()
def migrate(
    target: str = typer.Option("head", help="alembic revision for PostgreSQL (e.g. head, base, -1)"),
) -> None:
    """Apply the PostgreSQL (Alembic) and Cassandra (versioned CQL) migrations; idempotent."""
    from stack import migrations

    s = get_settings()
    try:
        check_all_reachable(s)
        pg = migrations.migrate_postgres(s, target)
        cql = migrations.migrate_cassandra(s)
    except SettingsError as exc:
        _fail(str(exc))
    typer.echo(f"  postgres   at revision {pg}")
    typer.echo(f"  cassandra  applied {cql or 'nothing new'}")


@app.command()
def seed(path: Path = typer.Option(None, help="facility CSV (default: config/facilities/us_network.csv)")) -> None:
    """Load the facility network into PostgreSQL (upsert by facility_id; idempotent)."""
    from stack.seed import seed_facilities

    n = seed_facilities(get_settings(), path)
    typer.echo(f"  facilities {n} loaded")


@app.command()
def check() -> None:
    """Check that every configured address accepts connections (names the wrong setting)."""
    try:
        check_all_reachable(get_settings())
    except SettingsError as exc:
        _fail(str(exc))
    typer.echo("all stores reachable")


@app.command()
def run(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="topology YAML"),
    metrics_port: int = typer.Option(None, "--metrics-port", help="override metrics.port (0: off)"),
    state_dir: Path = typer.Option(None, "--state-dir", help="local state (RocksDB) directory"),
    group: str = typer.Option(None, "--group", help="override the topology's consumer group"),
    instance_id: str = typer.Option(None, "--instance-id", envvar="PARCEL_INSTANCE_ID",
                                    help="stable id of this process (static group membership: a restart "
                                         "takes its partitions back at once)"),
) -> None:
    """Run a topology as a streaming job; several processes of one file share the work."""
    import logging

    from topologies.bootstrap import resources_for
    from topologies.build import run as run_topology
    from topologies.lint import TopologyError, load_topology

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # the twilio client logs every request and header at INFO
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    s = get_settings()
    try:
        spec = load_topology(file)
    except TopologyError as exc:
        _fail(str(exc), 2)
    check_all_reachable(s)
    resources = resources_for(s, spec.name, metrics_port=metrics_port)
    options: dict[str, str] = {}
    if group:
        options["consumer_group"] = group
    if instance_id:
        options["instance_id"] = instance_id
    run_topology(file, resources=resources, settings=s, state_dir=state_dir, app_options=options)


@app.command()
def lint(files: list[Path] = typer.Argument(..., help="topology YAML files")) -> None:
    """Check topology files: unknown operator, unknown key, bad knob, missing dead-letter topic."""
    from topologies.lint import lint_file

    problems = [p for f in files for p in lint_file(f)]
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(files)} topology file(s) OK")


@app.command()
def describe(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Print the wired graph of a topology file."""
    from topologies.describe import describe_file

    typer.echo(describe_file(file))


@app.command()
def simulate(
    shipments: int = typer.Option(200, "--shipments", "-n", min=1, help="shipments in the day"),
    seed: int = typer.Option(0, help="the same seed gives the same day"),
    duplicates: float = typer.Option(0.02, help="share of messages re-sent with the same event_id"),
    invalid: float = typer.Option(0.01, help="share of messages that break the state machine"),
    malformed: float = typer.Option(0.01, help="share of garbage messages (bad JSON, types, ...)"),
    exceptions: float = typer.Option(0.05, help="share of shipments with an EXCEPTION"),
    failed_attempts: float = typer.Option(0.08, help="share of shipments with a failed delivery attempt"),
    returns: float = typer.Option(0.02, help="share of shipments reaching 3 attempts (return to sender)"),
    rate: float = typer.Option(None, help="messages per second (default: as fast as possible)"),
) -> None:
    """Produce a realistic carrier day on scan-events (labels first), and print what to expect."""
    import json
    from collections import Counter

    from simulator.live import plan_day, run_day

    s = get_settings()
    check_all_reachable(s)
    day = plan_day(shipments, seed=seed, duplicate_share=duplicates, invalid_transition_share=invalid,
                   malformed_share=malformed, exception_share=exceptions, failed_attempt_share=failed_attempts,
                   return_share=returns)
    result = run_day(s, day, rate_per_s=rate)
    finals = Counter(o.status.value for o in day.expected.values() if o.status is not None)
    typer.echo(json.dumps({
        "shipments": len(day.shipments), "labels": len(day.shipments), "scan_messages": len(day.messages),
        "kinds": day.kinds, "dead_letter_reasons": day.reasons, "expected_final_status": dict(finals),
        "produced": result.sent if hasattr(result, "sent") else None,
        "sample_tracking_number": day.shipments[0].tracking_number,
    }, indent=2, default=str))


@app.command()
def demo(
    shipments: int = typer.Option(300, "--shipments", "-n", min=1, help="shipments in the simulated day"),
    seed: int = typer.Option(None, help="seed of the day (default: random)"),
) -> None:
    """The main job: the scan pipeline in the background, fed a simulated carrier day; where to look."""
    from simulator.demo import run_demo

    s = get_settings()
    check_all_reachable(s)
    run_demo(s, shipments, seed, typer.echo)


label_app = typer.Typer(help="Shipping labels", no_args_is_help=True)
app.add_typer(label_app, name="label")


@label_app.command("create")
def label_create(
    count: int = typer.Option(1, "--count", "-n", min=1, help="how many shipments"),
    service_level: str = typer.Option(None, "--service-level", help="STANDARD|EXPRESS|OVERNIGHT|ECONOMY"),
    origin: str = typer.Option(None, "--origin", help="origin facility id (default: random)"),
    destination: str = typer.Option(None, "--destination", help="destination delivery station id"),
    emit: bool = typer.Option(True, "--emit/--no-emit", help="emit LABEL_CREATED on scan-events"),
) -> None:
    """Create shipments (LABEL_CREATED) and print one JSON line per shipment."""
    import json

    from api.labels import LabelError, create_labels
    from models.domain import ServiceLevel

    level = None
    if service_level:
        try:
            level = ServiceLevel(service_level.upper())
        except ValueError:
            _fail(f"--service-level: expected one of {', '.join(ServiceLevel)}, got {service_level!r}", 2)
    try:
        labels = create_labels(get_settings(), count, service_level=level, origin=origin,
                               destination=destination, emit=emit)
    except LabelError as exc:
        _fail(str(exc), 2)
    for label in labels:
        typer.echo(json.dumps(label.to_json()))


def _mount_optional() -> None:
    """Sub-apps of parts that stand on their own."""
    try:
        from models.eta.cli import eta_app

        app.add_typer(eta_app, name="eta", help="ETA model: train, evaluate, retrain")
    except ImportError:
        pass
    try:
        from routing.cli import route_app

        app.add_typer(route_app, name="route", help="Route optimizer: plan, bench")
    except ImportError:
        pass
    from notifier.cli import notify_app

    app.add_typer(notify_app, name="notify", help="Notifier: rules lint, deferred sends, dead-letter redrive")
    try:
        from api.cli import api_app

        app.add_typer(api_app, name="api", help="HTTP API and tracking page: serve, start")
    except ImportError:
        pass


def main() -> None:
    _mount_optional()
    try:
        app()
    except SettingsError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
