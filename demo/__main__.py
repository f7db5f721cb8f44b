"""``make demo``: a simulated store, synced and live, on the embedded default.

Starts the Shopify simulator (``python -m tests.fakeshop``) with a store of realistic size
and three years of history, serves the receiver on it (SQLite in ``var/demo/``), registers
the store, subscribes its webhooks, backfills it in bulk, then lets the simulator keep trading
(new orders, payments, refunds, fulfillments, price and stock changes), each change reaching
the receiver as a signed webhook, until Ctrl-C. Prints the dashboard's address and a sign-in.
Nothing leaves this machine: the store's Admin API is the simulator's.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "var" / "demo"
VAR = DEFAULT_DIR  # set from --dir
SHOP = "demo-store.myshopify.com"
EMAIL = "demo@example.com"
CLI = str(Path(sys.executable).parent / "shopify-receiver")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: {what} exited with {process.returncode}; see {VAR}/*.log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: {what} did not answer {url} within {seconds:.0f} s")


def start_simulator(
    args: argparse.Namespace, port: int
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    out = VAR / "fakeshop.out"
    command = [
        sys.executable, "-m", "tests.fakeshop", "--port", str(port), "--shop", SHOP,
        "--seed", str(args.seed), "--customers", str(args.orders // 8),
        "--products", str(max(20, args.orders // 100)), "--orders", str(args.orders),
        "--history-years", "3", "--live", str(args.every), "--bulk-concurrency", "version",
    ]  # fmt: skip
    with open(out, "wb") as stdout, open(VAR / "fakeshop.log", "wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                info = json.loads(line)
                base = info["admin_base_url_template"].split("/{shop}")[0]
                wait_for(f"{base}/_fakeshop/health", process, "the simulator")
                return process, info
        if process.poll() is not None:
            raise SystemExit(f"demo: the simulator exited; see {VAR}/fakeshop.log")
        time.sleep(0.2)
    raise SystemExit("demo: the simulator did not start within 120 s")


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [CLI, *args], cwd=ROOT, env=env, input=stdin, text=True, capture_output=True
    )
    if result.returncode != 0:
        raise SystemExit(
            f"demo: shopify-receiver {' '.join(args)} failed:\n{result.stderr or result.stdout}"
        )
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the store")
    parser.add_argument(
        "--every", type=float, default=2.0, help="seconds between live changes (about)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="the demo's database, keys and logs"
    )
    args = parser.parse_args(argv)
    global VAR
    VAR = args.dir.resolve()
    if not port_free(args.port):
        raise SystemExit(
            f"demo: port {args.port} is taken (another `make run`?); "
            f"choose another: make demo PORT={args.port + 1}"
        )
    # A demo starts from nothing each time: its own database, keys and logs.
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        say(f"starting the simulated store ({args.orders:,} orders over three years) ...")
        simulator, info = start_simulator(args, free_port())
        children.append(simulator)
        public = f"http://127.0.0.1:{args.port}"
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite+aiosqlite:///{VAR / 'receiver.db'}",
            "SHOPIFY_API_SECRET": info["client_secret"],
            "SHOPIFY_API_KEY": info["client_id"],
            "PUBLIC_URL": public,
            "SECRET_KEY": secrets.token_urlsafe(32),
            "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "LOG_FORMAT": "text",
        }
        say(f"serving the receiver on {public} (SQLite in {_shown(VAR)}/) ...")
        with open(VAR / "receiver.log", "wb") as log:
            serve = subprocess.Popen(
                [CLI, "serve", "--port", str(args.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        children.append(serve)
        wait_for(f"{public}/readyz", serve, "the receiver")
        # The store's own Admin API base: its calls go to the simulator, and a real store
        # added to this server still goes to Shopify.
        cli(
            env,
            "tenants",
            "add",
            "--shop",
            SHOP,
            "--access-token",
            info["access_token"],
            "--admin-url",
            info["admin_base_url_template"],
        )
        password = secrets.token_urlsafe(12)
        cli(env, "users", "add", "--email", EMAIL, "--admin", stdin=password + "\n")
        say("subscribing the store's webhooks ...")
        cli(env, "webhooks", "sync", SHOP)
        say("backfilling the store (bulk) ...")
        started = time.monotonic()
        backfill = subprocess.run([CLI, "backfill", SHOP, "--mode", "bulk"], cwd=ROOT, env=env)
        if backfill.returncode != 0:
            raise SystemExit(f"demo: the backfill failed; see {VAR}/receiver.log")
        say(f"backfilled in {time.monotonic() - started:.0f} s; the store now trades live")
        print(
            f"\n  dashboard  {public}/\n  sign in    {EMAIL} / {password}\n"
            f"  logs       {_shown(VAR)}/receiver.log, fakeshop.log\n\n"
            f"  A change about every {args.every:g} s (orders, payments, refunds, "
            "fulfillments, prices, stock) arrives as a signed webhook. Ctrl-C stops.\n",
            flush=True,
        )
        serve.wait()
        raise SystemExit(f"demo: the receiver exited with {serve.returncode}; see its log")
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop()


if __name__ == "__main__":
    raise SystemExit(main())
