"""Every status, mode and trigger the tables store, declared once.

StrEnum members are their own strings, so what the database stores and the JSON the API
answers stay exactly as before; the tables carry a CHECK constraint per column listing the
same values (see `allowed`), so a typo is refused by the database instead of stored.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint


class TenantStatus(StrEnum):
    ACTIVE = "active"
    UNINSTALLED = "uninstalled"
    REDACTED = "redacted"


class CredentialsStatus(StrEnum):
    OK = "ok"
    # The token was refused and could not be refreshed.
    INVALID = "invalid"


class EventStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"  # retried with backoff (next_attempt_at)
    DEAD = "dead"  # failed on its last attempt: replayed only by hand


class SyncStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SyncMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    BULK = "bulk"


class SyncTrigger(StrEnum):
    MANUAL = "manual"  # CLI, API, dashboard
    WATCHDOG = "watchdog"  # a gap after a lost subscription
    RECONCILE = "reconcile"  # drift repair


class ReconcileStatus(StrEnum):
    RUNNING = "running"
    CLEAN = "clean"  # no drift
    REPAIRED = "repaired"  # drift found and fixed
    DRIFT = "drift"  # found, not repaired: --dry-run or the repair failed
    FAILED = "failed"  # could not compare


class ReconcileTrigger(StrEnum):
    MANUAL = "manual"
    WATCHDOG = "watchdog"
    PERIODIC = "periodic"


def allowed(table: str, column: str, values: type[StrEnum]) -> CheckConstraint:
    """The CHECK constraint `ck_<table>_<column>` admitting exactly the members of `values`."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(
        f"{column} IN ({listed})",
        name=f"ck_{table}_{column}",
        # For tests and tools that ask which column a constraint guards and what it admits.
        info={"column": column, "values": tuple(member.value for member in values)},
    )
