"""jsonb columns compressed with lz4 (PostgreSQL built with it).

A webhook's body is stored in the inbox and, cut into records, in each table's `raw`; a
value over about 2 kB is compressed as it is written, by default with pglz. Measured under
the webhook benchmark (perf, cpu-clock), pglz_compress alone took about a tenth of
PostgreSQL's CPU; lz4 compresses several times faster at a similar size. Set per column on
our tables, existing inbox partitions included, and `webhook_events_add_month` (0016) now
copies it into the partitions it makes; not for the database: other tables, the job
queue's among them, keep their owner's choice. A later migration that adds a jsonb column
sets it too. SET COMPRESSION rewrites no data but takes each table's ACCESS EXCLUSIVE lock
briefly, all in the migration's transaction: run it, as any migration, before starting the
new code (webhooks arriving meanwhile wait for it, or get a 503 Shopify retries).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# webhook_events_add_month makes a partition with CREATE TABLE (LIKE webhook_events ...),
# which copies a column's compression only when told to.
_LIKE = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
_LIKE_COMPRESSED = f"{_LIKE} INCLUDING COMPRESSION"


def _set_compression(method: str, like_before: str, like_after: str) -> str:
    """Every jsonb column of our tables set to `method`, and webhook_events_add_month's LIKE
    clause edited in place (an error if it is not as this migration expects); nothing at
    all on a PostgreSQL without lz4 (older than 14, or built without it)."""
    return f"""
DO $$
DECLARE
  target record;
  add_month text := pg_get_functiondef('webhook_events_add_month(timestamptz)'::regprocedure);
BEGIN
  IF NOT EXISTS (
    SELECT FROM pg_settings
    WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
  ) THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: jsonb columns keep pglz';
    RETURN;
  END IF;
  FOR target IN
    SELECT c.oid::regclass AS relation, a.attname AS name
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema()
      AND c.relkind IN ('r', 'p')
      AND c.relname NOT LIKE 'procrastinate%'
      AND a.atttypid = 'jsonb'::regtype
      AND a.attnum > 0
      AND NOT a.attisdropped
  LOOP
    EXECUTE format(
      'ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION {method}', target.relation, target.name
    );
  END LOOP;
  IF position('{like_before})' IN add_month) = 0 THEN
    RAISE EXCEPTION 'webhook_events_add_month does not read "LIKE webhook_events {like_before}"';
  END IF;
  EXECUTE replace(add_month, '{like_before})', '{like_after})');
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_set_compression("lz4", _LIKE, _LIKE_COMPRESSED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_set_compression("default", _LIKE_COMPRESSED, _LIKE))
