"""The inbox partitioned by month; its dedupe keys in a table of their own (issue #16, item 5).

On PostgreSQL `webhook_events` becomes a table range-partitioned on `received_at`, one
partition per calendar month (UTC) named `webhook_events_pYYYYMM`, and a DEFAULT partition
so that no insert can ever fail for want of a partition. Retention then drops whole months
(`handlers.inbox`) instead of deleting rows one by one. The existing rows are moved
(INSERT ... SELECT) with their ids; partitions are made for every month that holds rows, the
current month and the next; the maintenance tick keeps creating the next month ahead.

A partitioned table's unique keys must include its partition key, so:
- the primary key is (id, received_at); the id alone stays unique (one sequence, kept);
- the dedupe key (shop_domain, topic, dedupe_key) moves to `webhook_event_keys`, with the
  event's id and received_at (so the duplicate counter finds the row in its partition);
- `compliance_requests.webhook_event_id` loses its foreign key and stays a plain reference:
  a foreign key to a partitioned table must name a unique key that holds the partition key
  (the column would need a received_at beside it), and dropping or detaching a partition
  runs no ON DELETE action (PostgreSQL refuses instead while rows refer to it). Retention
  sets the reference to NULL itself, as ON DELETE SET NULL did.

Creating and dropping partitions is DDL, which only the tables' owner may run; the service's
role (`receiver_app`, see README "Database roles") calls two SECURITY DEFINER functions made
here, `webhook_events_add_month` and `webhook_events_drop_month`, owned by whoever migrates.

On SQLite there is no partitioning: `webhook_events` stays a plain table, but the dedupe key
moves to the same key table, so both backends run one code path.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

# The same policy as revisions 0004, 0010 and 0011.
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

# Whoever may write customers (the service's role, as README's "Database roles" says) may
# write these tables, as in revisions 0010 and 0011. webhook_events keeps its sequence, and
# with it the grants on the sequence.
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
            'GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', grantee_name
        );
        {execute}
    END LOOP;
END $$
"""

GRANT_EXECUTE = """
        EXECUTE format(
            'GRANT EXECUTE ON FUNCTION {function} TO %I', grantee_name
        );"""

INDEXES: tuple[tuple[str, list[str], str | None], ...] = (
    ("ix_webhook_events_tenant_received", ["tenant_id", "received_at"], None),
    ("ix_webhook_events_unprocessed", ["tenant_id", "status", "received_at"], "<> 'processed'"),
    ("ix_webhook_events_tenant_topic_received", ["tenant_id", "topic", "received_at"], None),
    ("ix_webhook_events_retry", ["next_attempt_at"], "= 'failed'"),
)

# Row-level security on one partition, as on the parent (a partition read directly, by a role
# granted on it by default privileges, would otherwise show every store). The parent, like
# every table of revision 0004, enables it without FORCE.
PARTITION_RLS = """
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %I '
        'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint '
        'OR current_setting(''app.cross_tenant'', true) = ''on'') '
        'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint '
        'OR current_setting(''app.cross_tenant'', true) = ''on'')',
        part
    );
"""

# The month partition holding `month` (any instant in it): created if missing, with any rows
# of that month the DEFAULT partition holds moved into it (PostgreSQL refuses a partition
# whose range the DEFAULT partition already holds rows of). True when it was created.
ADD_MONTH = f"""
CREATE FUNCTION webhook_events_add_month(month timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    low timestamptz := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    high timestamptz := low + interval '1 month';
    part text := 'webhook_events_p' || to_char(low AT TIME ZONE 'UTC', 'YYYYMM');
    columns text;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Serialise with other callers (two workers' ticks) before looking again.
    LOCK TABLE webhook_events_default IN SHARE ROW EXCLUSIVE MODE;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute
    WHERE attrelid = 'webhook_events'::regclass AND attnum > 0 AND NOT attisdropped;
    EXECUTE format(
        'CREATE TABLE %I (LIKE webhook_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part
    );
    EXECUTE format(
        'WITH moved AS (DELETE FROM webhook_events_default '
        'WHERE received_at >= %L AND received_at < %L RETURNING %s) '
        'INSERT INTO %I (%s) SELECT %s FROM moved',
        low, high, columns, part, columns, columns
    );
    EXECUTE format(
        'ALTER TABLE webhook_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        part, low, high
    );
    {PARTITION_RLS}
    RETURN true;
END
$fn$
"""

