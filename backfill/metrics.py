"""Prometheus metrics of backfill jobs (exposed by whichever process runs them)."""

from __future__ import annotations

from prometheus_client import Counter

RECORDS = Counter(
    "shopify_receiver_backfill_records_total",
    "Records written by backfill jobs, by resource and mode.",
    ["resource", "mode"],
)
THROTTLE_WAITS = Counter(
    "shopify_receiver_backfill_throttle_waits_total",
    "Waits before or after an Admin API request: paced (bucket low) or throttled (refused).",
    ["kind"],
)
THROTTLE_WAIT_SECONDS = Counter(
    "shopify_receiver_backfill_throttle_wait_seconds_total",
    "Seconds spent waiting for the Admin API's rate limit.",
    ["kind"],
)
