"""The benchmarks' child processes (servers, simulators, load generators): tracked so that a
finished, failed or interrupted run leaves none behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

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
