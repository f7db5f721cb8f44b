"""``make demo`` from start to live: the simulator, the receiver on SQLite, the store
registered, subscribed and backfilled, then webhooks arriving from the store's own trading;
the sign-in it prints opens the dashboard. Run as the user runs it (`python -m demo`), as
processes talking over loopback."""

from __future__ import annotations

import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Output:
    """The demo's stdout, line by line, read on a thread so a wait can have a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: str, seconds: float) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {pattern!r} within {seconds} s:\n" + "\n".join(self.seen)
                ) from None
            if line is None:
                raise AssertionError(f"the demo ended before {pattern!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Output, int, Path]]:
    port = free_port()
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--orders", str(ORDERS), "--every", "0.2",
         "--port", str(port), "--dir", str(directory)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield Output(process), port, directory
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    # Ctrl-C leaves nothing running: the simulator and the receiver went with it.
    leftovers = subprocess.run(
        ["pgrep", "-f", str(directory)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], leftovers


def count(database: Path, statement: str) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute(statement).fetchone()[0])


def test_make_demo_reaches_a_populated_live_dashboard(demo: tuple[Output, int, Path]) -> None:
    output, port, directory = demo
    sign_in = output.until(r"sign in\s+(\S+) / (\S+)", 300)
    email, password = sign_in.group(1), sign_in.group(2)
    database = directory / "receiver.db"

    # Populated: the backfill brought every order the store had (and the live ones since).
    assert count(database, "SELECT count(*) FROM orders WHERE deleted_at IS NULL") >= ORDERS
    assert count(database, "SELECT count(*) FROM order_line_items") > ORDERS
    assert count(database, "SELECT count(*) FROM product_variants") > 0

    # Live: the store's trading keeps arriving as verified webhooks, and is applied.
    before = count(database, "SELECT count(*) FROM webhook_events WHERE status = 'processed'")
    deadline = time.monotonic() + 60
    while (
        count(database, "SELECT count(*) FROM webhook_events WHERE status = 'processed'")
        < before + 5
    ):
        assert time.monotonic() < deadline, "no live webhooks processed within 60 s"
        time.sleep(0.5)  # polling another process's database: there is nothing to wait on
    assert count(database, "SELECT count(*) FROM webhook_events WHERE status = 'failed'") == 0

    # The printed sign-in opens the dashboard, which shows the store.
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        form = client.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        response = client.post(
            "/login",
            data={"csrf_token": csrf.group(1), "email": email, "password": password},
        )
        assert response.status_code in (200, 303), response.text
        home = client.get("/", follow_redirects=True)
        assert home.status_code == 200
        assert "demo-store.myshopify.com" in home.text
