"""ETA source 'route': the route planner's planned arrival is the ETA of a stop that is out for
delivery on a planned route (routing issue 7: the stop order feeds the ETA).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE shipments DROP CONSTRAINT IF EXISTS shipments_eta_source_check")
    op.execute("ALTER TABLE shipments ADD CONSTRAINT shipments_eta_source_check "
               "CHECK (eta_source IN ('model', 'rule', 'route'))")


def downgrade() -> None:
    op.execute("UPDATE shipments SET eta_source = 'rule' WHERE eta_source = 'route'")
    op.execute("ALTER TABLE shipments DROP CONSTRAINT IF EXISTS shipments_eta_source_check")
    op.execute("ALTER TABLE shipments ADD CONSTRAINT shipments_eta_source_check "
               "CHECK (eta_source IN ('model', 'rule'))")
