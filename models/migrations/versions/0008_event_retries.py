"""Failed events retry themselves: a `dead` status for events past their last attempt, the
time of the next attempt, and the index the retry sweep reads.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("received", "processed", "ignored", "failed")
NEW_STATUSES = (*OLD_STATUSES, "dead")


def _check(values: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{value}'" for value in values))


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint("ck_webhook_events_status", type_="check")
        batch.create_check_constraint("ck_webhook_events_status", _check(NEW_STATUSES))
        # When a `failed` event is next applied again; NULL: never (any other status).
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    # Events that failed before retries existed are due at once: the sweep takes them from here.
    op.execute(
        "UPDATE webhook_events SET next_attempt_at = CURRENT_TIMESTAMP WHERE status = 'failed'"
    )
    # The retry sweep: failed events whose time has come, across stores, soonest first.
    op.create_index(
        "ix_webhook_events_retry",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'failed'"),
        sqlite_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_retry", table_name="webhook_events")
    op.execute("UPDATE webhook_events SET status = 'failed' WHERE status = 'dead'")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_constraint("ck_webhook_events_status", type_="check")
        batch.create_check_constraint("ck_webhook_events_status", _check(OLD_STATUSES))
