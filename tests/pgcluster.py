"""A throwaway PostgreSQL cluster that a test may crash and restart.

The suite's shared server (conftest's TEST_POSTGRES_URL) is used by other test sessions at the
same time, so fault tests that stop the database get a cluster of their own: `initdb` into a
temporary directory, served on a free loopback port with trust authentication, and removed
again when the test ends, whatever its outcome.

The cluster keeps PostgreSQL's durability settings (fsync and synchronous_commit on): a test
that crashes it with `pg_ctl stop -m immediate` checks that every commit acknowledged before
the crash survives WAL recovery.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

# Binaries live per major version on Debian/Ubuntu; elsewhere they are on PATH.
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
# Bounds for the slow steps, so a wedged server fails the test instead of hanging it.
INITDB_TIMEOUT_SECONDS = 30
PG_CTL_TIMEOUT_SECONDS = 20
READY_TIMEOUT_SECONDS = 10.0
SUPERUSER = "postgres"


class PostgresToolsMissing(RuntimeError):
    """initdb/pg_ctl are not installed: fault tests fail loudly rather than skip."""


class ClusterError(RuntimeError):
    """A pg_ctl or initdb step failed; the message carries the server log's tail."""


def _version_key(bindir: Path) -> tuple[int, ...]:
    name = bindir.parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit()) or (0,)


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: `TEST_PG_BINDIR`, else the newest Debian
    version directory, else wherever PATH's initdb really lives."""
    candidates: list[Path] = []
    if override := os.environ.get("TEST_PG_BINDIR"):
        candidates.append(Path(override))
    candidates += sorted(DEBIAN_POSTGRES_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    if on_path := shutil.which("initdb"):
        # Debian's /usr/bin/initdb is absent or a symlink; the real tools sit side by side.
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_isready")):
            return bindir
    raise PostgresToolsMissing(
        "the database restart tests need PostgreSQL's server binaries (initdb, pg_ctl, "
        f"pg_isready) and found none in {[str(c) for c in candidates] or 'PATH'}; install "
        "the postgresql package or set TEST_PG_BINDIR to their directory"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One data directory and one postmaster, owned by this object.

    PostgreSQL refuses to run as root, so when the tests run as root every server tool runs as
    the `postgres` OS user and the directory is handed to that user.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="receiver-pgcluster-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._run_as: str | None = None
        if os.geteuid() == 0:
            self._run_as = SUPERUSER
            owner = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, user: str, database: str) -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        try:
            return subprocess.run(
                command,
                cwd=self.root,
                user=self._run_as,
                group=self._run_as,
                # Drop root's supplementary groups too; the server wants no trace of root.
                extra_groups=[] if self._run_as else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(
                f"{' '.join(command)} exited {exc.returncode}:\n{exc.stdout}{exc.stderr}"
                f"{self.log_tail()}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"{' '.join(command)} took over {timeout} s{self.log_tail()}"
            ) from exc

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def _server_options(self) -> str:
        settings: Sequence[tuple[str, str]] = (
            ("listen_addresses", "127.0.0.1"),
            ("port", str(self.port)),
            # Our own socket directory: the shared server's /var/run/postgresql is not ours.
            ("unix_socket_directories", str(self.root)),
            # Spelled out because the test is about them: commits reach the WAL on disk.
            ("fsync", "on"),
            ("synchronous_commit", "on"),
        )
        return " ".join(f"-c {name}={value}" for name, value in settings)

    def initdb(self) -> None:
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            timeout=INITDB_TIMEOUT_SECONDS,
        )

    def start(self) -> None:
        """Start (after a crash this includes WAL recovery) and return once it accepts
        connections."""
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            self._server_options(),
            "--wait",
            "--timeout",
            str(PG_CTL_TIMEOUT_SECONDS),
            timeout=PG_CTL_TIMEOUT_SECONDS + 5,
        )
        self.wait_until_ready()

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every server process quits at once without a
        checkpoint, as in a crash or OOM kill; the next start replays the WAL."""
        self.stop(mode="immediate")

    def stop(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl",
            "stop",
            "--pgdata",
            str(self.data),
            "--mode",
            mode,
            "--wait",
            "--timeout",
            str(PG_CTL_TIMEOUT_SECONDS),
            timeout=PG_CTL_TIMEOUT_SECONDS + 5,
        )

    def is_ready(self) -> bool:
        completed = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--timeout",
                "2",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return completed.returncode == 0

    def wait_until_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        # pg_ctl --wait already waited for the postmaster; this confirms it over TCP, the way
        # the app connects, and bounds the wait.
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise ClusterError(f"not accepting connections after {timeout} s{self.log_tail()}")
            time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def destroy(self) -> None:
        """Stop the server if it runs and delete everything; safe to call at any point."""
        try:
            if self._postmaster_pid() is not None:
                # Its data is thrown away next, so there is nothing to shut down cleanly.
                self.stop(mode="immediate")
        except ClusterError:
            # pg_ctl could not stop it: end our own postmaster by its recorded pid.
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.initdb()
            self.start()
        except BaseException:
            # The start-up error is the one worth reporting, not a failed clean-up after it.
            with contextlib.suppress(ClusterError):
                self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()
