"""Clean stops: every long-running Atelier process, on embedded defaults, ends promptly on SIGTERM or SIGINT and,
as the last user, stops the embedded PostgreSQL; a server left by a killed process is reported orphaned and the
next process adopts it (or `atelier db stop` stops it without --force).

Each case gets a private ATELIER_DATA_DIR holding a copy of one initialised (and migrated) embedded data folder,
so no case pays for initdb. The seconds from the signal to the exit are printed (`-s` shows them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from atelier.tools.ledger.database import embedded_status, stop_embedded
from atelier.tools.settings import Settings, load_settings
from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "atelier.cli.main"]
START_SECONDS = 120.0  # the chat and langgraph dev import a lot on 2 shared cores
STOP_SECONDS = 30.0  # a clean stop takes a few seconds; past this the process is killed and the case fails


@dataclass(frozen=True)
class Command:
    """How to start one long-running process and how to tell it is serving."""

    argv: Callable[[int, Path], list[str]]  # (port, tmp folder) → argv
    ready: Callable[[int, Path], bool]  # (port, log) → whether it serves


def _answers(url: str) -> bool:
    """Whether url answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _listens(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _logged(log: Path, text: str) -> bool:
    """Whether the log holds text."""
    try:
        return text in log.read_text(errors="replace")
    except OSError:
        return False


LANGGRAPH = str(Path(sys.executable).parent / "langgraph")
COMMANDS: dict[str, Command] = {
    "chat": Command(lambda port, _: [sys.executable, "app.py"],
                    lambda port, _: _answers(f"http://127.0.0.1:{port}/api/health")),
    "api": Command(lambda port, _: [*CLI, "api", "--port", str(port)],
                   lambda port, _: _answers(f"http://127.0.0.1:{port}/health")),
    "worker": Command(lambda port, _: [*CLI, "worker", "--slots", "1"],
                      lambda port, log: _logged(log, "Ctrl-C to stop")),
    "mcp": Command(lambda port, _: [*CLI, "mcp", "--http", "--port", str(port)],
                   lambda port, _: _listens(port)),
    "watch": Command(lambda port, tmp: [*CLI, "watch", str(tmp / "zone")],
                     lambda port, log: _logged(log, "Ctrl-C to stop")),
    # a one-shot command that can wait long: no worker runs, so it waits until stopped
    "submit-wait": Command(lambda port, _: [*CLI, "submit", "a quiet harbour", "--wait"],
                           lambda port, log: True),
    "langgraph": Command(lambda port, _: [LANGGRAPH, "dev", "--port", str(port), "--no-browser", "--no-reload"],
                         lambda port, _: _answers(f"http://127.0.0.1:{port}/ok")),
}
CASES = [("chat", signal.SIGTERM), ("chat", signal.SIGINT), ("api", signal.SIGTERM), ("api", signal.SIGINT),
         ("worker", signal.SIGTERM), ("worker", signal.SIGINT), ("mcp", signal.SIGTERM), ("mcp", signal.SIGINT),
         ("watch", signal.SIGTERM), ("watch", signal.SIGINT), ("submit-wait", signal.SIGTERM),
         ("submit-wait", signal.SIGINT), ("langgraph", signal.SIGTERM),
         ("langgraph", signal.SIGINT)]


def _environment(data_dir: Path, comfy_url: str, ollama_url: str, port: int) -> dict[str, str]:
    """Embedded defaults: this environment without any Atelier, database, Qdrant or Gradio setting."""
    dropped = ("ATELIER_", "DATABASE_URL", "QDRANT_", "GRADIO_SERVER_", "COMFYUI_URL", "OLLAMA_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return env | {
        "ATELIER_AUTH": "local", "ATELIER_DATA_DIR": str(data_dir), "COMFYUI_URLS": comfy_url,
        "OLLAMA_URL": ollama_url, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "HF_HUB_OFFLINE": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGGRAPH_CLI_NO_ANALYTICS": "1", "GRADIO_SERVER_PORT": str(port),
    }


def _tail(path: Path, chars: int = 3000) -> str:
    """The end of a log, for failure messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _postmasters(settings: Settings) -> list[int]:
    """Pids of live postgres processes serving this data folder (found by their command line, not by files)."""
    pgdata = str((settings.data_dir / "postgres").resolve())
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if (proc.info["name"] == "postgres" and proc.info["status"] != psutil.STATUS_ZOMBIE
                and pgdata in " ".join(proc.info["cmdline"] or [])):
            found.append(proc.pid)
    return found


def _server_gone(settings: Settings) -> bool:
    """Wait a little for the data folder's server to be gone (its postgres children exit after the postmaster)."""
    deadline = time.monotonic() + 10
    while embedded_status(settings).running or _postmasters(settings):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _db_status(env: Mapping[str, str]) -> dict[str, object]:
    """`atelier db status --json`, parsed."""
    done = subprocess.run([*CLI, "db", "status", "--json"], cwd=ROOT, env=dict(env), capture_output=True, text=True,
                          timeout=60, check=True)
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, migrated embedded data folder (stopped), made once by a real CLI run and copied per case."""
    data_dir = tmp_path_factory.mktemp("template") / "data"
    env = _environment(data_dir, "http://127.0.0.1:9", "http://127.0.0.1:9", 9)
    done = subprocess.run([*CLI, "jobs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    settings = load_settings(data_dir=data_dir, database_url=None)
    assert _server_gone(settings), "a one-shot CLI command left its embedded PostgreSQL running"
    return data_dir / "postgres"


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Iterator[Path]:
    """A private ATELIER_DATA_DIR with a copy of the template's data folder; any server left is stopped after."""
    data = tmp_path / "d"
    data.mkdir()
    subprocess.run(["cp", "-a", str(template), str(data / "postgres")], check=True)  # -a: owner and 0700 kept
    yield data
    settings = load_settings(data_dir=data, database_url=None)
    if embedded_status(settings).running:
        stop_embedded(settings, force=True)


class _Running:
    """One started process, its log and port."""

    def __init__(self, name: str, env: dict[str, str], tmp_path: Path, port: int) -> None:
        self.name, self.port = name, port
        self.log = next(tmp_path / f"{name}-{n}.log" for n in range(100) if not (tmp_path / f"{name}-{n}.log").exists())
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(COMMANDS[name].argv(port, tmp_path), stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=ROOT)

    def wait_ready(self, settings: Settings) -> None:
        """Wait until it serves and is a registered user of the embedded server."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}) before serving:\n{_tail(self.log)}")
            if (COMMANDS[self.name].ready(self.port, self.log)
                    and self.proc.pid in embedded_status(settings).user_pids):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not serving after {START_SECONDS:g} s:\n{_tail(self.log)}")
            time.sleep(0.25)

    def stop(self, signum: int) -> float:
        """Send signum, wait for the exit; the seconds it took (the process is killed past STOP_SECONDS)."""
        started = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"{self.name} ignored {signal.Signals(signum).name} for {STOP_SECONDS:g} s:\n{_tail(self.log)}")
        return time.monotonic() - started

    def kill(self) -> None:
        """Stop it whatever state it is in (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start(data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama,
          tmp_path: Path) -> Iterator[Callable[[str], _Running]]:
    """start(name) runs one of COMMANDS on this case's data folder and the fakes; all are killed at the end."""
    started: list[_Running] = []

    def run(name: str) -> _Running:
        port = free_port()
        running = _Running(name, _environment(data_dir, fake_comfy.url, fake_ollama.url, port), tmp_path, port)
        started.append(running)
        return running

    yield run
    for running in started:
        running.kill()


@pytest.mark.parametrize(("name", "signum"), CASES, ids=[f"{n}-{s.name}" for n, s in CASES])
def test_a_signal_stops_the_process_and_its_embedded_postgres(
    name: str, signum: signal.Signals, start: Callable[[str], _Running], data_dir: Path
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    running = start(name)
    running.wait_ready(settings)
    server_pid = embedded_status(settings).server_pid
    assert server_pid is not None and _postmasters(settings)

    seconds = running.stop(signum)
    print(f"\n{name} {signum.name}: exited {running.proc.returncode} in {seconds:.2f} s")

    # 0, 128+N (SystemExit after a clean shutdown) or -N (re-raised under the default action after cleanup)
    assert running.proc.returncode in (0, 128 + signum, -signum), (
        f"{name} exited {running.proc.returncode} on {signum.name}:\n{_tail(running.log)}")
    assert _server_gone(settings), (
        f"{name} left its embedded PostgreSQL running after {signum.name}: {embedded_status(settings)}, "
        f"postgres pids {_postmasters(settings)}\n{_tail(running.log)}")
    assert "Traceback" not in running.log.read_text(errors="replace"), _tail(running.log)


def test_a_killed_process_leaves_an_orphan_the_next_one_adopts(
    start: Callable[[str], _Running], data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url, 9)
    first = start("worker")
    first.wait_ready(settings)
    server_pid = embedded_status(settings).server_pid
    first.proc.kill()  # SIGKILL: nothing runs, the server stays
    first.proc.wait(10)

    status = _db_status(env)
    assert status["running"] and status["orphaned"] is True and status["user_pids"] == [], status
    assert status["server_pid"] == server_pid, status
    table = subprocess.run([*CLI, "db", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "orphaned" in table.stdout, table.stdout

    second = start("worker")
    second.wait_ready(settings)
    adopted = embedded_status(settings).as_dict()
    assert adopted["server_pid"] == server_pid and adopted["user_pids"] == [second.proc.pid], adopted
    assert adopted["orphaned"] is False, adopted
    second.stop(signal.SIGTERM)
    assert _server_gone(settings), f"the adopter did not stop the server it adopted: {embedded_status(settings)}"


def test_db_stop_stops_an_orphan_without_force(
    start: Callable[[str], _Running], data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url, 9)
    running = start("api")
    running.wait_ready(settings)
    running.proc.kill()
    running.proc.wait(10)
    assert embedded_status(settings).orphaned

    done = subprocess.run([*CLI, "db", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "stopped the embedded PostgreSQL" in done.stdout, done.stdout + done.stderr
    assert _server_gone(settings)
    assert not embedded_status(settings).orphaned


def _replace_folder(data_dir: Path) -> None:
    """Take the data folder away from under its running server, as deleting it does.

    Moved rather than deleted: PostgreSQL shuts itself down within a minute once its postmaster.pid is gone, so a
    deleted folder's server is stray for a random part of a minute; a moved one stays stray, named the same way.
    """
    (data_dir / "postgres").rename(data_dir / "postgres-away")


def test_a_server_on_a_deleted_folder_is_orphaned_and_the_next_start_stops_it(
    start: Callable[[str], _Running], data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url, 9)
    first = start("worker")
    first.wait_ready(settings)
    stray = embedded_status(settings).server_pid
    first.proc.kill()
    first.proc.wait(10)
    _replace_folder(data_dir)

    status = _db_status(env)
    assert status["orphaned"] is True and status["stray_pids"] == [stray] and not status["initialised"], status

    second = start("worker")  # a fresh folder (initdb) and server; the stray one stopped first
    second.wait_ready(settings)
    assert not psutil.pid_exists(stray) or psutil.Process(stray).status() == psutil.STATUS_ZOMBIE
    fresh = embedded_status(settings).as_dict()
    assert fresh["server_pid"] != stray and fresh["stray_pids"] == [] and fresh["orphaned"] is False, fresh
    second.stop(signal.SIGTERM)
    assert _server_gone(settings)


def test_db_stop_stops_a_server_on_a_deleted_folder(
    start: Callable[[str], _Running], data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url, 9)
    running = start("api")
    running.wait_ready(settings)
    stray = embedded_status(settings).server_pid
    running.proc.kill()
    running.proc.wait(10)
    _replace_folder(data_dir)

    done = subprocess.run([*CLI, "db", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"stopped postgres pid(s) {stray}" in done.stdout, done.stdout + done.stderr
    assert not _postmasters(settings) and not embedded_status(settings).orphaned


def test_an_orphan_that_does_not_answer_is_stopped_and_replaced(
    start: Callable[[str], _Running], data_dir: Path
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    first = start("worker")
    first.wait_ready(settings)
    hung = embedded_status(settings).server_pid
    assert hung is not None
    first.proc.kill()
    first.proc.wait(10)
    os.kill(hung, signal.SIGSTOP)  # running, but answers nobody
    try:
        second = start("worker")
        second.wait_ready(settings)
    finally:
        if psutil.pid_exists(hung):
            os.kill(hung, signal.SIGCONT)
    replaced = embedded_status(settings)
    assert replaced.server_pid not in (None, hung) and replaced.user_pids == [second.proc.pid], replaced
    assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
    second.stop(signal.SIGTERM)
    assert _server_gone(settings)


def _job(settings: Settings, job_id: str) -> dict[str, object]:
    """The job's row, read over the running embedded server's socket (this process does not register as a user)."""
    import psycopg
    from psycopg.rows import dict_row

    uri = embedded_status(settings).uri
    assert uri is not None, "the embedded PostgreSQL is not running"
    with psycopg.connect(uri, row_factory=dict_row) as conn:
        row = conn.execute("SELECT status, attempts, worker, lease_expires_at <= now() AS released FROM jobs "
                           "WHERE id = %s", (job_id,)).fetchone()
    assert row is not None, job_id
    return dict(row)


def _until(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Wait until check() holds; fail naming `what` past the deadline."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not after {seconds:g} s: {what}")
        time.sleep(0.2)


def test_a_stopping_worker_releases_its_running_job_and_another_finishes_it(
    start: Callable[[str], _Running], data_dir: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    settings = load_settings(data_dir=data_dir, database_url=None)
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url, 9)
    fake_comfy.step_seconds = 0.25  # 40 steps: 10 s, far longer than a clean stop may take
    first = start("worker")
    first.wait_ready(settings)
    done = subprocess.run([*CLI, "submit", "a lighthouse at dusk", "--steps", "40", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = str(json.loads(done.stdout)[0]["id"]) if done.stdout.lstrip().startswith("[") else str(
        json.loads(done.stdout)["id"])
    _until(lambda: _job(settings, job_id)["status"] == "running", "the first worker runs the job")

    seconds = first.stop(signal.SIGTERM)
    print(f"\nworker with a running job SIGTERM: exited {first.proc.returncode} in {seconds:.2f} s")
    assert first.proc.returncode == 0, _tail(first.log)
    assert _server_gone(settings), "the worker was the last user: its server stops, the job waits in the data"

    second = start("worker")
    second.wait_ready(settings)
    row = _job(settings, job_id)
    assert row["status"] in ("running", "submitted", "succeeded") and row["status"] != "failed", row
    _until(lambda: _job(settings, job_id)["status"] == "succeeded", "the second worker finishes the released job")
    finished = _job(settings, job_id)
    assert finished["attempts"] == 2, finished  # released, not failed: the second attempt ran it
    second.stop(signal.SIGTERM)
    assert _server_gone(settings)
