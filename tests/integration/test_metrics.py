"""GET /metrics counts what the receiver did, in Prometheus text format."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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


async def test_metrics_token_guards_metrics(pg, served_apps, http):
    from receiver.settings import Secret
    from tests.conftest import ServedApp, settings_for

    key = "postgresql-metrics-token"
    if key not in served_apps:
        settings = settings_for(pg.url, metrics_token=Secret("scrape-me"))
        served_apps[key] = ServedApp(settings).__enter__()
    url = f"{served_apps[key].base_url}/metrics"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic scrape-me"}):
        refused = await http.get(url, headers=headers)
        assert refused.status_code == 401
        assert "shopify_receiver" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    allowed = await http.get(url, headers={"Authorization": "Bearer scrape-me"})
    assert allowed.status_code == 200
    assert "shopify_receiver_webhooks_total" in allowed.text


@contextmanager
def serving(tmp_path: Path, workers: int) -> Iterator[str]:
    """`shopify-receiver serve` on the embedded default in `tmp_path`; its base URL."""
    from tests.integration.test_cli import CLI, cli_env, free_port, wait_until_serving

    port = free_port()
    process = subprocess.Popen(
        [str(CLI), "serve", "--workers", str(workers), "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(None, PERIODIC_CHECKS="off"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(process, base)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_worker_of_serve_reports_the_same_totals(tmp_path):
    """`serve --workers 2`: deliveries land on either worker, and a scrape answered by either
    one counts all of them."""
    with serving(tmp_path, workers=2) as base:
        sent = 12
        for n in range(sent):  # a new connection each, so both workers take some
            body, headers = delivery("orders/create", shop=f"metrics-{n}.myshopify.com")
            response = httpx.post(f"{base}/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text
        totals = set()
        for _ in range(10):
            scrape = httpx.get(f"{base}/metrics", timeout=5)
            assert scrape.status_code == 200
            total = "shopify_receiver_webhooks_total"
            totals.add(sample(scrape.text, total, topic="orders/create", outcome="ignored"))
        assert totals == {float(sent)}


def test_serve_rarely_runs_the_garbage_collector(tmp_path):
    """A served webhook holds more than CPython's default 700 young objects at once, so with
    the defaults every few webhooks paid for a collection that found nothing (about a tenth
    of the web process's CPU under load); `serve` tunes the collector (receiver.runtime)."""
    from receiver.samples import sample_payload

    young = "python_gc_collections_total"
    shop = "gc.myshopify.com"
    order = sample_payload("orders/create", shop)
    order["line_items"] = order["line_items"] * 20  # a large order: about 2,000 objects parsed
    with serving(tmp_path, workers=1) as base, httpx.Client(base_url=base) as client:
        before = sample(client.get("/metrics").text, young, generation="0")
        for n in range(300):
            body, headers = delivery("orders/create", dict(order, id=n + 1), shop=shop)
            response = client.post("/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text
        after = sample(client.get("/metrics").text, young, generation="0")
    assert before > 0  # the metric is there (collections ran while importing)
    assert after - before <= 3  # the defaults ran about 540 here
