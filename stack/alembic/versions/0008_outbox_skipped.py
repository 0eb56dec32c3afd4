"""The notifier's outbox gets a `skipped` state: a message planned but not sent on purpose, because
it went stale before its send (held by quiet hours, or left by a dead process, while the shipment
moved on or the message expired; rules `expires_after_s` / `superseded_by`, docs/notifier.md).
`last_error` says why ("superseded: ...", "expired: ...").

The CHECK constraint is replaced NOT VALID (a catalog change, over at once) and validated after that
transaction commits: validation scans the table under a lock that lets the notifier go on writing,
where a plain ADD CONSTRAINT would hold its writes off for the whole scan.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "('pending', 'deferred', 'sent', 'dead')"
NEW = "('pending', 'deferred', 'sent', 'dead', 'skipped')"


def _replace_check(states: str) -> None:
    op.execute("ALTER TABLE notification_outbox DROP CONSTRAINT outbox_state, "
               f"ADD CONSTRAINT outbox_state CHECK (state IN {states}) NOT VALID")
    with op.get_context().autocommit_block():  # commits the swap first
        op.execute("ALTER TABLE notification_outbox VALIDATE CONSTRAINT outbox_state")


def upgrade() -> None:
    _replace_check(NEW)


def downgrade() -> None:
    # Before 0008 a message that was not sent and never will be is `dead`; its reason stays.
    op.execute("UPDATE notification_outbox SET state = 'dead', last_error = 'skipped: ' || coalesce(last_error, '') "
               "WHERE state = 'skipped'")
    _replace_check(OLD)
