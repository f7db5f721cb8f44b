"""Pacing arithmetic of the GraphQL client's view of Shopify's leaky bucket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backfill.client import ThrottleState
from backfill.queries import ORDERS, PRODUCTS, RESOURCES
from backfill.runner import SINGLE_QUERY_LIMIT, page_cost, page_size_for


def report(maximum: float, available: float, rate: float) -> dict:
    return {
        "requestedQueryCost": 100,
        "actualQueryCost": 90,
        "throttleStatus": {
            "maximumAvailable": maximum,
            "currentlyAvailable": available,
            "restoreRate": rate,
        },
    }


def test_no_wait_when_the_bucket_holds_enough():
    state = ThrottleState()
    state.update(report(2000, 1500, 100), now=10.0)
    assert state.wait_for(600, now=10.0) == 0


def test_waits_exactly_long_enough_for_the_missing_points():
    state = ThrottleState()
    state.update(report(2000, 100, 100), now=10.0)
    assert state.wait_for(600, now=10.0) == 5.0
    # Two seconds later 200 points came back, so three seconds remain.
    assert state.wait_for(600, now=12.0) == 3.0


def test_a_cost_above_the_bucket_waits_for_a_full_bucket_not_forever():
    state = ThrottleState()
    state.update(report(1000, 0, 50), now=0.0)
    assert state.wait_for(5000, now=0.0) == 20.0


def test_points_held_by_requests_in_flight_are_not_room_for_another():
    state = ThrottleState()
    state.update(report(2000, 2000, 100), now=0.0)
    state.reserved = 993
    assert state.has_room(993, now=0.0)
    state.reserved = 1986
    assert not state.has_room(993, now=0.0)
    # The bucket refills beside what is held, up to its maximum.
    state.update(report(2000, 1500, 100), now=0.0)
    state.reserved = 993
    assert not state.has_room(993, now=0.0)
    assert state.has_room(993, now=4.9)
    # A cost beyond the bucket needs the whole bucket free, not more than it holds.
    state.reserved = 0
    assert state.has_room(5000, now=10.0)


def test_malformed_reports_keep_the_last_good_state():
    state = ThrottleState()
    state.update(report(2000, 100, 100), now=0.0)
    state.update({"throttleStatus": {"currentlyAvailable": "lots"}}, now=1.0)
    assert state.available == 100


@given(
    maximum=st.floats(min_value=100, max_value=20000),
    available_share=st.floats(min_value=0, max_value=1),
    rate=st.floats(min_value=1, max_value=2000),
    cost=st.floats(min_value=1, max_value=1000),
)
def test_after_the_wait_the_points_are_there(maximum, available_share, rate, cost):
    state = ThrottleState()
    state.update(report(maximum, maximum * available_share, rate), now=0.0)
    wait = state.wait_for(cost, now=0.0)
    assert wait >= 0
    assert state.available_at(wait) >= min(cost, maximum) - 1e-6


def test_page_sizes_keep_every_query_under_the_single_query_limit():
    for resource in RESOURCES.values():
        size = page_size_for(resource)
        assert 1 <= size <= 250
        assert page_cost(resource, size) <= SINGLE_QUERY_LIMIT
    # Children make a page dear: a product with its first 20 variants, an order with its
    # first line items, refunds, transactions and fulfillments.
    assert page_size_for(PRODUCTS) < 250
    assert page_size_for(ORDERS) < page_size_for(PRODUCTS)
