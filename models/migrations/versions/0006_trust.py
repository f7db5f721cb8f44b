"""Trust: the store's Shopify shop id, server-side sessions, scoped read-only API tokens,
money stored exactly as Shopify sent it, and the time of a customer's purchasing summary.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
# (table, column) of every money column; SQLite keeps them as exact decimal strings already.
MONEY_COLUMNS = (
    ("customers", "amount_spent"),
    ("orders", "total_price"),
    ("orders", "subtotal_price"),
)

# The same policy as revision 0004.
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
    with op.batch_alter_table("tenants") as batch:
        # Shopify's numeric shop id (from the backfill's `shop { id }` or a payload that names
        # both the shop's domain and its id): destructive topics are checked against it.
        batch.add_column(sa.Column("shopify_shop_id", sa.BigInteger()))
        batch.create_unique_constraint("uq_tenants_shopify_shop_id", ["shopify_shop_id"])
    op.create_table(
        "user_sessions",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("user_id", BIG_ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("read_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "api_token_tenants",
        sa.Column(
            "api_token_id",
            BIG_ID,
            sa.ForeignKey("api_tokens.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        # RESTRICT: a token with no scope rows sees every store, so a store a token is
        # scoped to cannot vanish from under it (revoke the token first).
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True
        ),
    )
    with op.batch_alter_table("customers") as batch:
        # When the applied customers/purchasing_summary occurred: summaries apply in that order.
        batch.add_column(sa.Column("purchasing_summary_at", TIMESTAMP))
    if op.get_bind().dialect.name == "postgresql":
        # Unconstrained NUMERIC keeps every digit Shopify sent (NUMERIC(20, 4) rounded).
        for table, column in MONEY_COLUMNS:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE numeric")
        op.execute("ALTER TABLE api_token_tenants ENABLE ROW LEVEL SECURITY")
        op.execute(POLICY.format(table="api_token_tenants"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in MONEY_COLUMNS:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE numeric(20, 4)")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("purchasing_summary_at")
    op.drop_table("api_token_tenants")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("read_only")
    op.drop_index("ix_user_sessions_user_id", "user_sessions")
    op.drop_table("user_sessions")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_shopify_shop_id", type_="unique")
        batch.drop_column("shopify_shop_id")
