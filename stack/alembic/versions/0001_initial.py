"""Shipments, facilities, recipients, reschedule requests, delivered flags (DESIGN.md section 6).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUS = ("LABEL_CREATED", "PICKED_UP", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED",
          "DELIVERY_ATTEMPTED", "EXCEPTION", "RETURN_TO_SENDER")
SERVICE = ("STANDARD", "EXPRESS", "OVERNIGHT", "ECONOMY")
FACILITY = ("origin", "hub", "sort_center", "delivery_station")


def upgrade() -> None:
    status = pg.ENUM(*STATUS, name="shipment_status", create_type=False)
    service = pg.ENUM(*SERVICE, name="service_level", create_type=False)
    ftype = pg.ENUM(*FACILITY, name="facility_type", create_type=False)
    for e in (status, service, ftype):
        e.create(op.get_bind(), checkfirst=True)

    op.create_table(
        "facilities",
        sa.Column("facility_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("city", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("zip", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lng", sa.Float, nullable=False),
        sa.Column("type", ftype, nullable=False),
        sa.CheckConstraint("lat BETWEEN -90 AND 90 AND lng BETWEEN -180 AND 180", name="facility_coords"),
    )
    op.create_index("facilities_type_idx", "facilities", ["type"])

    op.create_table(
        "recipients",
        sa.Column("recipient_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("push_endpoint", sa.Text),
        sa.Column("language", sa.Text, nullable=False, server_default="en"),
        sa.Column("timezone", sa.Text, nullable=False, server_default="America/New_York"),
        sa.Column("quiet_hours_start", sa.Time),
        sa.Column("quiet_hours_end", sa.Time),
        sa.Column("opt_in_sms", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("opt_in_email", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("opt_in_push", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )

    op.create_table(
        "shipments",
        sa.Column("shipment_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tracking_number", sa.Text, nullable=False, unique=True),
        sa.Column("sender_id", pg.UUID(as_uuid=True), sa.ForeignKey("recipients.recipient_id")),
        sa.Column("recipient_id", pg.UUID(as_uuid=True), sa.ForeignKey("recipients.recipient_id")),
        sa.Column("recipient_address", pg.JSONB),  # NULL only for scanner-created shipments
        sa.Column("dest_lat", sa.Float),
        sa.Column("dest_lng", sa.Float),
        sa.Column("weight_grams", sa.Integer, sa.CheckConstraint("weight_grams > 0")),
        sa.Column("dimensions", pg.JSONB),
        sa.Column("service_level", service, nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("origin_facility_id", sa.Text, sa.ForeignKey("facilities.facility_id")),
        sa.Column("destination_facility_id", sa.Text, sa.ForeignKey("facilities.facility_id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("eta", sa.DateTime(timezone=True)),
        sa.Column("eta_source", sa.Text, sa.CheckConstraint("eta_source IN ('model', 'rule')")),
        sa.Column("eta_interval", pg.TSTZRANGE),
        sa.Column("model_version", sa.Text),
        sa.Column("attempt_count", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("last_event_at", sa.DateTime(timezone=True)),
        sa.Column("last_event_id", pg.UUID(as_uuid=True)),
        sa.Column("return_of", pg.UUID(as_uuid=True), sa.ForeignKey("shipments.shipment_id")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("shipments_status_idx", "shipments", ["status"])
    op.create_index("shipments_return_of_idx", "shipments", ["return_of"])

    op.create_table(
        "reschedule_requests",
        sa.Column("request_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("shipment_id", pg.UUID(as_uuid=True), sa.ForeignKey("shipments.shipment_id"), nullable=False),
        sa.Column("kind", sa.Text, sa.CheckConstraint("kind IN ('window', 'pickup')"), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        sa.Column("pickup_facility_id", sa.Text, sa.ForeignKey("facilities.facility_id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind <> 'window' OR window_end > window_start", name="reschedule_window_order"),
    )

    # DELIVERED is announced once ever: a permanent flag that survives any Redis restart.
    op.create_table(
        "delivered_notifications",
        sa.Column("shipment_id", pg.UUID(as_uuid=True), sa.ForeignKey("shipments.shipment_id"), primary_key=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    for table in ("delivered_notifications", "reschedule_requests", "shipments", "recipients", "facilities"):
        op.drop_table(table)
    for name in ("shipment_status", "service_level", "facility_type"):
        op.execute(f"DROP TYPE IF EXISTS {name}")
