"""Attacks on `atelier mcp --http`, through the official MCP client and raw HTTP.

Covers, for the MCP front end: a web page driving the server (a foreign origin, another local port's page, a
DNS-rebinding host), oversized bodies, and tool arguments naming server files (workflow and input-image paths).
Who-is-calling attacks in accounts mode are in tests/integration/test_mcp_auth.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_mcp_auth import INITIALIZE, MCP_HEADERS, _serving
from tests.integration.test_mcp_server import _env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def server(fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path) -> Iterator[str]:
    """`atelier mcp --http` in local mode (the default) on a loopback port."""
    with _serving(tmp_path, _env(tmp_path, fake_comfy, fake_ollama, machine_pg_url) | {"ATELIER_AUTH": "local"},
                  "--no-worker") as url:
        yield url


@asynccontextmanager
async def _session(url: str) -> AsyncIterator[Any]:
    """An initialised MCP client session (the official SDK)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _initialize(url: str, **headers: str) -> httpx.Response:
    """The MCP client's first request, sent raw with `headers`."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, json=INITIALIZE, headers=MCP_HEADERS | headers)


async def test_pages_on_other_origins_cannot_call(server: str) -> None:
    foreign = await _initialize(server, Origin="https://foreign.example")
    assert foreign.status_code == 403 and "ATELIER_ALLOWED_ORIGINS" in foreign.json()["detail"]
    assert foreign.headers.get("mcp-session-id") is None
    # The SDK alone would let any page served from any local port in; Atelier allows only its own pages.
    other_port = await _initialize(server, Origin="http://127.0.0.1:5555")
    assert other_port.status_code == 403
    assert (await _initialize(server, Origin="http://127.0.0.1:7860")).status_code == 200


async def test_dns_rebinding_and_huge_bodies_are_refused(server: str) -> None:
    rebound = await _initialize(server, Host="attacker.example:8766")
    assert rebound.status_code == 403 and "ATELIER_ALLOWED_HOSTS" in rebound.json()["detail"]
    async with httpx.AsyncClient(timeout=10) as http:
        huge = await http.post(server, content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=MCP_HEADERS)
    assert huge.status_code == 413
    assert (await _initialize(server, Host="localhost")).status_code == 200


async def test_tool_arguments_never_name_server_files(server: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG private")
    async with _session(server) as session:
        attempts = {
            "workflow path": {"prompt": "x", "workflow": "/etc/passwd.json", "wait": False},
            "workflow escape": {"prompt": "x", "workflow": "../../tmp/flow", "wait": False},
            "input path": {"prompt": "x", "workflow": "img2img", "input_image": str(secret), "wait": False},
            "input escape": {"prompt": "x", "workflow": "img2img", "input_image": "../secret.png", "wait": False},
        }
        for what, arguments in attempts.items():
            result = await session.call_tool("generate_image", arguments)
            text = " ".join(getattr(part, "text", "") for part in result.content)
            assert result.isError, (what, text)
            assert "file path" in text or "not a workflow name" in text or "inputs store" in text \
                or "path on the server" in text or "stored input" in text, (what, text)
        queued = await session.call_tool("submit_job", {"prompt": "x", "workflow": "txt2img-turbo", "seed": 1})
        assert not queued.isError
