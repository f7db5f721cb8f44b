"""The simulator as benchmarks run it: its own process (`python -m tests.fakeshop`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from backfill.queries import BULK_RUN, BULK_STATUS, ORDERS
from tests.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_stopped_simulator_removes_its_bulk_files(tmp_path: Path) -> None:
    """SIGTERM, as the benchmarks stop it: the prepared files go with the process (each run
    left up to 0.8 GB behind when uvicorn's re-raised signal killed it before its exit
    handlers)."""
    port = free_port()
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.fakeshop", "--port", str(port), "--orders", "300"),
            *("--customers", "5", "--products", "5", "--no-throttle", "--bulk-polls", "1"),
            "--prepare-bulk-files",
        ],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as simulator:
        try:
            assert simulator.stdout is not None
            info = next(json.loads(line) for line in simulator.stdout if line.startswith(b"{"))
            health = f"http://127.0.0.1:{port}/_fakeshop/health"
            deadline = time.monotonic() + 60
            while not _answers(health):  # it prints its coordinates, then starts serving
                assert time.monotonic() < deadline, "the simulator did not start serving"
            headers = {"X-Shopify-Access-Token": info["access_token"]}
            query = f"{{ orders {{ edges {{ node {{{ORDERS.fields}}} }} }} }}"
            with httpx.Client(headers=headers, timeout=30) as client:
                started = client.post(
                    info["graphql_url"], json={"query": BULK_RUN, "variables": {"query": query}}
                ).json()["data"]["bulkOperationRunQuery"]
                assert started["userErrors"] == []
                status = {"query": BULK_STATUS, "variables": {"id": started["bulkOperation"]["id"]}}
                node = client.post(info["graphql_url"], json=status).json()["data"]["node"]
                while node["status"] == "RUNNING":
                    assert time.monotonic() < deadline, "the bulk file was not written"
                    node = client.post(info["graphql_url"], json=status).json()["data"]["node"]
                assert node["status"] == "COMPLETED"
                assert len(client.get(node["url"]).text.splitlines()) == 300
            assert [path.name[:14] for path in tmp_path.iterdir()] == ["fakeshop-bulk-"]
            simulator.terminate()
            assert simulator.wait(30) == 128 + 15
            assert list(tmp_path.iterdir()) == []
        finally:
            simulator.kill()
            simulator.wait(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
