"""The README's "Try it" block, pasted whole into bash on a fresh clone, works: every command
in it succeeds in order, with nothing run before what it needs exists."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def try_it_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found is not None, "README's Try it section has no sh block"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_try_it_block_works_pasted_whole_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # The committed files of this checkout (a test run may sit on uncommitted edits).
    for path in ("README.md", "Makefile", "pyproject.toml"):
        (clone / path).write_bytes((ROOT / path).read_bytes())
    # This checkout's .venv stands in for the minute `make install` spends building one; made
    # older than pyproject.toml's target, so the block's `make install` runs and finds it done.
    (clone / ".venv").symlink_to(ROOT / ".venv")
    os.utime(clone / "pyproject.toml", (0, 0))
    port = str(free_port())  # the block's 8000 may be taken on a test machine
    block = try_it_block().replace("8000", port)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "SHOPIFY_", "ENCRYPTION_KEYS", "SECRET_KEY"))
    }
    script = "set -euo pipefail\nset -m\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + block
    result = subprocess.run(
        ["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # The last query printed the order the test webhook created.
    assert re.search(r"^\d+\|#\d+\|[\d.]+\|\w+$", result.stdout, re.M), result.stdout
