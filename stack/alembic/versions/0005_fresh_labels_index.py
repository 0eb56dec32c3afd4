"""A partial index over labels no pipeline checkpoint has touched yet (status LABEL_CREATED,
last_event_id NULL), ordered by creation time: the scan pipeline reads the next fresh labels in one
query when a LABEL_CREATED finds no stream state (sinks/directories.py `load_label`). It holds only
labels waiting for their first scan, so it stays small.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS shipments_fresh_labels_idx ON shipments (created_at) "
               "WHERE status = 'LABEL_CREATED' AND last_event_id IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS shipments_fresh_labels_idx")
