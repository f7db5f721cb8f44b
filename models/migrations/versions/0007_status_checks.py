"""Status checks: every status, mode and trigger column admits only its listed values.

The values are written out here rather than imported from models.statuses: a migration
describes the schema as of its revision, and a later change to the enums needs its own.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> column -> allowed values; each becomes CHECK constraint ck_<table>_<column>.
CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "tenants": {
        "status": ("active", "uninstalled", "redacted"),
        "credentials_status": ("ok", "invalid"),
    },
    "webhook_events": {
        "status": ("received", "processed", "ignored", "failed"),
    },
    "sync_jobs": {
        "status": ("queued", "running", "succeeded", "failed", "cancelled"),
        "mode": ("full", "incremental", "bulk"),
        "trigger": ("manual", "watchdog", "reconcile"),
    },
    "reconcile_runs": {
        "status": ("running", "clean", "repaired", "drift", "failed"),
        "trigger": ("manual", "watchdog", "periodic"),
    },
}


def upgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for column, values in columns.items():
                listed = ", ".join(f"'{value}'" for value in values)
                batch.create_check_constraint(f"ck_{table}_{column}", f"{column} IN ({listed})")


def downgrade() -> None:
    for table, columns in reversed(CHECKS.items()):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_constraint(f"ck_{table}_{column}", type_="check")
