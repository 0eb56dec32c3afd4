"""Route plans: each driver route's ordered stops (the route optimizer, issue 7).

`routes` holds one row per driver route (depot, shift start, engine, how many times it was planned);
`route_stops` one row per (route, shipment): its place in the order, planned arrival, delivery window
and status. The tracking page and the ETA read `route_stops` ("stop 7 of 23", stops remaining).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STOP_STATUS = ("planned", "done", "attempted", "unserved")


def upgrade() -> None:
    # Idempotent: the empty stub of this revision was applied to shared databases before it was filled,
    # so it may be re-run after `alembic stamp 0002` (or 0001) without failing on what exists.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "routes" not in existing:
        _create_routes()
    if "route_stops" not in existing:
        _create_route_stops()


def _create_routes() -> None:
    op.create_table(
        "routes",
        sa.Column("route_id", sa.Text, primary_key=True),
        sa.Column("driver_id", sa.Text, nullable=False),
        sa.Column("depot_facility_id", sa.Text, sa.ForeignKey("facilities.facility_id")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shift_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.Text),
        sa.Column("objective", sa.Float),
        sa.Column("plan_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("planned_at", sa.DateTime(timezone=True)),
        # The input offset of the last event that re-planned this route: a replayed event (<= it) is a no-op.
        sa.Column("last_source", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("routes_driver_idx", "routes", ["driver_id", "started_at"])


def _create_route_stops() -> None:
    op.create_table(
        "route_stops",
        sa.Column("route_id", sa.Text, sa.ForeignKey("routes.route_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("shipment_id", pg.UUID(as_uuid=True), sa.ForeignKey("shipments.shipment_id"), primary_key=True),
        sa.Column("driver_id", sa.Text, nullable=False),
        # 1-based order among the served stops; NULL while unserved.
        sa.Column("seq", sa.Integer),
        sa.Column("planned_arrival", sa.DateTime(timezone=True)),
        sa.Column("planned_departure", sa.DateTime(timezone=True)),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False, server_default="planned"),
        sa.Column("unserved_reason", sa.Text),
        sa.Column("visited_at", sa.DateTime(timezone=True)),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(f"status IN {STOP_STATUS!r}", name="route_stop_status"),
        sa.CheckConstraint("seq IS NULL OR seq > 0", name="route_stop_seq"),
        sa.CheckConstraint("window_end IS NULL OR window_start IS NULL OR window_end > window_start",
                           name="route_stop_window_order"),
    )
    op.create_index("route_stops_shipment_idx", "route_stops", ["shipment_id", "added_at"])


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS route_stops")
    op.execute("DROP TABLE IF EXISTS routes")
