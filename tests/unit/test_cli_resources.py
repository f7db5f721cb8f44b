"""`--resources` is validated against the registry before a command touches anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from handlers.resources import RESOURCES, reconciled_names
from receiver.cli import main


@pytest.mark.parametrize("command", ["backfill", "reconcile"])
def test_an_unknown_resource_is_a_usage_error_listing_the_choices(command: str) -> None:
    result = CliRunner().invoke(main, [command, "shop.myshopify.com", "--resources", "orders,x"])
    assert result.exit_code == 2
    assert "unknown resources x" in result.output
    choices = list(RESOURCES) if command == "backfill" else reconciled_names()
    assert f"choose from {', '.join(choices)}" in result.output


def test_the_defaults_and_help_come_from_the_registry() -> None:
    backfill = CliRunner().invoke(main, ["backfill", "--help"])
    assert ",".join(RESOURCES) in backfill.output
    reconcile = CliRunner().invoke(main, ["reconcile", "--help"])
    assert ",".join(reconciled_names()) in reconcile.output
    # Every resource is reconciled (locations and inventory items by a whole read), and
    # the variants Shopify lists on QueryRoot on their own.
    assert set(RESOURCES) < set(reconciled_names())
    assert "product_variants" in reconciled_names()
    assert "product_variants" not in RESOURCES
    refused = CliRunner().invoke(
        main, ["reconcile", "shop.myshopify.com", "--resources", "inventory_levels"]
    )
    assert refused.exit_code == 2  # read with their items, not a choice of their own
