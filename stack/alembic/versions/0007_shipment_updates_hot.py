"""Let the scan pipeline's updates of `shipments` be HOT (heap-only tuple) updates.

The pipeline updates a shipment row at every accepted scan (status, attempts, last event, ETA,
updated_at). PostgreSQL can write such an update into the same heap page without touching any index
(a HOT update) only when no column it changes is indexed, counting the columns in partial-index
predicates, and the page has room. Before this migration none qualified: `status` had its own
index, and the fresh-labels index of 0006 was keyed on `updated_at` with a predicate on `status`
and `last_event_id`. Every update therefore inserted a new entry into every index of the table
(primary key, tracking number, return_of, status), and PostgreSQL spent most of its time per scan
there (docs/bench/pipeline.md).

- `label_fresh`: true while no pipeline checkpoint has touched the row (the label API's insert, a
  linked return); the pipeline's UPDATE sets it false, once. Rows of before this migration get it
  from the old predicate (status LABEL_CREATED and no last event).
- `stored_at`: when the row was inserted, never updated (NULL for rows older than this migration,
  except the fresh labels, which take their `updated_at`, the store time 0006 ordered them by).
- The fresh-labels index is keyed on (stored_at, created_at) over `label_fresh` rows: the same
  order, no column a routine update changes.
- `shipments_status_idx` is dropped: no query of the system reads shipments by status (operations
  see counts by status in Prometheus); an ad-hoc count by status scans the table.
- fillfactor 80: new pages keep a fifth free, so the updated version of a row fits in its page.
  Existing pages are full until rewritten (VACUUM FULL or pg_repack); their rows get HOT updates
  as pruning frees room.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Constant defaults: no table rewrite. Only the fresh labels (a small set) are then updated.
    op.execute("ALTER TABLE shipments ADD COLUMN label_fresh boolean NOT NULL DEFAULT false, "
               "ADD COLUMN stored_at timestamptz")
    op.execute("UPDATE shipments SET label_fresh = true, stored_at = updated_at "
               "WHERE status = 'LABEL_CREATED' AND last_event_id IS NULL")
    op.execute("ALTER TABLE shipments ALTER COLUMN label_fresh SET DEFAULT true, "
               "ALTER COLUMN stored_at SET DEFAULT now()")
    op.execute("ALTER TABLE shipments SET (fillfactor = 80)")
    # The index changes run outside the migration's transaction, CONCURRENTLY: building an index
    # scans the whole table, and a plain CREATE INDEX would block the pipeline's writes meanwhile.
    # A build that fails leaves an invalid index of that name: the DROP before it clears one.
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS shipments_fresh_labels_idx")
        op.execute("CREATE INDEX CONCURRENTLY shipments_fresh_labels_idx ON shipments (stored_at, created_at) "
                   "WHERE label_fresh")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS shipments_status_idx")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS shipments_status_idx")
        op.execute("CREATE INDEX CONCURRENTLY shipments_status_idx ON shipments (status)")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS shipments_fresh_labels_idx")
        op.execute("CREATE INDEX CONCURRENTLY shipments_fresh_labels_idx ON shipments (updated_at, created_at) "
                   "WHERE status = 'LABEL_CREATED' AND last_event_id IS NULL")
    op.execute("ALTER TABLE shipments RESET (fillfactor)")
    op.execute("ALTER TABLE shipments DROP COLUMN stored_at, DROP COLUMN label_fresh")
