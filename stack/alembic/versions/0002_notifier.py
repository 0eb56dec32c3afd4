"""Notifier: the outbox (every planned message and its state), the DELIVERED flag's owner, and the
exception events behind the operations view (DESIGN.md sections 6 and 7).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATES = ("pending", "deferred", "sent", "dead")


def upgrade() -> None:
    # Guarded: a database that reached a later revision while this one was still empty (shared
    # development databases) gets these objects by running upgrade() once more.
    inspector = sa.inspect(op.get_bind())
    if "notification_outbox" in inspector.get_table_names():
        return
    # One row per (event, audience, channel): the id is derived from the event id, so a replay of
    # the same Kafka record finds its rows instead of creating new ones (the outbox half of the
    # crash-safe design, docs/notifier.md). A sender leases a row before it sends.
    op.create_table(
        "notification_outbox",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True)),
        sa.Column("shipment_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("recipient_id", pg.UUID(as_uuid=True)),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("provider_ref", sa.Text),
        sa.Column("event_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"state IN {STATES}", name="outbox_state"),
        sa.CheckConstraint("channel IN ('sms', 'email', 'push')", name="outbox_channel"),
    )
    op.create_index("outbox_due_idx", "notification_outbox", ["state", "not_before"],
                    postgresql_where=sa.text("state IN ('pending', 'deferred')"))
    op.create_index("outbox_shipment_idx", "notification_outbox", ["shipment_id"])
    op.create_index("outbox_event_idx", "notification_outbox", ["event_id"])

    # The DELIVERED flag remembers which event set it: a replay of that same event (crash after the
    # flag, before the send) goes on to send; any other DELIVERED is a duplicate.
    op.add_column("delivered_notifications", sa.Column("event_id", pg.UUID(as_uuid=True)))

    # Exceptions and failed attempts, one row per event (replay-safe by its primary key), for the
    # operations view: counts by reason code, facility, region and day.
    op.create_table(
        "exception_events",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("shipment_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("reason_code", sa.Text, nullable=False),
        sa.Column("facility_id", sa.Text),
        sa.Column("region", sa.Text),
        sa.Column("attempt_count", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("exception_events_day_idx", "exception_events", ["day", "reason_code"])
    op.execute(
        "CREATE VIEW exception_daily AS SELECT day, region, facility_id, reason_code, count(*) AS events "
        "FROM exception_events GROUP BY day, region, facility_id, reason_code"
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS exception_daily")
    op.drop_table("exception_events")
    op.drop_column("delivered_notifications", "event_id")
    op.drop_table("notification_outbox")
