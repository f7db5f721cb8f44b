"""Locations: the store's places (warehouses, shops), the registry's fourth resource.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# The same policy as revision 0004.
POLICY = """
CREATE POLICY tenant_isolation ON locations
    USING (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
    WITH CHECK (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
"""

# Whoever may write customers (the service's role, granted by the operator as README's
# "Database roles" says) may write locations: the grant a new table would otherwise lack
# until the operator ran it again.
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
            'GRANT SELECT, INSERT, UPDATE, DELETE ON locations TO %I', grantee_name
        );
        EXECUTE format(
            'GRANT USAGE, SELECT ON SEQUENCE %s TO %I',
            pg_get_serial_sequence('locations', 'id'), grantee_name
        );
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "locations",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("shopify_id", sa.BigInteger(), nullable=False),
        sa.Column("shopify_created_at", TIMESTAMP),
        sa.Column("shopify_updated_at", TIMESTAMP),
        sa.Column("deleted_at", TIMESTAMP),
        sa.Column("raw", JSON_DOC),
        sa.Column("synced_at", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("address1", sa.Text()),
        sa.Column("address2", sa.Text()),
        sa.Column("city", sa.Text()),
        sa.Column("zip", sa.String(32)),
        sa.Column("province_code", sa.String(16)),
        sa.Column("country_code", sa.String(8)),
        sa.Column("phone", sa.String(64)),
        sa.Column("active", sa.Boolean()),
        sa.UniqueConstraint("tenant_id", "shopify_id", name="uq_locations_shop_id"),
    )
    op.create_index("ix_locations_tenant_updated", "locations", ["tenant_id", "shopify_updated_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE locations ENABLE ROW LEVEL SECURITY")
        # Also for the table's owner (a deployment whose service role owns the tables).
        op.execute("ALTER TABLE locations FORCE ROW LEVEL SECURITY")
        op.execute(POLICY)
        op.execute(GRANTS)


def downgrade() -> None:
    op.drop_index("ix_locations_tenant_updated", "locations")
    op.drop_table("locations")
