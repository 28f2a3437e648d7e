"""Load: many people at once on one machine — submitters, event sockets, chat sessions and scrapes — beside one of each.

Against real processes on loopback: `atelier api` and two `atelier worker`s on the fake ComfyUI, a chat server
(atelier.chat.build_server, without its own worker) on the fake Ollama, and a fresh PostgreSQL database on
127.0.0.1:5432 (dropped at the end). The same fixed amount of work runs twice on the same stack: first with one client
of each kind, then under load —
- `--submitters` concurrent submitters POST /jobs (`--jobs` in all, each as one of `--users` accounts);
- up to `--sockets` job-event WebSockets open at once, one per submitted job, each read until the job's final event
  (a socket that was admitted and closed before its final event is an event lost: it must be 0);
- `--chats` concurrent chat sessions through gradio_client (`--chat-turns` questions in all, each a new conversation;
  time to first token);
- Prometheus-style scrapes of the API's /metrics every `--scrape-interval` s (with an admin's token).
Meanwhile the bench samples the database's connections (pg_stat_activity), the API process's RSS and CPU, and its own
event loop's lag (what of a latency is the driver's own delay). The fakes run in a child process of their own, so the
driver's 300 sockets do not starve the fake Ollama and ComfyUI of this process's GIL.
Each submit carries an idempotency key, so a POST whose connection drops is sent again (counted as a retry), and the
client's keep-alive (2 s) ends before uvicorn's (5 s): with both at 5 s a request can leave on a connection the server
is closing at that moment (httpx ReadError).

Accounts, not a raised limit: the API runs with ATELIER_AUTH=accounts and the work is spread over `--users` people (each
with an access token from POST /auth/token), so ATELIER_MAX_EVENT_SOCKETS_PER_USER keeps its default (32 per user and
process): that cap guards against one client hogging the server, and many people each holding a few sockets is the
load it has to admit. One user holding 300 sockets would only measure the cap's refusals.
Run: .venv/bin/python bench/load.py [--jobs 600] [--submitters 50] [--sockets 300] [--chats 20] [--chat-turns 60]
     [--users 20] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import websockets
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat_latency import ANSWER, QUESTION, percentile  # noqa: E402
from bench.smoke import parse_args  # noqa: E402

SMOKE = {"jobs": 12, "submitters": 4, "sockets": 6, "chats": 2, "chat_turns": 4, "users": 3}
FINAL_EVENTS = frozenset({"done", "failed", "cancelled"})
SOCKET_CAP = 32  # ATELIER_MAX_EVENT_SOCKETS_PER_USER's default, which the bench keeps
ADMIN = "load-admin"


# --- pure helpers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    """How many clients of each kind one run has."""

    submitters: int
    sockets: int
    chats: int

    @classmethod
    def one_each(cls) -> Clients:
        """The baseline: one client of each kind."""
        return cls(1, 1, 1)


def users_needed(sockets: int, wanted: int, cap: int = SOCKET_CAP) -> int:
    """Users to spread the work over: at least `wanted`, and enough that `sockets` fit under the per-user cap."""
    return max(wanted, math.ceil(sockets / cap), 1)


def user_of(index: int, users: Sequence[str]) -> str:
    """Whose request number `index` is (round robin, so every user's share differs by at most one)."""
    return users[index % len(users)]


def is_final(message: dict[str, Any]) -> bool:
    """Whether a job-event message is the job's last (after which the server closes the socket)."""
    return message.get("type") in FINAL_EVENTS


def spread(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as possible (the first ones get the remainder)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


@dataclass
class Tally:
    """What one run measured (latencies in seconds)."""

    submit: list[float] = field(default_factory=list)
    first_event: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    scrape: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    finals: int = 0
    lost: int = 0
    open_sockets: int = 0
    peak_sockets: int = 0
    peak_connections: int = 0
    peak_lock_waits: int = 0
    api_busy_connections: list[int] = field(default_factory=list)  # the API's connections not idle, per sample
    peak_api_connections: int = 0
    lock_waiters: Counter[str] = field(default_factory=Counter)  # samples of a statement waiting on a lock
    peak_rss: int = 0
    api_cpu: float = 0.0
    driver_cpu: float = 0.0
    lag: list[float] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0


def quantiles(samples: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    """The percentiles of some samples in ms (None for each when there are none)."""
    return [percentile(samples, q) * 1000 if samples else None for q in qs]


def shown(value: float | None, digits: int = 1) -> str:
    """A figure for the table ('–' when there is none)."""
    return "–" if value is None else f"{value:.{digits}f}"


def ratio(loaded: float | None, single: float | None) -> str:
    """Under load / one client, as the table shows it."""
    if loaded is None or single is None or single == 0:
        return "–"
    return f"{loaded / single:.2f}x"


def table_rows(single: Tally, loaded: Tally) -> list[tuple[str, str, str, str]]:
    """(figure, one client, under load, ratio) for every figure the bench reports."""
    rows: list[tuple[str, str, str, str]] = []
    for name, attr in (("submit", "submit"), ("first event", "first_event"), ("chat first token", "first_token"),
                       ("scrape /metrics", "scrape"), ("driver loop lag", "lag")):
        for q, one, many in zip((50, 95, 99), quantiles(getattr(single, attr)), quantiles(getattr(loaded, attr)),
                                strict=True):
            rows.append((f"{name} p{q} (ms)", shown(one), shown(many), ratio(many, one)))
    mb = 1024 * 1024
    rows += [
        ("jobs/s (submit to last final)", shown(len(single.submit) / single.seconds if single.seconds else None),
         shown(len(loaded.submit) / loaded.seconds if loaded.seconds else None),
         ratio(len(loaded.submit) / loaded.seconds if loaded.seconds else None,
               len(single.submit) / single.seconds if single.seconds else None)),
        ("peak open event sockets", str(single.peak_sockets), str(loaded.peak_sockets),
         ratio(loaded.peak_sockets, single.peak_sockets)),
        ("peak PostgreSQL connections", str(single.peak_connections), str(loaded.peak_connections),
         ratio(loaded.peak_connections, single.peak_connections)),
        ("api's connections (peak)", str(single.peak_api_connections), str(loaded.peak_api_connections), "–"),
        ("api's connections in use (mean)", shown(mean(single.api_busy_connections)),
         shown(mean(loaded.api_busy_connections)), "–"),
        ("peak connections waiting on a lock", str(single.peak_lock_waits), str(loaded.peak_lock_waits), "–"),
        ("api RSS peak (MB)", shown(single.peak_rss / mb), shown(loaded.peak_rss / mb),
         ratio(loaded.peak_rss, single.peak_rss)),
        ("api CPU (% of one core)", shown(busy(single)), shown(busy(loaded)), ratio(busy(loaded), busy(single))),
        ("driver CPU (% of one core)", shown(busy(single, "driver_cpu")), shown(busy(loaded, "driver_cpu")),
         ratio(busy(loaded, "driver_cpu"), busy(single, "driver_cpu"))),
        ("submits retried", str(single.retries), str(loaded.retries), "–"),
        ("final events received", str(single.finals), str(loaded.finals), "–"),
        ("events lost (must be 0)", str(single.lost), str(loaded.lost), "–"),
        ("errors", str(sum(single.errors.values())), str(sum(loaded.errors.values())), "–"),
    ]
    return rows


def mean(samples: Sequence[int]) -> float | None:
    """The mean of some samples (None without any)."""
    return sum(samples) / len(samples) if samples else None


def busy(tally: Tally, cpu: str = "api_cpu") -> float | None:
    """A process's CPU time (the API's, or with "driver_cpu" this one's) over the run's wall time, in % of one core."""
    return 100 * getattr(tally, cpu) / tally.seconds if tally.seconds else None


def format_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """The rows as fixed-width text, with a header."""
    lines = [f"{'figure':<32}{'one client':>12}{'under load':>12}{'ratio':>9}"]
    lines += [f"{name:<32}{one:>12}{many:>12}{r:>9}" for name, one, many, r in rows]
    return "\n".join(lines)


# --- the stack ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    from tests.chat_server import free_port as pick

    return pick()


def wait_ready(proc: subprocess.Popen[bytes], probe: str, log: Path, timeout: float = 90.0) -> None:
    """Return once GET `probe` answers 200; fail quoting the log when the process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(probe, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not answer {probe} in {timeout:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def process(command: Sequence[str], env: dict[str, str], log: Path,
            probe: str | None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child until the block ends (SIGTERM, then SIGKILL after 20 s); enter once `probe` answers, if given."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        if probe is not None:
            wait_ready(proc, probe, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def chat_process(tmp: Path, comfy_url: str, ollama_url: str, conninfo: str) -> Iterator[str]:
    """The chat server in a child process (no worker of its own: the two `atelier worker`s run the jobs); its URL."""
    log = (tmp / "chat.log").open("w")
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-chat", str(tmp), comfy_url,
                              ollama_url, conninfo], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=log, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    try:
        assert child.stdout is not None
        url = next((line.strip() for line in child.stdout if line.startswith("http")), "")
        if not url:
            raise RuntimeError(f"the chat server did not start (exit {child.wait(30)}): "
                               f"{(tmp / 'chat.log').read_text()[-2000:]}")
        yield url
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()


@contextlib.contextmanager
def fakes_process(tmp: Path, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The fake ComfyUI and the fake Ollama (scripted with enough answers) in a child process; their URLs."""
    log = (tmp / "fakes.log").open("w")
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-fakes", str(tmp),
                              str(args.step_seconds), str(args.chunk_delay), str(2 * args.chat_turns + 10)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert child.stdout is not None
        urls = next((line.split() for line in child.stdout if line.startswith("http")), [])
        if len(urls) != 2:
            raise RuntimeError(f"the fakes did not start (exit {child.wait(30)}): "
                               f"{(tmp / 'fakes.log').read_text()[-2000:]}")
        yield urls[0], urls[1]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()


def serve_fakes(tmp: str, step_seconds: str, chunk_delay: str, answers: str) -> None:
    """Child mode: serve the fake ComfyUI and Ollama, print their URLs on one line, stop when stdin closes."""
    from atelier.tools.settings import load_settings
    from tests.conftest import INSTALLED_MODELS
    from tests.fakes.comfyui_server import FakeComfyUI
    from tests.fakes.ollama_server import FakeOllama

    with FakeComfyUI(step_seconds=float(step_seconds), models=INSTALLED_MODELS,
                     output_dir=Path(tmp) / "comfyui") as comfy, FakeOllama(chunk_delay=float(chunk_delay)) as ollama:
        model = load_settings(data_dir=Path(tmp) / "fakes", ollama_url=ollama.url).chat_model
        ollama.script(model, [ANSWER] * int(answers))
        print(comfy.url, ollama.url, flush=True)
        sys.stdin.read()


def serve_chat(tmp: str, comfy_url: str, ollama_url: str, conninfo: str) -> None:
    """Child mode: serve the chat without a worker, print its URL, stop when stdin closes."""
    from tests.chat_server import ServerThread, chat_settings

    with ServerThread(chat_settings(Path(tmp), comfy_url, ollama_url, conninfo), conninfo, worker=False) as url:
        print(url, flush=True)
        sys.stdin.read()


async def make_accounts(conninfo: str, data_dir: Path, users: int) -> tuple[list[str], str]:
    """Create `users` users and an admin, each with an API key; (the users' keys, the admin's key)."""
    from atelier.tools.ledger.service import LedgerService
    from atelier.tools.outputs.store import LocalOutputStore
    from atelier.tools.settings import load_settings

    settings = load_settings(data_dir=data_dir, auth_mode="accounts", comfyui_urls="http://127.0.0.1:9")
    async with LedgerService.open(settings, conninfo=conninfo, store=LocalOutputStore(data_dir / "unused")) as svc:
        keys = []
        for n in range(users):
            await svc.accounts.create(f"load-{n:03d}", role="user")
            keys.append((await svc.accounts.create_key(f"load-{n:03d}", "bench")).secret)
        await svc.accounts.create(ADMIN, role="admin")
        admin = (await svc.accounts.create_key(ADMIN, "bench scrapes")).secret
    return keys, admin


# --- one run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the stack listens and who may call it."""

    api: str
    chat: str
    tokens: list[str]
    admin_token: str
    conninfo: str
    api_pid: int


async def sample(target: Target, tally: Tally, stop: asyncio.Event) -> None:
    """Every 0.1 s: the database's connections (others than this one; those waiting on a lock) and the API process's
    RSS; keep the peaks. The API's CPU time over the run is noted at the end."""
    api = psutil.Process(target.api_pid)
    cpu = sum(api.cpu_times()[:2])
    server_port = int(conninfo_to_dict(target.conninfo).get("port") or 5432)
    async with await psycopg.AsyncConnection.connect(target.conninfo, autocommit=True) as conn:
        while not stop.is_set():
            ports = [c.laddr.port for c in api.net_connections("tcp") if c.raddr and c.raddr.port == server_port]
            cur = await conn.execute("SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock'), "
                                     "count(*) FILTER (WHERE client_port = ANY(%s)), "
                                     "count(*) FILTER (WHERE client_port = ANY(%s) AND state <> 'idle' "
                                     "AND query NOT LIKE 'LISTEN%%') "
                                     "FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()", (ports, ports))
            row = await cur.fetchone()
            if row is not None:
                tally.peak_connections = max(tally.peak_connections, int(row[0]))
                tally.peak_lock_waits = max(tally.peak_lock_waits, int(row[1]))
                tally.peak_api_connections = max(tally.peak_api_connections, int(row[2]))
                tally.api_busy_connections.append(int(row[3]))
            if row is not None and int(row[1]):
                cur = await conn.execute("SELECT wait_event || ': ' || "
                                         "left(regexp_replace(query, '\\s+', ' ', 'g'), 70) "
                                         "FROM pg_stat_activity "
                                         "WHERE datname = current_database() AND wait_event_type = 'Lock'")
                tally.lock_waiters.update(str(r[0]) for r in await cur.fetchall())
            tally.peak_rss = max(tally.peak_rss, api.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    tally.api_cpu = sum(api.cpu_times()[:2]) - cpu


async def loop_lag(tally: Tally, stop: asyncio.Event) -> None:
    """How late this process's event loop wakes from a 50 ms sleep (the driver's own share of every latency)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(0.05)
        tally.lag.append(max(0.0, loop.time() - asked - 0.05))


async def scrape(http: httpx.AsyncClient, target: Target, tally: Tally, interval: float, stop: asyncio.Event) -> None:
    """GET /metrics as Prometheus does (an admin's bearer token) every `interval` s until stopped."""
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    while not stop.is_set():
        started = time.perf_counter()
        try:
            answer = await http.get(f"{target.api}/metrics", headers=headers)
            if answer.status_code == 200:
                tally.scrape.append(time.perf_counter() - started)
            else:
                tally.errors[f"GET /metrics {answer.status_code}"] += 1
        except httpx.HTTPError as exc:
            tally.errors[f"GET /metrics {type(exc).__name__}"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def submitter(http: httpx.AsyncClient, target: Target, run: str, todo: asyncio.Queue[int],
                    follow: asyncio.Queue[tuple[str, str] | None], tally: Tally, steps: int, workflow: str) -> None:
    """Take request numbers until none are left; POST each as its user; hand each new job to the followers."""
    while True:
        try:
            index = todo.get_nowait()
        except asyncio.QueueEmpty:
            return
        token = user_of(index, target.tokens)
        body = {"params": {"prompt": f"{run} load {index}", "seed": index, "steps": steps}, "workflow": workflow,
                "idempotency_key": f"load-{run}-{index}"}  # unique: the database is fresh
        started = time.perf_counter()
        answer = None
        for attempt in range(3):  # the idempotency key makes sending it again safe
            try:
                answer = await http.post(f"{target.api}/jobs", json=body,
                                         headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.TransportError as exc:
                tally.retries += attempt < 2
                if attempt == 2:
                    tally.errors[f"POST /jobs {type(exc).__name__}"] += 1
        if answer is None:
            continue
        if answer.status_code not in (200, 201):
            tally.errors[f"POST /jobs {answer.status_code}"] += 1
            continue
        tally.submit.append(time.perf_counter() - started)
        await follow.put((answer.json()["id"], token))


async def follower(target: Target, follow: asyncio.Queue[tuple[str, str] | None], tally: Tally) -> None:
    """Follow jobs one after another on their event sockets until the sentinel; count finals, losses, refusals."""
    base = target.api.replace("http://", "ws://")
    while (item := await follow.get()) is not None:
        job, token = item
        started = time.perf_counter()
        admitted = final = False
        try:
            async with websockets.connect(f"{base}/jobs/{job}/events?previews=none&access_token={token}",
                                          open_timeout=60, max_size=2**22) as socket:
                tally.open_sockets += 1
                tally.peak_sockets = max(tally.peak_sockets, tally.open_sockets)
                try:
                    async for raw in socket:
                        message = json.loads(raw)
                        if not admitted:
                            admitted = True
                            tally.first_event.append(time.perf_counter() - started)
                        if is_final(message):
                            final = True
                            tally.finals += 1
                            if message["type"] != "done":
                                tally.errors[f"job {message['type']}"] += 1
                finally:
                    tally.open_sockets -= 1
                code = socket.close_code
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            tally.errors[f"event socket {type(exc).__name__}"] += 1
            if admitted and not final:
                tally.lost += 1
            continue
        if not final:
            if admitted and code in (1000, None):
                tally.lost += 1  # admitted, closed normally, no final event: the event system dropped it
            else:
                tally.errors[f"event socket closed {code}"] += 1
                tally.lost += admitted


def chat_session(url: str, turns: int, tally: Tally, timeout: float, lock: threading.Lock) -> None:
    """One person chatting through gradio_client: `turns` questions, each a new conversation (time to first token)."""
    from gradio_client import Client

    from bench.chat_latency import ClientWire

    if turns == 0:
        return
    with tempfile.TemporaryDirectory() as downloads:
        client = Client(url, verbose=False, download_files=downloads)
        try:
            wire = ClientWire.discover(client)
            for _ in range(turns):
                try:
                    seconds = wire.call(QUESTION, "", "token", timeout)
                except Exception as exc:  # any failure of one turn is counted, the session goes on
                    with lock:
                        tally.errors[f"chat {type(exc).__name__}"] += 1
                    continue
                with lock:
                    tally.first_token.append(seconds)
        finally:
            client.close()


async def one_run(target: Target, clients: Clients, args: argparse.Namespace, run: str) -> Tally:
    """Drive the fixed amount of work with `clients`; the tally once every job's socket and every chat turn ended."""
    tally = Tally()
    stop = asyncio.Event()
    todo: asyncio.Queue[int] = asyncio.Queue()
    for index in range(args.jobs):
        todo.put_nowait(index)
    follow: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=clients.submitters + 2, max_keepalive_connections=clients.submitters + 2,
                          keepalive_expiry=2.0)  # below uvicorn's 5 s: never reuse a connection it is closing
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        background = [asyncio.create_task(sample(target, tally, stop)),
                      asyncio.create_task(scrape(http, target, tally, args.scrape_interval, stop)),
                      asyncio.create_task(loop_lag(tally, stop))]
        started, cpu = time.perf_counter(), time.process_time()
        loop = asyncio.get_running_loop()
        people = ThreadPoolExecutor(clients.chats, thread_name_prefix="chat")  # one thread per chatting person
        chats = [loop.run_in_executor(people, chat_session, target.chat, turns, tally, args.timeout, lock)
                 for turns in spread(args.chat_turns, clients.chats)]
        followers = [asyncio.create_task(follower(target, follow, tally)) for _ in range(clients.sockets)]
        chatting = asyncio.gather(*chats)
        await asyncio.gather(*(submitter(http, target, run, todo, follow, tally, args.steps, args.workflow)
                               for _ in range(clients.submitters)))
        for _ in followers:
            await follow.put(None)
        await asyncio.gather(*followers)
        await chatting
        people.shutdown()
        tally.seconds = time.perf_counter() - started
        tally.driver_cpu = time.process_time() - cpu  # this process: the driver's tasks and the chat threads
        stop.set()
        await asyncio.gather(*background)
    return tally


async def tokens_for(api: str, keys: Sequence[str]) -> list[str]:
    """An access token per API key (POST /auth/token), as a client would hold one."""
    async with httpx.AsyncClient(timeout=60) as http:
        tokens = []
        for key in keys:
            answer = await http.post(f"{api}/auth/token", json={"api_key": key})
            answer.raise_for_status()
            tokens.append(str(answer.json()["access_token"]))
    return tokens


def measure(args: argparse.Namespace, tmp: Path, conninfo: str) -> tuple[Tally, Tally, int]:
    """Start the stack, run one client of each kind, then the load; (one client, under load, users)."""
    users = users_needed(args.sockets, args.users)
    keys, admin_key = asyncio.run(make_accounts(conninfo, tmp / "setup", users))
    with fakes_process(tmp, args) as (comfy_url, ollama_url):
        env = os.environ | {"DATABASE_URL": conninfo, "ATELIER_AUTH": "accounts", "COMFYUI_URLS": comfy_url,
                            "OLLAMA_URL": ollama_url, "ATELIER_DATA_DIR": str(tmp / "data"),
                            "ATELIER_OUTPUT_DIR": str(tmp / "outputs"), "TQDM_DISABLE": "1"}
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        cli = [sys.executable, "-m", "atelier.cli.main"]
        # All start at once (their imports overlap); the API is waited for once the chat is up.
        with process([*cli, "api", "--port", str(port)], env, tmp / "api.log", None) as api_proc, \
                process([*cli, "worker"], env, tmp / "worker-1.log", None), \
                process([*cli, "worker"], env, tmp / "worker-2.log", None), \
                chat_process(tmp, comfy_url, ollama_url, conninfo) as chat:
            wait_ready(api_proc, f"{api}/health", tmp / "api.log")
            tokens = asyncio.run(tokens_for(api, keys))
            admin = asyncio.run(tokens_for(api, [admin_key]))[0]
            target = Target(api, chat, tokens, admin, conninfo, api_proc.pid)
            print(f"stack up: api {api} (pid {api_proc.pid}), 2 workers, chat {chat}; {users} users", flush=True)
            single = asyncio.run(one_run(target, Clients.one_each(), args, "single"))
            print(f"one client of each kind: {single.seconds:.1f} s", flush=True)
            loaded = asyncio.run(one_run(target, Clients(args.submitters, args.sockets, args.chats), args, "loaded"))
            print(f"under load: {loaded.seconds:.1f} s", flush=True)
            if single.errors or loaded.errors:
                print(f"--- the end of the api's log ---\n{(tmp / 'api.log').read_text()[-3000:]}", file=sys.stderr)
    return single, loaded, users


def main() -> None:
    """Parse options, run both sizes on a fresh database and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=600, help="jobs submitted in each run")
    parser.add_argument("--submitters", type=int, default=50, help="concurrent submitters under load")
    parser.add_argument("--sockets", type=int, default=300, help="event sockets open at once under load (at most)")
    parser.add_argument("--chats", type=int, default=20, help="concurrent chat sessions under load")
    parser.add_argument("--chat-turns", type=int, default=60, help="chat questions in each run")
    parser.add_argument("--users", type=int, default=20, help="accounts the work is spread over (at least)")
    parser.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between /metrics scrapes")
    parser.add_argument("--workflow", default="txt2img-turbo")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per job")
    parser.add_argument("--step-seconds", type=float, default=0.005, help="fake ComfyUI seconds per sampling step")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="fake Ollama seconds between streamed words")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one chat turn may take")
    parser.add_argument("--serve-chat", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve-fakes", nargs=4, help=argparse.SUPPRESS)
    args = parse_args(parser, SMOKE)
    if args.serve_chat:
        serve_chat(*args.serve_chat)
        return
    if args.serve_fakes:
        serve_fakes(*args.serve_fakes)
        return
    if min(args.jobs, args.submitters, args.sockets, args.chats, args.users) < 1 or args.chat_turns < 0:
        parser.error("--jobs, --submitters, --sockets, --chats and --users must be at least 1")
    from tests.pg import MACHINE_ADMIN_URL, fresh_database

    print(f"jobs: {args.jobs} per run; under load: {args.submitters} submitters, {args.sockets} event sockets, "
          f"{args.chats} chat sessions ({args.chat_turns} turns), /metrics every {args.scrape_interval:g} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="atelier-load-") as folder, \
            fresh_database(MACHINE_ADMIN_URL, "atelier_load") as conninfo:
        single, loaded, users = measure(args, Path(folder), conninfo)
    print(format_table(table_rows(single, loaded)))
    for name, tally in (("one client", single), ("under load", loaded)):
        if tally.lock_waiters:
            print(f"waiting on a lock ({name}, samples): " +
                  "; ".join(f"{query!r} ×{n}" for query, n in tally.lock_waiters.most_common(3)))
        if tally.errors:
            print(f"errors ({name}): " + ", ".join(f"{kind} ×{n}" for kind, n in tally.errors.most_common()))
    print(f"accounts: {users} users (ATELIER_MAX_EVENT_SOCKETS_PER_USER left at its default {SOCKET_CAP})")
    if single.lost or loaded.lost:
        raise SystemExit(f"events lost: {single.lost} with one client, {loaded.lost} under load (must be 0)")


if __name__ == "__main__":
    main()
