"""Real Atelier processes share one embedded PostgreSQL: start once, survive peers, kills and signals."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pytest
import typer
from typer.testing import CliRunner

from atelier.cli.db_cmds import db_app
from atelier.tools.ledger import database
from atelier.tools.ledger.database import (
    DatabaseError,
    DatabaseInUseError,
    embedded_status,
    install_exit_signal_handlers,
    resolve_database,
    stop_embedded,
)
from atelier.tools.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]

# An Atelier process in miniature: resolve the database, keep a connection, answer "query" lines on stdin,
# exit normally at end of input.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import psycopg
    from atelier.tools.settings import load_settings
    from atelier.tools.ledger.database import embedded_status, resolve_database
    settings = load_settings()
    handle = resolve_database(settings)
    conn = psycopg.connect(handle.url, autocommit=True)
    state = embedded_status(settings)
    database = conn.execute("SELECT current_database()").fetchone()[0]
    print(json.dumps({"server_pid": state.server_pid, "users": state.user_pids, "database": database}), flush=True)
    for line in sys.stdin:
        if line.strip() == "query":
            row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'atelier'").fetchone()
            print(json.dumps({"atelier_databases": row[0]}), flush=True)
    """
)


class Child:
    """A child Python process running CHILD against one data folder."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(ATELIER_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
        self.stderr_path = data_dir.parent / f"child-{id(self)}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], cwd=data_dir.parent, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _next(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child {self.pid} said nothing; stderr:\n{self.stderr_path.read_text()}") from None
        result: dict[str, Any] = json.loads(line)
        return result

    def ready(self) -> dict[str, Any]:
        """Wait until the child has resolved the database and connected."""
        return self._next()

    def query(self) -> int:
        """How many `atelier` databases the child sees through its open connection."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("query\n")
        self.proc.stdin.flush()
        return int(self._next()["atelier_databases"])

    def exit(self) -> int:
        """End its input: a normal exit, atexit cleanup included."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait()

    def signal(self, signum: int) -> int:
        """Send a signal and reap the process."""
        self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=30)
        self._stderr.close()
        return code


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """Live (non-zombie) postmasters serving pgdata."""
    return [
        proc
        for proc in psutil.process_iter(["name", "cmdline", "status"])
        if proc.info["name"] == "postgres"
        and proc.info["status"] != psutil.STATUS_ZOMBIE
        and str(pgdata) in " ".join(proc.info["cmdline"] or [])
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ATELIER_DATA_DIR for the module; the server is stopped at the end (`spawn` reaps the children)."""
    path = tmp_path_factory.mktemp("atelier-db") / "data"
    yield path
    settings = load_settings(data_dir=path, database_url=None)
    stop_embedded(settings, force=True)
    assert not postgres_processes(path / "postgres"), "a test left the embedded PostgreSQL running"


@pytest.fixture(scope="module")
def settings(data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir, database_url=None)


