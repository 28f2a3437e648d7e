"""Attacks on the job API's database connections, through a real `atelier api` process and a real worker process.

- 300 event sockets on one job while 20 clients submit: the API's PostgreSQL connections (pg_stat_activity) stay
  within its pool plus the one LISTEN connection, every socket gets every event through `done`, and submits go on.
- A user over ATELIER_MAX_EVENT_SOCKETS_PER_USER is refused (close code 4429 and a reason); a closed socket frees
  its place; the cap is per user.
- `/metrics` with accounts (the API's and a worker's `--metrics-port`): 401 without credentials, 403 for a user,
  200 for an admin; local mode unchanged.
- Scraping `/metrics` (the API's and a worker's `--metrics-port`) opens no database connection.
- ComfyUI URLs with credentials, paths and queries show up in metric labels as scheme://host:port only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.frames import Close

from atelier.api.events import TOO_MANY_SOCKETS_CLOSE
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import load_settings
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.pg import MACHINE_ADMIN_URL, fresh_database
from tests.serving import serving

ROOT = Path(__file__).resolve().parents[2]
SOCKETS = 300
SUBMITTERS = 20
# The API's pool (JobLedger.open's max_size, which LedgerService.open keeps) and its one LISTEN connection.
API_POOL = 8
SLACK = 2
# The worker process's pool, its LISTEN connection (atelier_jobs/atelier_cancel) and its heartbeat; the test's two.
WORKER, OWN = API_POOL + 2, 2
# libpq names every connection of the API process so (PGAPPNAME), which pg_stat_activity shows.
API_APP_NAME = "atelier-api-under-attack"
SECRET = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Stack:
    """The running processes and what the attacks need to reach them."""

    api: str
    worker_metrics: str
    database: str
    fake: FakeComfyUI
    keys: dict[str, str]

    def ws(self, job: str, user: str) -> tuple[str, dict[str, str]]:
        """The events URL of a job (previews left out) and `user`'s credentials."""
        url = f"ws://{self.api.removeprefix('http://')}/jobs/{job}/events?previews=none"
        return url, {"X-API-Key": self.keys[user]}


