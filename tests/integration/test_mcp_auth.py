"""`atelier mcp --http` in accounts mode: every request names its user, refusals say why, users see only their work."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from atelier.tools.accounts.auth import jwt_secret
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import issue_token
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import load_settings
from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_mcp_server import ATELIER, _env
from tests.serving import serving

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

# What the MCP client sends first; enough for the raw HTTP checks of a refusal.
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "raw", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class People:
    """ana and bo (users) and root (admin) on the server's database, with their keys and the JWT secret."""

    directory: UserDirectory
    keys: dict[str, str]
    secret: str
    ledger: LedgerService


@pytest_asyncio.fixture
async def people(embedded_pg_url: str, tmp_path: Path) -> AsyncIterator[People]:
    """The accounts, made before the server starts (this also migrates the fresh database)."""
    settings = load_settings(data_dir=tmp_path / "admin", comfyui_urls="http://127.0.0.1:9", auth_mode="accounts")
    async with LedgerService.open(settings, conninfo=embedded_pg_url,
                                  store=LocalOutputStore(tmp_path / "admin" / "out")) as ledger:
        directory = UserDirectory(ledger.ledger.pool)
        keys = {}
        for name in ("ana", "bo", "root"):
            await directory.create(name, role="admin" if name == "root" else "user")
            keys[name] = (await directory.create_key(name, "mcp")).secret
        yield People(directory, keys, await jwt_secret(settings, directory), ledger)


@contextmanager
def _serving(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """`atelier mcp --http ARGS` in a child process; yields its MCP URL once it accepts connections."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with serving([str(ATELIER), "mcp", "--http", "--port", str(port), *args], url, tmp_path / f"mcp-{port}.log",
                 env=env, timeout=60):
        yield url


@pytest.fixture
def accounts_server(people: People, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str,
                    tmp_path: Path) -> Iterator[str]:
    """The server in accounts mode, with a worker on the fake ComfyUI; `--owner` given, to show it is ignored."""
    env = _env(tmp_path, fake_comfy, fake_ollama, embedded_pg_url) | {"ATELIER_AUTH": "accounts"}
    with _serving(tmp_path, env, "--owner", "bo") as url:
        yield url


@asynccontextmanager
async def _session(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """An initialised MCP client session (the official SDK) sending `headers` with every request."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _http_error(exc: BaseException) -> httpx.HTTPStatusError | None:
    """The HTTPStatusError inside (possibly nested) exception groups."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _http_error(inner)
        if found is not None:
            return found
    return _http_error(exc.__cause__) if exc.__cause__ is not None else None


async def _refused(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The status and reason of a refusal, checked both with the MCP client and as raw HTTP."""
    with pytest.raises(BaseException) as caught:  # the SDK wraps it in exception groups
        async with asyncio.timeout(20), _session(url, headers):
            pass
    error = _http_error(caught.value)
    assert error is not None, repr(caught.value)
    async with httpx.AsyncClient(timeout=10) as http:
        raw = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS | headers)
    assert raw.status_code == error.response.status_code
    assert raw.headers.get("mcp-session-id") is None  # no session was opened for it
    if raw.status_code == 401:
        assert raw.headers["www-authenticate"] == "Bearer"
    return raw.status_code, raw.json()["detail"]


def _key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _result(result: Any) -> Any:
    """A successful tool call's JSON."""
    assert not result.isError, result.content
    return json.loads(result.content[-1].text)


def _error(result: Any) -> str:
    """A failed tool call's message."""
    assert result.isError, result.content
    return str(result.content[0].text)


async def _owner(people: People, job_id: str) -> str:
    """Whose the job is, straight from the ledger."""
    return (await people.ledger.get(job_id)).owner


async def test_refused_credentials_are_401_or_403_naming_the_reason(accounts_server: str, people: People) -> None:
    url = accounts_server
    status, reason = await _refused(url, {})
    assert status == 401 and "needs credentials" in reason
    status, reason = await _refused(url, {"Authorization": "Basic YW5hOnB3"})
    assert status == 401 and "must be 'Bearer <token>'" in reason
    status, reason = await _refused(url, _key("atl_00000000_" + "x" * 43))
    assert status == 401 and "unknown or mistyped" in reason

    ana = (await people.directory.keys("ana"))[0]
    as_ana = Principal(user_id="ana", role="user", via="token", key_id=ana.id)
    token = issue_token(as_ana, people.secret)
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).decode().rstrip("=")
    status, reason = await _refused(url, _bearer(f"{head}.{forged}.{signature}"))
    assert status == 401 and "signature is not valid" in reason
    status, reason = await _refused(url, _bearer(issue_token(as_ana, "another server's secret, 32+ bytes long")))
    assert status == 401 and "signature is not valid" in reason
    expired = issue_token(as_ana, people.secret, ttl_seconds=60, now=time.time() - 600)
    status, reason = await _refused(url, _bearer(expired))
    assert status == 401 and "has expired" in reason

    # Every accepted form of credentials acts as its user, whatever --owner says (the server was given bo).
    for headers in (_key(people.keys["ana"]), _bearer(people.keys["ana"]), _bearer(token)):
        async with _session(url, headers) as session:
            job = _result(await session.call_tool("submit_job", {"prompt": "a heron", "seed": 1}))
            assert await _owner(people, job["job_id"]) == "ana"

    # Revoking the key refuses it and its tokens at once, even inside an open session.
    with pytest.raises(BaseException) as caught:  # the SDK wraps it in exception groups
        async with asyncio.timeout(20), _session(url, _key(people.keys["ana"])) as session:
            _result(await session.call_tool("list_workflows", {}))
            await people.directory.revoke(ana.prefix)
            await session.call_tool("list_workflows", {})
    error = _http_error(caught.value)
    assert error is not None and error.response.status_code == 401, repr(caught.value)
    for headers in (_key(people.keys["ana"]), _bearer(token)):
        status, reason = await _refused(url, headers)
        assert status == 401 and "was revoked" in reason

    await people.directory.update("bo", disabled=True)
    bo = (await people.directory.keys("bo"))[0]
    bo_token = issue_token(Principal(user_id="bo", role="user", via="token", key_id=bo.id), people.secret)
    for headers in (_key(people.keys["bo"]), _bearer(bo_token)):
        status, reason = await _refused(url, headers)
        assert status == 403 and "'bo' is disabled" in reason


