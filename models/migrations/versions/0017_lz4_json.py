"""jsonb columns compressed with lz4 (PostgreSQL built with it).

A webhook's body is stored in the inbox and, cut into records, in each table's `raw`; a
value over about 2 kB is compressed as it is written, by default with pglz. Measured under
the webhook benchmark (perf, cpu-clock), pglz_compress alone took about a tenth of
PostgreSQL's CPU; lz4 compresses several times faster at a similar size. Set per column on
our tables, existing inbox partitions included, and `webhook_events_add_month` (0016) now
copies it into the partitions it makes; not for the database: other tables, the job
queue's among them, keep their owner's choice. A later migration that adds a jsonb column
sets it too.

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


def _set_compression(method: str) -> str:
    return f"""
DO $$
DECLARE target record;
BEGIN
  IF NOT EXISTS (
    SELECT FROM pg_settings
    WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
  ) THEN
    RAISE NOTICE 'this PostgreSQL was built without lz4: jsonb columns keep pglz';
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
END $$
"""


# webhook_events_add_month makes a partition with CREATE TABLE (LIKE webhook_events ...),
# which copies a column's compression only when told to.
_LIKE = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
_LIKE_COMPRESSED = f"{_LIKE} INCLUDING COMPRESSION"


def _replace_in_add_month(old: str, new: str) -> str:
    return f"""
DO $$
BEGIN
  EXECUTE replace(
    pg_get_functiondef('webhook_events_add_month(timestamptz)'::regprocedure), '{old})', '{new})'
  );
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_set_compression("lz4"))
        op.execute(_replace_in_add_month(_LIKE, _LIKE_COMPRESSED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_replace_in_add_month(_LIKE_COMPRESSED, _LIKE))
        op.execute(_set_compression("default"))
