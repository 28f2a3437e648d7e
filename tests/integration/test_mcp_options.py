"""A request for options through `atelier mcp` (the official MCP client over stdio): ask_atelier returns the earlier
images found and the new variations' jobs as one result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_mcp_server import ATELIER, _env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_ask_atelier_returns_earlier_images_and_new_variations(
        fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str, tmp_path: Path) -> None:
    import anyio
    import psycopg
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.types import TextContent

    env = {**_env(tmp_path, fake_comfy, fake_ollama, embedded_pg_url), "ATELIER_OPTIONS_SIMILAR": "4",
           "ATELIER_OPTIONS_VARIATIONS": "2"}
    params = StdioServerParameters(command=str(ATELIER), args=["mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for prompt in ("a paper crane on a desk", "a paper crane in flight"):
            made = await session.call_tool("generate_image", {"prompt": prompt})
            assert not made.isError, made.content
        async with await psycopg.AsyncConnection.connect(embedded_pg_url) as conn:  # the process's own indexer
            for _ in range(600):
                row = await (await conn.execute(
                    "SELECT count(*) FROM jobs WHERE memory_indexed_at IS NOT NULL")).fetchone()
                if row == (2,):
                    break
                await anyio.sleep(0.05)
        answer = await session.call_tool("ask_atelier", {"message": "show me images similar to my paper cranes"})
    assert not answer.isError, answer.content
    text = answer.content[-1]
    assert isinstance(text, TextContent)
    result = json.loads(text.text)
    assert [e["prompt"] for e in result["earlier"]] and {e["prompt"] for e in result["earlier"]} == {
        "a paper crane on a desk", "a paper crane in flight"}
    assert len(result["jobs"]) == 2 and "2 earlier image(s) like “my paper cranes”" in result["reply"]
