"""`atelier mcp` through the official MCP client, over stdio and streamable HTTP, against the fakes."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.serving import serving

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ATELIER = Path(sys.executable).with_name("atelier")


def _env(tmp_path: Path, comfy: FakeComfyUI, ollama: FakeOllama, pg_url: str) -> dict[str, str]:
    """The server's environment: the fakes, a fresh database, its own data folder."""
    return {**os.environ, "COMFYUI_URLS": comfy.url, "OLLAMA_URL": ollama.url, "DATABASE_URL": pg_url,
            "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_APPROVAL_COST": "0.02"}


async def _exercise(session: Any) -> None:
    """What both transports must do: list, generate with progress and a PNG, refuse a bad workflow, ask."""
    listed = await session.list_tools()
    names = {tool.name for tool in listed.tools}
    assert names == {"generate_image", "submit_job", "job_status", "list_workflows", "search_images",
                     "search_documents", "find_prompts", "ask_atelier", "showcase", "get_showcase"}
    generate = next(tool for tool in listed.tools if tool.name == "generate_image")
    assert generate.inputSchema["required"] == ["prompt"] and "wait" in generate.inputSchema["properties"]

    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    result = await session.call_tool("generate_image", {"prompt": "a paper crane", "seed": 11, "steps": 6},
                                     progress_callback=on_progress)
    assert not result.isError, result.content
    image, text = result.content
    assert image.type == "image" and image.mimeType == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG")
    info = json.loads(text.text)
    assert info["status"] == "succeeded" and info["seed"] == 11 and Path(info["images"][0]["path"]).is_file()
    assert any(message and "step 6/6" in message for _, _, message in progress), progress

    queued = await session.call_tool("generate_image", {"prompt": "a paper boat", "wait": False})
    job = json.loads(queued.content[-1].text)
    assert job["status"] in {"queued", "submitted", "running", "succeeded"} and job["job_id"]
    status = await session.call_tool("job_status", {"job_id": job["job_id"]})
    assert json.loads(status.content[-1].text)["job_id"] == job["job_id"]

    bad = await session.call_tool("generate_image", {"prompt": "x", "workflow": "no-such-flow"})
    assert bad.isError and "no-such-flow" in bad.content[0].text
    invalid = await session.call_tool("generate_image", {"prompt": "x", "steps": 0})
    assert invalid.isError and "steps" in invalid.content[0].text

    answer = await session.call_tool("ask_atelier", {"message": "Which paper folds best?"})
    reply = json.loads(answer.content[-1].text)
    assert reply["reply"] == "Washi folds best." and reply["thread_id"]

    resources = {str(r.uri) for r in (await session.list_resources()).resources}
    assert {"atelier://workflows", "atelier://images/recent"} <= resources
    recent = await session.read_resource("atelier://images/recent")
    assert json.loads(recent.contents[0].text)[0]["prompt"]


async def test_stdio(fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    fake_ollama.script("llama3.2", ["Washi folds best."])
    params = StdioServerParameters(command=str(ATELIER), args=["mcp"],
                                   env=_env(tmp_path, fake_comfy, fake_ollama, machine_pg_url))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await _exercise(session)


@pytest.fixture
def http_server(fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str,
                tmp_path: Path) -> Iterator[str]:
    """`atelier mcp --http` in a child process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with serving([str(ATELIER), "mcp", "--http", "--port", str(port)], url, tmp_path / "mcp.log",
                 env=_env(tmp_path, fake_comfy, fake_ollama, machine_pg_url), timeout=60):
        yield url


async def test_streamable_http(http_server: str, fake_ollama: FakeOllama) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    fake_ollama.script("llama3.2", ["Washi folds best."])
    async with streamable_http_client(http_server) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        await _exercise(session)