async def _users(url: str, data: Path) -> dict[str, str]:
    """ana and bo (users), root (admin), each with a key; the schema is migrated on the way."""
    settings = load_settings(data_dir=data, comfyui_urls="http://127.0.0.1:9")
    async with LedgerService.open(settings, conninfo=url, store=LocalOutputStore(data / "out")) as svc:
        directory = UserDirectory(svc.ledger.pool)
        keys = {}
        for name in ("ana", "bo", "root"):
            await directory.create(name, role="admin" if name == "root" else "user")
            keys[name] = (await directory.create_key(name)).secret
    return keys


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fresh database, the fake ComfyUI, `atelier api` (accounts, 300 sockets a user) and `atelier worker`."""
    tmp = tmp_path_factory.mktemp("connections")
    with (fresh_database(MACHINE_ADMIN_URL) as url,
          FakeComfyUI(step_seconds=0.05, models=INSTALLED_MODELS, output_dir=tmp / "comfyui") as fake):
        keys = asyncio.run(_users(url, tmp / "data"))
        comfy = f"http://comfy-user:{SECRET}@127.0.0.1:{fake.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "ATELIER_DATA_DIR": str(tmp / "data"),
               "ATELIER_AUTH": "accounts", "ATELIER_LEASE_SECONDS": "3", "COMFYUI_URLS": comfy}
        api_port, metrics_port = _free_port(), _free_port()
        api_env = {**env, "PGAPPNAME": API_APP_NAME, "ATELIER_MAX_EVENT_SOCKETS_PER_USER": str(SOCKETS),
                   # a second target whose URL carries a token in its path and query (nothing listens there)
                   "COMFYUI_URLS": f"{comfy},http://u:tok-in-userinfo@127.0.0.1:9/secret-path?token=tok-in-query"}
        api = f"http://127.0.0.1:{api_port}"
        worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        with (serving([sys.executable, "-m", "atelier.cli.main", "api", "--port", str(api_port)], f"{api}/health",
                      tmp / "api.log", env=api_env, cwd=ROOT, ready=200),
              serving([sys.executable, "-m", "atelier.cli.main", "worker", "--metrics-port", str(metrics_port)],
                      worker_metrics, tmp / "worker.log", env=env, cwd=ROOT, ready=401)):  # accounts: no anonymous
            yield Stack(api, worker_metrics, url, fake, keys)


@pytest_asyncio.fixture
async def db(stack: Stack) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The test's own connection to the stack's database (for pg_stat_activity and the stored events)."""
    async with await psycopg.AsyncConnection.connect(stack.database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def paused(stack: Stack) -> Iterator[FakeComfyUI]:
    """ComfyUI holds its queue for the test (so jobs stay unfinished), and runs again afterwards."""
    stack.fake.pause()
    yield stack.fake
    stack.fake.resume()


async def _submit(http: httpx.AsyncClient, stack: Stack, user: str, prompt: str, steps: int = 8) -> str:
    made = await http.post(f"{stack.api}/jobs", headers={"X-API-Key": stack.keys[user]},
                           json={"params": {"prompt": prompt, "seed": 7, "steps": steps}, "use_cache": False})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def _api_backends(db: psycopg.AsyncConnection[Any], stack: Stack) -> tuple[int, int]:
    """(backends of the API process, backends of the whole database) in pg_stat_activity."""
    cur = await db.execute(
        "SELECT count(*) FILTER (WHERE application_name = %s), count(*) FROM pg_stat_activity "
        "WHERE datname = current_database()", (API_APP_NAME,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _sessions(db: psycopg.AsyncConnection[Any]) -> int:
    """Client sessions ever opened on this database (pg_stat_database counts each at its start)."""
    cur = await db.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


class Follower:
    """One event socket: opened, its first message (the status snapshot) read; then read to the end."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> Follower:
        """Connect and wait for the snapshot (so the server follows the job from here on)."""
        follower = cls(await websockets.connect(url, additional_headers=headers, open_timeout=30))
        follower.messages.append(json.loads(await follower.ws.recv()))
        return follower

    async def rest(self) -> list[dict[str, Any]]:
        """Every message until the server closes the socket."""
        async for raw in self.ws:
            self.messages.append(json.loads(raw))
        return self.messages


async def _open_many(url: str, headers: dict[str, str], count: int) -> list[Follower]:
    """`count` followers, opened 50 at a time."""
    gate = asyncio.Semaphore(50)

    async def one() -> Follower:
        async with gate:
            return await Follower.open(url, headers)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _refusal(url: str, headers: dict[str, str]) -> Close:
    """The close frame of a socket the server refuses at once."""
    async with websockets.connect(url, additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd


# --- 300 sockets, 20 submitters -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_300_sockets_on_one_job_share_one_listen_connection_and_get_every_event(
    stack: Stack, db: psycopg.AsyncConnection[Any], paused: FakeComfyUI
) -> None:
    peak = [0, 0]  # backends of the API process, of the whole database: sampled from before the first socket
    sampling = asyncio.Event()

    async def sample() -> None:
        async with await psycopg.AsyncConnection.connect(stack.database, autocommit=True) as own:
            while not sampling.is_set():
                api, total = await _api_backends(own, stack)
                peak[:] = [max(peak[0], api), max(peak[1], total)]
                await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    async with httpx.AsyncClient(timeout=30) as http:
        job = await _submit(http, stack, "ana", "a lighthouse in fog", steps=10)
        url, root = stack.ws(job, "root")
        followers = await _open_many(url, root, SOCKETS)
        api_open, _ = await _api_backends(db, stack)
        assert api_open <= API_POOL + SLACK, f"{SOCKETS} sockets hold {api_open} connections of the API"
        refused = await _refusal(url, root)
        assert refused.code == TOO_MANY_SOCKETS_CLOSE and "ATELIER_MAX_EVENT_SOCKETS_PER_USER" in refused.reason

        async def submitter(n: int) -> str:
            async with httpx.AsyncClient(timeout=30) as own:
                return await _submit(own, stack, "bo", f"a kite number {n}", steps=2)

        paused.resume()
        submitted, *received = await asyncio.wait_for(
            asyncio.gather(asyncio.gather(*(submitter(n) for n in range(SUBMITTERS))),
                           *(f.rest() for f in followers)), 60)
        sampling.set()
        await sampler
        for queued in submitted:  # not needed by the other attacks: out of the worker's way
            await http.delete(f"{stack.api}/jobs/{queued}", headers={"X-API-Key": stack.keys["bo"]})
    assert len(set(submitted)) == SUBMITTERS
    assert peak[0] <= API_POOL + SLACK, f"the API held {peak[0]} connections with {SOCKETS} sockets open"
    assert peak[1] <= API_POOL + SLACK + WORKER + OWN, f"the database had {peak[1]} backends"
    cur = await db.execute("SELECT seq FROM job_events WHERE job_id = %s AND kind <> 'preview' ORDER BY seq",
                           (uuid.UUID(job),))
    stored = [int(row[0]) for row in await cur.fetchall()]
    assert {"submitted", "started", "progress"} <= {
        str(m["type"]) for m in received[0]}, "the job ran while the sockets followed it"
    for messages in received:
        assert messages[0]["type"] == "status" and messages[-1]["type"] == "done"
        assert [m["seq"] for m in messages if m["seq"] is not None] == stored


# --- the per-user cap -----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_user_over_the_socket_cap_is_refused_and_a_closed_socket_frees_its_place(
    stack: Stack, paused: FakeComfyUI
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        mine = await _submit(http, stack, "ana", "a held job")
        theirs = await _submit(http, stack, "bo", "bo's held job")
    url, ana = stack.ws(mine, "ana")
    followers = await _open_many(url, ana, SOCKETS)
    try:
        refused = await _refusal(url, ana)
        assert refused.code == TOO_MANY_SOCKETS_CLOSE
        assert refused.reason.startswith(f"ana already has {SOCKETS} open event sockets")
        # Another user's sockets are counted apart.
        bo = await Follower.open(*stack.ws(theirs, "bo"))
        assert bo.messages[0]["type"] == "status"
        await bo.ws.close()
        # The client hangs up on a job that stays queued: the server notices at once, not at the job's next event.
        await followers.pop().ws.close()
        again = await _admitted_soon(url, ana)
        followers.append(again)
    finally:
        await asyncio.gather(*(f.ws.close() for f in followers))
        async with httpx.AsyncClient(timeout=30) as http:
            for job, user in ((mine, "ana"), (theirs, "bo")):
                await http.delete(f"{stack.api}/jobs/{job}", headers={"X-API-Key": stack.keys[user]})


async def _admitted_soon(url: str, headers: dict[str, str], seconds: float = 10.0) -> Follower:
    """A socket admitted within `seconds` (the server frees the place as it handles the hang-up)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await Follower.open(url, headers)
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != TOO_MANY_SOCKETS_CLOSE:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the place of a closed socket was not freed within {seconds:g} s") from None
            await asyncio.sleep(0.05)


# --- /metrics -------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["api", "worker"])
async def test_metrics_with_accounts_need_an_admin(stack: Stack, where: str) -> None:
    url = f"{stack.api}/metrics" if where == "api" else stack.worker_metrics
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(url)
        user = await http.get(url, headers={"Authorization": f"Bearer {stack.keys['ana']}"})
        forged = await http.get(url, headers={"Authorization": "Bearer atl_forged00_" + "x" * 40})
        admin = await http.get(url, headers={"Authorization": f"Bearer {stack.keys['root']}"})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert forged.status_code == 401
    assert user.status_code == 403 and "ana is not an admin" in user.text
    for refused in (anonymous, user, forged):
        assert "atelier_owner" not in refused.text
    assert admin.status_code == 200 and "atelier_ledger_up 1.0" in admin.text
    assert 'atelier_owner_jobs{owner="ana"' in admin.text


@pytest.mark.asyncio
async def test_metrics_in_local_mode_need_no_credentials(local_api: httpx.AsyncClient) -> None:
    scraped = await local_api.get("/metrics")
    assert scraped.status_code == 200 and "atelier_ledger_up 1.0" in scraped.text


@pytest.mark.asyncio
async def test_scraping_opens_no_connection(stack: Stack, db: psycopg.AsyncConnection[Any]) -> None:
    admin = {"Authorization": f"Bearer {stack.keys['root']}"}
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{stack.api}/metrics", headers=admin)).status_code == 200  # warm: pool and token
        before = await _sessions(db)
        for _ in range(15):
            api = await http.get(f"{stack.api}/metrics", headers=admin)
            worker = await http.get(stack.worker_metrics, headers=admin)
            assert "atelier_ledger_up 1.0" in api.text and "atelier_ledger_up 1.0" in worker.text
        after = await _sessions(db)
    assert after == before, f"30 scrapes opened {after - before} PostgreSQL sessions"


def _label_values(text: str, label: str) -> set[str]:
    """Every value of one label in an exposition."""
    return {s.labels[label] for family in text_string_to_metric_families(text) for s in family.samples
            if label in s.labels}


@pytest.mark.asyncio
async def test_metric_labels_show_comfyui_as_scheme_host_port_only(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        job = await _submit(http, stack, "ana", "a labelled job", steps=2)
        events, ana = stack.ws(job, "ana")
        follower = await Follower.open(events, ana)
        assert (await follower.rest())[-1]["type"] == "done"  # the worker ran it: its server series exist
        api = (await http.get(f"{stack.api}/metrics", headers={"X-API-Key": stack.keys["root"]})).text
        worker = (await http.get(stack.worker_metrics, headers={"X-API-Key": stack.keys["root"]})).text
    live = f"http://127.0.0.1:{stack.fake.port}"
    assert _label_values(api, "server") == {live, "http://127.0.0.1:9"}
    assert _label_values(worker, "server") == {live}
    for text in (api, worker):
        for secret in (SECRET, "comfy-user", "tok-in-userinfo", "secret-path", "tok-in-query"):
            assert secret not in text
