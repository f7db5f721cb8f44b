"""GET /metrics counts what the receiver did, in Prometheus text format."""

from __future__ import annotations

import re

from tests.factories import create_tenant, delivery


def sample(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_outcomes_duplicates_latency_and_lag(backend, served, http):
    await create_tenant(backend.sessions)
    before = (await http.get(f"{served.base_url}/metrics")).text
    body, headers = delivery("orders/create")
    for _ in range(2):
        assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success
    bad = dict(headers, **{"X-Shopify-Hmac-Sha256": "wrong"})
    assert (await http.post(served.webhook_url, content=body, headers=bad)).status_code == 401
    response = await http.get(f"{served.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    total = "shopify_receiver_webhooks_total"
    assert grew(total, topic="orders/create", outcome="processed") == 1
    assert grew(total, topic="orders/create", outcome="duplicate") == 1
    assert grew(total, topic="orders/create", outcome="unauthorized") == 1
    assert grew("shopify_receiver_webhook_duplicates_total") == 1
    assert grew("shopify_receiver_webhook_handler_seconds_count", topic="orders/create") == 2
    assert grew("shopify_receiver_webhook_lag_seconds_count") == 1
