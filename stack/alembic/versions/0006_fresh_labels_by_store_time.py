"""The fresh-labels index of 0005 ordered by when the label was stored (updated_at, then created_at)
instead of by its business time alone: `load_label` reads the labels stored at or after the one it
was asked about, which is the order their LABEL_CREATED scans reach the pipeline. Ordered by
created_at, labels of other batches whose times overlap (labels never tendered, a backfill of old
labels) filled the window of each read; in this repository's dev database, 57,000 such rows made a
20,000-label burst take 100 reads of 2,000 rows (20 with this index).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS shipments_fresh_labels_idx")
    op.execute("CREATE INDEX shipments_fresh_labels_idx ON shipments (updated_at, created_at) "
               "WHERE status = 'LABEL_CREATED' AND last_event_id IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS shipments_fresh_labels_idx")
    op.execute("CREATE INDEX shipments_fresh_labels_idx ON shipments (created_at) "
               "WHERE status = 'LABEL_CREATED' AND last_event_id IS NULL")
