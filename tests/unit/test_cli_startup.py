"""Every `shopify-receiver` command pays the command line's imports before it starts: the heavy
modules (alembic, procrastinate, the backfill's runner) are imported only by the commands
that use them (`receiver/cli.py`)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("alembic", "procrastinate", "backfill.runner", "backfill.queue", "receiver.services")


def test_the_command_line_starts_without_its_heavy_modules() -> None:
    # A fresh interpreter: this one has imported everything the other tests use.
    probe = (
        "import json, sys, receiver.cli; "
        f"print(json.dumps([name for name in {list(HEAVY)!r} if name in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
