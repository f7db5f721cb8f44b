"""child_refetches: records whose webhook cut a child list short, to be read whole.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

# The same policy as revisions 0004 and 0010.
POLICY = """
CREATE POLICY tenant_isolation ON child_refetches
    USING (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
    WITH CHECK (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
"""

# Whoever may write customers (the service's role) may write this table too.
GRANTS = """
DO $$
DECLARE grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT grantee FROM information_schema.role_table_grants
        WHERE table_schema = current_schema() AND table_name = 'customers'
          AND privilege_type = 'INSERT' AND grantee <> current_user
    LOOP
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON child_refetches TO %I', grantee_name
        );
        EXECUTE format(
            'GRANT USAGE, SELECT ON SEQUENCE %s TO %I',
            pg_get_serial_sequence('child_refetches', 'id'), grantee_name
        );
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "child_refetches",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("child_table", sa.String(64), nullable=False),
        sa.Column("parent_shopify_id", sa.BigInteger(), nullable=False),
        sa.Column("requested_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint(
            "tenant_id", "child_table", "parent_shopify_id", name="uq_child_refetches_parent"
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE child_refetches ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE child_refetches FORCE ROW LEVEL SECURITY")
        op.execute(POLICY)
        op.execute(GRANTS)


def downgrade() -> None:
    op.drop_table("child_refetches")
