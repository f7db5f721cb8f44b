"""Row-level security on every table that carries tenant_id (PostgreSQL only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen as of this revision; later revisions add their own tables' policies.
TENANT_TABLES = (
    "customers",
    "products",
    "orders",
    "webhook_events",
    "sync_jobs",
    "compliance_requests",
    "user_tenants",
)

# A row is visible and writable when its tenant is the transaction's app.tenant_id, or when
# the transaction declared cross-tenant work. Unset settings read as '' (missing_ok), which
# matches nothing: a connection that never said who it works for sees no shop data at all.
POLICY = """
CREATE POLICY tenant_isolation ON {table}
    USING (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
    WITH CHECK (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(POLICY.format(table=table))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
