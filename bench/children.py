"""The benchmarks' child processes (servers, simulators, load generators): tracked so that a
finished, failed or interrupted run leaves none behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CHILDREN: list[subprocess.Popen[bytes]] = []


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts its workers down gracefully), then SIGKILL, to the process's own
    session when it was started with start_new_session (its workers too)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(process.pid) == process.pid:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            process.wait(timeout=10)
    if process in CHILDREN:
        CHILDREN.remove(process)


def stop_children() -> None:
    for process in list(CHILDREN):
        stop(process)


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: children, database


def start_service(
    root: Path, env: dict[str, str], port: int, log_path: Path, *, timeout: float
) -> subprocess.Popen[bytes]:
    """`shopify-receiver serve --port` with `env`, its output in `log_path`, tracked in
    CHILDREN; returned once it answers /healthz. RuntimeError with the log's end if it exits
    or does not answer within `timeout` seconds."""
    with open(log_path, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "shopify-receiver"), "serve", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    CHILDREN.append(server)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.3)