# Retention of one whole month: the month partition holding `month` is detached and dropped.
# Its failed and dead events are kept when `keep_failed` (they land in the DEFAULT partition,
# the month having no partition any more, with their ids, received_at and keys unchanged);
# the keys of the other events are deleted, and compliance requests' references to them set
# to NULL. Returns how many events went.
DROP_MONTH = """
CREATE FUNCTION webhook_events_drop_month(month timestamptz, keep_failed boolean)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    low timestamptz := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part text := 'webhook_events_p' || to_char(low AT TIME ZONE 'UTC', 'YYYYMM');
    columns text;
    goes text;
    gone bigint;
    waited text;
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'webhook_events'::regclass AND c.relname = part
    ) THEN
        RETURN 0;
    END IF;
    -- The caller is retention, which works across stores.
    PERFORM set_config('app.cross_tenant', 'on', true);
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute
    WHERE attrelid = 'webhook_events'::regclass AND attnum > 0 AND NOT attisdropped;
    goes := CASE WHEN keep_failed THEN 'e.status NOT IN (''failed'', ''dead'')' ELSE 'true' END;
    -- The slow part first, under row locks only: the keys and references of what goes.
    EXECUTE format(
        'DELETE FROM webhook_event_keys k USING %I e WHERE %s AND k.shop_domain = e.shop_domain '
        'AND k.topic = e.topic AND k.dedupe_key = e.dedupe_key AND k.webhook_event_id = e.id',
        part, goes
    );
    EXECUTE format(
        'UPDATE compliance_requests c SET webhook_event_id = NULL FROM %I e '
        'WHERE %s AND c.webhook_event_id = e.id',
        part, goes
    );
    EXECUTE format('SELECT count(*) FROM %I e WHERE %s', part, goes) INTO gone;
    -- Then the brief part under an exclusive lock on webhook_events, which stops the inbox's
    -- inserts meanwhile: given up rather than queued for long behind someone's long query.
    waited := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', '3s', true);
    EXECUTE format('ALTER TABLE webhook_events DETACH PARTITION %I', part);
    PERFORM set_config('lock_timeout', waited, true);
    IF keep_failed THEN
        -- The month has no partition now: they land in the DEFAULT one.
        EXECUTE format(
            'INSERT INTO webhook_events (%s) SELECT %s FROM %I e WHERE NOT (%s)',
            columns, columns, part, goes
        );
    END IF;
    EXECUTE format('DROP TABLE %I', part);
    RETURN gone;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _create_keys_table() -> None:
    op.create_table(
        "webhook_event_keys",
        sa.Column("shop_domain", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(100), primary_key=True),
        sa.Column("dedupe_key", sa.String(255), primary_key=True),
        sa.Column("tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE")),
        sa.Column("webhook_event_id", sa.BigInteger(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_webhook_event_keys_tenant", "webhook_event_keys", ["tenant_id"])


def _copy_keys(source: str) -> None:
    op.execute(
        "INSERT INTO webhook_event_keys "
        "(shop_domain, topic, dedupe_key, tenant_id, webhook_event_id, received_at) "
        f"SELECT shop_domain, topic, dedupe_key, tenant_id, id, received_at FROM {source}"
    )


def _upgrade_sqlite() -> None:
    _create_keys_table()
    _copy_keys("webhook_events")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint("uq_webhook_events_dedupe", type_="unique")
    # SQLite's foreign key has no name: the batch names it by convention to drop it.
    with op.batch_alter_table(
        "compliance_requests",
        naming_convention={"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"},
    ) as batch:
        batch.drop_constraint(
            "fk_compliance_requests_webhook_event_id_webhook_events", type_="foreignkey"
        )


def _months(low: str, high: str) -> str:
    """SQL for the first instants (UTC) of every month from `low` through `high`."""
    return (
        "SELECT generate_series("
        f"date_trunc('month', ({low}) AT TIME ZONE 'UTC'), "
        f"date_trunc('month', ({high}) AT TIME ZONE 'UTC'), interval '1 month'"
        ") AT TIME ZONE 'UTC' AS month"
    )


def _upgrade_postgresql() -> None:
    # An owner bound by FORCE ROW LEVEL SECURITY must still move every store's rows.
    op.execute("SELECT set_config('app.cross_tenant', 'on', true)")
    op.execute(
        "ALTER TABLE compliance_requests "
        "DROP CONSTRAINT IF EXISTS compliance_requests_webhook_event_id_fkey"
    )
    # The old table steps aside; its index names are freed for the new one's.
    op.execute("ALTER SEQUENCE webhook_events_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE webhook_events RENAME TO webhook_events_unpartitioned")
    op.execute("ALTER INDEX webhook_events_pkey RENAME TO webhook_events_unpartitioned_pkey")
    op.execute("ALTER TABLE webhook_events_unpartitioned DROP CONSTRAINT uq_webhook_events_dedupe")
    for name, _columns, _where in INDEXES:
        op.execute(f"DROP INDEX {name}")
    # Same columns, types, defaults (the id's sequence) and status CHECK as the old table.
    op.execute(
        "CREATE TABLE webhook_events (LIKE webhook_events_unpartitioned "
        "INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at)"
    )
    op.execute("ALTER TABLE webhook_events ADD PRIMARY KEY (id, received_at)")
    op.execute(
        "ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_tenant_id_fkey "
        "FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE"
    )
    op.execute("ALTER SEQUENCE webhook_events_id_seq OWNED BY webhook_events.id")
    op.execute("CREATE TABLE webhook_events_default PARTITION OF webhook_events DEFAULT")
    op.execute("ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY")
    op.execute(POLICY.format(table="webhook_events"))
    op.execute("ALTER TABLE webhook_events_default ENABLE ROW LEVEL SECURITY")
    op.execute(POLICY.format(table="webhook_events_default"))
    op.execute(ADD_MONTH)
    op.execute(DROP_MONTH)
    # Every month that holds rows, the current month and the next.
    op.execute(
        "SELECT webhook_events_add_month(month) FROM ("
        + _months(
            "SELECT coalesce(min(received_at), now()) FROM webhook_events_unpartitioned",
            "now() + interval '1 month'",
        )
        + ") months"
    )
    op.execute("INSERT INTO webhook_events SELECT * FROM webhook_events_unpartitioned ORDER BY id")
    _create_keys_table()
    _copy_keys("webhook_events_unpartitioned")
    op.execute("DROP TABLE webhook_events_unpartitioned")
    # Indexes on the parent: each partition gets its own, present and future.
    for name, columns, where in INDEXES:
        op.create_index(
            name,
            "webhook_events",
            columns,
            postgresql_where=sa.text(f"status {where}") if where else None,
        )
    # Like revisions 0010 and 0011 for a new table: enabled and forced.
    op.execute("ALTER TABLE webhook_event_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE webhook_event_keys FORCE ROW LEVEL SECURITY")
    op.execute(POLICY.format(table="webhook_event_keys"))
    op.execute(GRANTS.replace("{table}", "webhook_event_keys").replace("{execute}", ""))
    functions = "".join(
        GRANT_EXECUTE.format(function=function)
        for function in (
            "webhook_events_add_month(timestamptz)",
            "webhook_events_drop_month(timestamptz, boolean)",
        )
    )
    # Only the service's role may run them, as it may write the inbox.
    op.execute("REVOKE EXECUTE ON FUNCTION webhook_events_add_month(timestamptz) FROM PUBLIC")
    op.execute(
        "REVOKE EXECUTE ON FUNCTION webhook_events_drop_month(timestamptz, boolean) FROM PUBLIC"
    )
    op.execute(GRANTS.replace("{table}", "webhook_events").replace("{execute}", functions))
    op.execute("ANALYZE webhook_events")
    op.execute("ANALYZE webhook_event_keys")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _downgrade_postgresql()
    else:
        _downgrade_sqlite()


def _downgrade_sqlite() -> None:
    with op.batch_alter_table("compliance_requests") as batch:
        batch.create_foreign_key(
            "fk_compliance_requests_webhook_event_id_webhook_events",
            "webhook_events",
            ["webhook_event_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("webhook_events") as batch:
        batch.create_unique_constraint(
            "uq_webhook_events_dedupe", ["shop_domain", "topic", "dedupe_key"]
        )
    op.drop_table("webhook_event_keys")


def _downgrade_postgresql() -> None:
    op.execute("SELECT set_config('app.cross_tenant', 'on', true)")
    op.execute("DROP FUNCTION webhook_events_add_month(timestamptz)")
    op.execute("DROP FUNCTION webhook_events_drop_month(timestamptz, boolean)")
    op.execute("ALTER SEQUENCE webhook_events_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE webhook_events RENAME TO webhook_events_partitioned")
    op.execute("ALTER TABLE webhook_events_partitioned DROP CONSTRAINT webhook_events_pkey")
    for name, _columns, _where in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        "CREATE TABLE webhook_events (LIKE webhook_events_partitioned "
        "INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    op.execute("ALTER TABLE webhook_events ADD PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_tenant_id_fkey "
        "FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE"
    )
    op.execute("INSERT INTO webhook_events SELECT * FROM webhook_events_partitioned ORDER BY id")
    op.execute("DROP TABLE webhook_events_partitioned")
    op.execute("ALTER SEQUENCE webhook_events_id_seq OWNED BY webhook_events.id")
    op.execute(
        "ALTER TABLE webhook_events ADD CONSTRAINT uq_webhook_events_dedupe "
        "UNIQUE (shop_domain, topic, dedupe_key)"
    )
    for name, columns, where in INDEXES:
        op.create_index(
            name,
            "webhook_events",
            columns,
            postgresql_where=sa.text(f"status {where}") if where else None,
        )
    op.execute("ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY")
    op.execute(POLICY.format(table="webhook_events"))
    op.execute(GRANTS.replace("{table}", "webhook_events").replace("{execute}", ""))
    op.drop_table("webhook_event_keys")
    # References to events retention dropped whole cannot come back.
    op.execute(
        "UPDATE compliance_requests c SET webhook_event_id = NULL WHERE webhook_event_id "
        "IS NOT NULL AND NOT EXISTS (SELECT FROM webhook_events e WHERE e.id = c.webhook_event_id)"
    )
    op.execute(
        "ALTER TABLE compliance_requests ADD CONSTRAINT compliance_requests_webhook_event_id_fkey "
        "FOREIGN KEY (webhook_event_id) REFERENCES webhook_events (id) ON DELETE SET NULL"
    )