@pytest.fixture
def spawn(data_dir: Path) -> Iterator[Callable[[], Child]]:
    """Start children; any still alive at the end of the test is killed."""
    started: list[Child] = []

    def start() -> Child:
        child = Child(data_dir)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.proc.poll() is None:
            child.signal(signal.SIGKILL)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Invoke `db …` through a local typer app, with ATELIER_DATA_DIR set and DATABASE_URL unset."""
    app = typer.Typer()
    app.add_typer(db_app, name="db")
    runner = CliRunner()
    monkeypatch.delenv("DATABASE_URL", raising=False)

    def invoke(data_dir: Path, *args: str) -> Any:
        monkeypatch.setenv("ATELIER_DATA_DIR", str(data_dir))
        return runner.invoke(app, ["db", *args])

    return invoke


def test_two_processes_started_together_share_one_server(settings: Settings, spawn: Callable[[], Child]) -> None:
    a, b = spawn(), spawn()
    ready_a, ready_b = a.ready(), b.ready()
    assert ready_a["server_pid"] == ready_b["server_pid"] is not None
    assert ready_a["database"] == ready_b["database"] == "atelier"
    assert a.query() == b.query() == 1
    state = embedded_status(settings)
    assert state.running and state.server_pid == ready_a["server_pid"]
    assert sorted(state.user_pids) == sorted([a.pid, b.pid])
    assert a.exit() == 0 and b.exit() == 0
    assert not embedded_status(settings).running  # the last user's normal exit stopped it


def test_server_outlives_a_peer_that_exits(settings: Settings, spawn: Callable[[], Child]) -> None:
    a = spawn()
    server_pid = a.ready()["server_pid"]
    b = spawn()
    assert b.ready()["server_pid"] == server_pid
    assert a.exit() == 0
    state = embedded_status(settings)
    assert state.running and state.server_pid == server_pid and state.user_pids == [b.pid]
    assert b.query() == 1  # its open connection still works
    assert b.exit() == 0
    assert not embedded_status(settings).running and not postgres_processes(settings.data_dir / "postgres")


def test_server_of_a_killed_process_is_reused_and_its_pid_pruned(
    settings: Settings, spawn: Callable[[], Child]
) -> None:
    pgdata = settings.data_dir / "postgres"
    killed = spawn()
    server_pid = killed.ready()["server_pid"]
    assert killed.signal(signal.SIGKILL) == -signal.SIGKILL
    assert psutil.pid_exists(server_pid)  # left behind, as nothing ran at exit
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == [killed.pid]
    successor = spawn()
    ready = successor.ready()
    assert ready["server_pid"] == server_pid and ready["users"] == [successor.pid]
    assert successor.query() == 1
    assert successor.exit() == 0
    assert not embedded_status(settings).running


def test_sigterm_of_the_last_user_stops_the_server_cleanly(settings: Settings, spawn: Callable[[], Child]) -> None:
    child = spawn()
    server_pid = child.ready()["server_pid"]
    assert child.signal(signal.SIGTERM) == 128 + signal.SIGTERM  # SystemExit, not death by signal
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    state = embedded_status(settings)
    assert not state.running and state.user_pids == [] and state.pruned_pids == []
    log = (settings.data_dir / "postgres" / "log").read_text()
    assert log.rstrip().endswith("database system is shut down")


def test_reused_pids_after_a_reboot_are_not_taken_for_the_server_or_a_user(
    settings: Settings, spawn: Callable[[], Child]
) -> None:
    pgdata = settings.data_dir / "postgres"
    assert not embedded_status(settings).running
    stranger = subprocess.Popen(["sleep", "60"])  # now owns the pids the bookkeeping names
    try:
        fields = [str(stranger.pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "  0  0", "ready"]
        (pgdata / "postmaster.pid").write_text("\n".join(fields) + "\n")
        (pgdata / ".handle_pids.json").write_text(json.dumps([stranger.pid]))
        (pgdata / ".atelier_pids.json").write_text(json.dumps({str(stranger.pid): 1.0}))  # started long ago
        child = spawn()
        ready = child.ready()
        assert ready["server_pid"] not in (None, stranger.pid) and ready["users"] == [child.pid]
        assert child.exit() == 0
        assert not embedded_status(settings).running and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_db_status_and_stop(data_dir: Path, spawn: Callable[[], Child], cli: Callable[..., Any]) -> None:
    user = spawn()
    server_pid = user.ready()["server_pid"]
    result = cli(data_dir, "status", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    assert state["initialised"] and state["running"] and state["server_pid"] == server_pid
    assert state["user_pids"] == [user.pid] and not state["database_url_set"]
    assert state["uri"] == f"postgresql://postgres:@/atelier?host={data_dir / 'postgres'}"

    refused = cli(data_dir, "stop")
    assert refused.exit_code == 1 and isinstance(refused.exception, DatabaseInUseError)
    assert str(user.pid) in str(refused.exception) and "--force" in str(refused.exception)
    assert psutil.pid_exists(server_pid)

    forced = cli(data_dir, "stop", "--force")
    assert forced.exit_code == 0, forced.output
    assert "stopped" in forced.output and str(user.pid) in forced.output
    assert not json.loads(cli(data_dir, "status", "--json").output)["running"]
    assert user.exit() == 0  # its exit finds nothing to stop

    killed = spawn()
    killed.ready()
    killed.signal(signal.SIGKILL)
    stopped = cli(data_dir, "stop")  # only a dead pid is registered: no --force needed
    assert stopped.exit_code == 0, stopped.output
    assert "stopped" in stopped.output and str(killed.pid) in stopped.output
    again = cli(data_dir, "stop")
    assert again.exit_code == 0 and "not running" in again.output
    table = cli(data_dir, "status")
    assert table.exit_code == 0 and "Embedded PostgreSQL" in table.output and "no" in table.output


def test_db_commands_on_a_folder_never_initialised(tmp_path: Path, cli: Callable[..., Any]) -> None:
    state = json.loads(cli(tmp_path / "fresh", "status", "--json").output)
    assert state == {
        "data_dir": str(tmp_path / "fresh" / "postgres"), "initialised": False, "running": False,
        "server_pid": None, "uri": None, "user_pids": [], "pruned_pids": [], "stray_pids": [], "orphaned": False,
        "database_url_set": False,
    }
    result = cli(tmp_path / "fresh", "stop")
    assert result.exit_code == 0 and "nothing to stop" in result.output and "was ever initialised" in result.output
    assert not (tmp_path / "fresh").exists()


def test_database_url_touches_no_embedded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    handle = resolve_database(load_settings(data_dir=tmp_path / "data", database_url=url))
    assert handle.url == url and not handle.embedded and handle.pgdata is None
    assert not (tmp_path / "data").exists()
    assert url not in repr(handle)


def test_a_server_that_cannot_start_raises_database_error(tmp_path: Path) -> None:
    pgdata = tmp_path / "data" / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("99\n")  # looks initialised, is not: postgres refuses to start
    with pytest.raises(DatabaseError) as info:
        resolve_database(load_settings(data_dir=tmp_path / "data", database_url=None))
    message = str(info.value)
    assert str(pgdata) in message and str(pgdata / "log") in message
    assert "could not access the server configuration file" in message  # the log's tail
    assert "DATABASE_URL" in message and "atelier db stop" in message
    assert not postgres_processes(pgdata)


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous = dict(database._PREVIOUS_HANDLERS)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    database._PREVIOUS_HANDLERS.clear()
    database._PREVIOUS_HANDLERS.update(previous)


def test_signal_handlers_exit_normally_chain_and_respect_ignore(restore_signals: None) -> None:
    calls: list[int] = []

    def callers_handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, callers_handler)
    assert sorted(install_exit_signal_handlers()) == sorted([signal.SIGTERM, signal.SIGHUP])
    assert install_exit_signal_handlers() == []  # idempotent
    with pytest.raises(SystemExit) as info:
        signal.raise_signal(signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    signal.raise_signal(signal.SIGHUP)  # chained to the caller's handler, no exit
    assert calls == [signal.SIGHUP]

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # e.g. nohup: stays ignored
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert install_exit_signal_handlers() == [signal.SIGHUP]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN

    from_thread: list[list[int]] = []
    worker = threading.Thread(target=lambda: from_thread.append(install_exit_signal_handlers()))
    worker.start()
    worker.join()
    assert from_thread == [[]]
