"""The store page's pure pieces: date ranges and chart buckets, money text, a sync job's
progress summary, and what a reconcile line compared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from receiver.stats import bucket_dates, compared, date_range, format_money, job_summary, range_key

NOW = datetime(2026, 3, 15, 13, 30, tzinfo=UTC)


def test_day_ranges_are_whole_utc_days_with_today():
    window = date_range("7d", NOW, None)
    assert window["start"] == "2026-03-09T00:00:00+00:00"
    assert window["end"] == "2026-03-16T00:00:00+00:00"
    assert bucket_dates(window, NOW) == [f"2026-03-{day:02d}" for day in range(9, 16)]


def test_twelve_months_is_charted_by_month_across_a_year_end():
    window = date_range("12m", NOW, None)
    assert window["bucket"] == "month"
    buckets = bucket_dates(window, NOW)
    assert buckets[0] == "2025-04-01"
    assert buckets[-1] == "2026-03-01"
    assert len(buckets) == 12


def test_all_time_starts_at_the_oldest_order_month_and_is_empty_without_orders():
    window = date_range("all", NOW, datetime(2023, 11, 30, 23, 59, tzinfo=UTC))
    assert window["start"] is None
    buckets = bucket_dates(window, NOW)
    assert (buckets[0], buckets[-1], len(buckets)) == ("2023-11-01", "2026-03-01", 29)
    assert bucket_dates(date_range("all", NOW, None), NOW) == []


def test_an_unknown_range_falls_back_to_the_default():
    assert range_key("5y") == range_key(None) == "30d"
    assert range_key("90d") == "90d"


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=2, allow_nan=False))
def test_money_text_round_trips(amount: Decimal):
    text = format_money(amount, "USD")
    number, currency = text.rsplit(" ", 1)
    assert currency == "USD"
    assert Decimal(number.replace(",", "")) == amount
    whole = number.lstrip("-").split(".")[0]
    assert all(len(group) == 3 for group in whole.split(",")[1:])


def test_money_keeps_extra_decimals_and_shows_none_as_a_dash():
    assert format_money("5240764.97", "USD") == "5,240,764.97 USD"
    assert format_money("0.0005", "CAD") == "0.0005 CAD"
    assert format_money("12", None) == "12.00"
    assert format_money(None, "EUR") == "—"


def job(**fields: object) -> dict[str, object]:
    return {
        "status": "running",
        "resources": ["customers", "orders"],
        "started_at": (NOW - timedelta(seconds=100)).isoformat(),
        "finished_at": None,
        "progress": {},
    } | fields


def test_a_running_job_has_percent_rate_and_eta():
    summary = job_summary(
        job(
            progress={
                "customers": {"count": 500, "done": True},
                "orders": {"count": 4500, "total": 20000},
            }
        ),
        NOW,
    )
    assert summary["count"] == 5000
    assert summary["total"] == 20500
    assert summary["percent"] == 24.4
    assert summary["rate_per_s"] == 50.0
    assert summary["eta_s"] == 310
    assert summary["throttled"] is None


def test_without_shopify_s_total_there_is_no_percent_or_eta():
    summary = job_summary(job(progress={"orders": {"count": 10}}, resources=["orders"]), NOW)
    assert (summary["total"], summary["percent"], summary["eta_s"]) == (None, None, None)
    assert summary["rate_per_s"] == 0.1


def test_a_rate_limit_wait_is_read_wherever_the_runner_puts_it():
    until = (NOW + timedelta(seconds=9)).isoformat()
    nested = job(progress={"orders": {"count": 1, "total": 5, "throttled_until": until}})
    assert job_summary(nested, NOW)["throttled"] == until
    over = job(progress={"orders": {"count": 1, "throttled_until": NOW.isoformat()}})
    assert job_summary(over, NOW)["throttled"] is None
    waiting = {"points": 500, "rate": 50}
    top = job(progress={"waiting": waiting, "orders": {"count": 1, "total": 5}})
    assert job_summary(top, NOW)["throttled"] == waiting


def test_reconcile_lines_say_what_they_compared():
    started = datetime(2026, 3, 15, tzinfo=UTC)
    since = (started - timedelta(days=59)).isoformat()
    assert compared("orders", {"compared_since": since}, started) == (
        "orders of the last 59 days (since 2026-01-15)"
    )
    assert compared("customers", {}, started) == "all customers"
