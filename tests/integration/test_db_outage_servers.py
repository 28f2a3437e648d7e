"""Servers while PostgreSQL is away: `atelier api` answers 503 with Retry-After (never a 500), MCP over HTTP answers a
readable isError result, and once the database is back the same processes serve normally, without a restart.

The database is a private PostgreSQL 15 cluster (the machine's binaries, a temporary folder, a free loopback port)
that the test stops and starts; the machine's own server on :5432 is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from atelier.api.outage import RETRY_AFTER_SECONDS
from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.pg import fresh_database
from tests.serving import serving

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ATELIER = Path(sys.executable).with_name("atelier")
# How long the database may take to be usable again once started (the pool re-connects with a backoff).
RECOVERY_SECONDS = 30.0


class PrivatePostgres:
    """A PostgreSQL 15 cluster of this test's own, which it may stop and start (as `postgres` when run as root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="atelier-outage-pg-"))
        self.port = free_port()
        self.data = self.folder / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    @property
    def admin_url(self) -> str:
        """The cluster's admin conninfo."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        """Run one of PostgreSQL's programs on the cluster."""
        command = [str(PG_BIN / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-t", "30", "start", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        """Stop the server the way a restart does (fast mode: sessions are terminated)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @contextmanager
    def away(self) -> Iterator[None]:
        """The server stopped for the block, started again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        subprocess.run(["runuser", "-u", "postgres", "--"] * self.as_root
                       + [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    """One private cluster for this module's tests."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip("PostgreSQL 15's programs are not installed (/usr/lib/postgresql/15/bin)")
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def private_db(private_pg: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private cluster."""
    with fresh_database(private_pg.admin_url) as url:
        yield url


def _env(tmp_path: Path, comfy: FakeComfyUI, ollama: FakeOllama, db: str) -> dict[str, str]:
    """A server's environment: the fakes, the private database, its own data folder."""
    return {**os.environ, "COMFYUI_URLS": comfy.url, "OLLAMA_URL": ollama.url, "DATABASE_URL": db,
            "ATELIER_DATA_DIR": str(tmp_path / "data")}


def _assert_away(answer: httpx.Response) -> None:
    """503 with Retry-After and the API's error body saying to retry."""
    assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
    assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    detail = answer.json()["detail"]
    assert "database" in detail and "retry" in detail, detail
    assert "127.0.0.1" not in detail and "psycopg" not in detail  # the driver's words stay in the server's log


def _until_back(ask: Any) -> Any:
    """Ask until the answer is not a 503 (the pool re-connecting); every answer meanwhile is a 503, never a 500."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        answer = ask()
        if answer.status_code != 503:
            return answer
        _assert_away(answer)
        assert time.monotonic() < deadline, f"still 503 {RECOVERY_SECONDS:g} s after the database came back"
        time.sleep(0.5)


def test_the_job_api_answers_503_with_retry_after_while_the_database_is_away(
    private_pg: PrivatePostgres, private_db: str, tmp_path: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    job = {"params": {"prompt": "a lighthouse", "seed": 3}}
    with serving([str(ATELIER), "api", "--port", str(port)], f"{base}/health", tmp_path / "api.log",
                 env=_env(tmp_path, fake_comfy, fake_ollama, private_db), ready=200, timeout=60), \
            httpx.Client(base_url=base, timeout=30) as http:
        made = http.post("/jobs", json=job)
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        with private_pg.away():
            _assert_away(http.get("/health"))
            _assert_away(http.get(f"/jobs/{job_id}"))
            _assert_away(http.post("/jobs", json=job | {"idempotency_key": "during-the-outage"}))
            assert http.get("/workflows").status_code == 200  # what needs no database still answers
        assert _until_back(lambda: http.get("/health")).status_code == 200
        assert http.get(f"/jobs/{job_id}").json()["id"] == job_id
        again = http.post("/jobs", json=job | {"idempotency_key": "after-the-outage"})
        assert again.status_code == 201, again.text
        spec = http.get("/openapi.json").json()
        for path, method in (("/jobs", "post"), ("/jobs/{job_id}", "get"), ("/health", "get")):
            documented = spec["paths"][path][method]["responses"]["503"]
            assert "Retry-After" in documented["headers"], (path, method)
    assert "Traceback" not in (tmp_path / "api.log").read_text()


@asynccontextmanager
async def _mcp_session(url: str) -> AsyncIterator[Any]:
    """An initialised MCP client session over streamable HTTP (the official SDK)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    """The text parts of a tool result."""
    return " ".join(getattr(part, "text", "") for part in result.content)


@pytest.mark.asyncio
async def test_mcp_tool_calls_say_the_database_is_away_and_work_again_after(
    private_pg: PrivatePostgres, private_db: str, tmp_path: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    arguments = {"prompt": "a paper boat", "seed": 5}
    # --no-worker: how a worker rides out the outage is test_chaos_database.py's subject; here, the server's answers.
    with serving([str(ATELIER), "mcp", "--http", "--no-worker", "--port", str(port)], url, tmp_path / "mcp.log",
                 env=_env(tmp_path, fake_comfy, fake_ollama, private_db), timeout=60):
        async with _mcp_session(url) as session:
            first = await session.call_tool("submit_job", arguments)
            assert not first.isError, _text(first)
            with private_pg.away():
                during = await session.call_tool("submit_job", arguments | {"seed": 6})
                assert during.isError
                assert "database" in _text(during) and "retry" in _text(during), _text(during)
            deadline = time.monotonic() + RECOVERY_SECONDS
            while (after := await session.call_tool("submit_job", arguments | {"seed": 7})).isError:
                assert "database" in _text(after), _text(after)  # only "away" while the pool re-connects
                assert time.monotonic() < deadline, f"still failing {RECOVERY_SECONDS:g} s after the restart"
            assert "job" in _text(after)
    log = (tmp_path / "mcp.log").read_text()
    assert "/atelier/" not in log and "Error executing tool" not in log, log[-3000:]  # no trace through Atelier