async def test_each_user_sees_only_their_own_jobs_images_and_memory(accounts_server: str, people: People) -> None:
    url = accounts_server
    async with _session(url, _key(people.keys["ana"])) as ana, _session(url, _key(people.keys["bo"])) as bo:
        made = await ana.call_tool("generate_image", {"prompt": "a paper crane", "seed": 5, "steps": 4})
        assert not made.isError, made.content
        crane = json.loads(made.content[-1].text)
        assert crane["status"] == "succeeded" and await _owner(people, crane["job_id"]) == "ana"
        queued = _result(await ana.call_tool("submit_job", {"prompt": "a paper boat", "seed": 6,
                                                            "idempotency_key": "ana-boat"}))
        assert await _owner(people, queued["job_id"]) == "ana"

        # job_status: ana's own work answers; for bo it does not exist, in the very words of an unknown id.
        assert _result(await ana.call_tool("job_status", {"job_id": queued["job_id"]}))["prompt"] == "a paper boat"
        for job_id in (queued["job_id"], crane["job_id"], crane["job_id"][:8]):
            refused = _error(await bo.call_tool("job_status", {"job_id": job_id}))
            assert f"no job '{job_id}' of yours" in refused and "paper" not in refused
        unknown = "00000000-0000-4000-8000-000000000000"
        assert _error(await bo.call_tool("job_status", {"job_id": unknown})) == refused.replace(
            crane["job_id"][:8], unknown)
        # Nor can bo reach ana's job through her idempotency key; ana's repeat is her own job.
        taken = _error(await bo.call_tool("submit_job", {"prompt": "x", "idempotency_key": "ana-boat"}))
        assert "'ana-boat' is already used by another owner's job" in taken and queued["job_id"] not in taken
        again = _result(await ana.call_tool("submit_job", {"prompt": "a paper boat", "idempotency_key": "ana-boat"}))
        assert again["job_id"] == queued["job_id"]

        # Resources: recent images and a job's image are the caller's only.
        recent = json.loads((await ana.read_resource("atelier://images/recent")).contents[0].text)
        assert crane["job_id"] in [job["job_id"] for job in recent]
        assert json.loads((await bo.read_resource("atelier://images/recent")).contents[0].text) == []
        image = (await ana.read_resource(f"atelier://jobs/{crane['job_id']}/image")).contents[0]
        assert base64.b64decode(image.blob).startswith(b"\x89PNG")
        from mcp.shared.exceptions import McpError

        for job_id in (crane["job_id"], unknown):
            with pytest.raises(McpError, match=f"no finished image for job '{job_id}' of yours"):
                await bo.read_resource(f"atelier://jobs/{job_id}/image")

        # Memory: once the indexer has ana's image, her search finds it and bo's never does.
        hits: list[dict[str, Any]] = []
        for _ in range(150):
            hits = _result(await ana.call_tool("search_images", {"query": "a paper crane"}))
            if crane["job_id"] in [hit["image"]["job_id"] for hit in hits]:
                break
            await asyncio.sleep(0.2)
        assert crane["job_id"] in [hit["image"]["job_id"] for hit in hits]
        assert {hit["image"]["owner"] for hit in hits} == {"ana"}
        assert _result(await bo.call_tool("search_images", {"query": "a paper crane"})) == []

    # An admin acts as themselves too (MCP tools have no "act for another user" argument).
    async with _session(url, _bearer(people.keys["root"])) as root:
        own = _result(await root.call_tool("submit_job", {"prompt": "a kite", "seed": 2}))
        assert await _owner(people, own["job_id"]) == "root"


async def test_local_mode_needs_no_credentials_and_acts_as_the_owner(fake_comfy: FakeComfyUI,
                                                                     fake_ollama: FakeOllama, embedded_pg_url: str,
                                                                     tmp_path: Path) -> None:
    env = _env(tmp_path, fake_comfy, fake_ollama, embedded_pg_url) | {"ATELIER_AUTH": "local"}
    with _serving(tmp_path, env, "--owner", "carol", "--no-worker") as url:
        async with _session(url) as session:
            job = _result(await session.call_tool("submit_job", {"prompt": "a lantern", "seed": 3}))
            assert _result(await session.call_tool("job_status", {"job_id": job["job_id"]}))["status"] == "queued"
        with psycopg.connect(embedded_pg_url) as conn:
            row = conn.execute("SELECT owner FROM jobs WHERE id = %s", (job["job_id"],)).fetchone()
        assert row == ("carol",)
