"""The `showcase` and `get_showcase` tools through the official MCP client over stdio (`atelier mcp`), on the fake
ComfyUI and the fake Ollama: approval, progress notifications across the set, the gallery's manifest and files."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.showcases import COPY, PLAN

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ATELIER = Path(sys.executable).with_name("atelier")


async def test_showcase_asks_approval_reports_progress_and_returns_the_gallery(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    fake_ollama.script("llama3.2", [json.dumps(PLAN), json.dumps(COPY)])
    env = {**os.environ, "COMFYUI_URLS": fake_comfy.url, "OLLAMA_URL": fake_ollama.url,
           "DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_APPROVAL_COST": "0.02"}
    params = StdioServerParameters(command=str(ATELIER), args=["mcp", "--owner", "ana"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as opened:
        await opened.initialize()
        session: Any = opened
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"brief", "input_image", "thread_id", "decision"} == set(tools["showcase"].inputSchema["properties"])

        asked = await session.call_tool("showcase", {"brief": "A showcase for our copper espresso cup"})
        assert not asked.isError, asked.content
        pending = json.loads(asked.content[-1].text)
        assert pending["needs_approval"] and pending["approval"]["estimate"]["images"] == 4
        assert "decision approve or reject" in pending["reply"] and pending["showcase"] is None

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        made = await session.call_tool("showcase", {"thread_id": pending["thread_id"], "decision": "approve"},
                                       progress_callback=on_progress)
        assert not made.isError, made.content
        result: dict[str, Any] = json.loads(made.content[-1].text)
        assert result["reply"].startswith("Queued 4 image(s):")
        assert "\n\nYour showcase is ready: 4 of 4 image(s), captions and copy by the model." in result["reply"]
        showcase = result["showcase"]
        assert showcase["status"] == "ready" and showcase["images"] == showcase["planned"] == 4
        assert [i["caption"] for i in showcase["items"]] == [c["caption"] for c in COPY["images"]]
        assert showcase["manifest"]["headline"] == COPY["headline"]
        assert showcase["links"]["api_page"] == f"/showcases/{showcase['showcase_id']}/page"
        assert Path(showcase["links"]["page"]).read_text().count("data:image/png;base64,") == 4
        with zipfile.ZipFile(showcase["links"]["zip"]) as zipped:
            assert "manifest.json" in zipped.namelist() and len(zipped.namelist()) == 6
        steps = [(done, total) for done, total, message in progress if not (message or "").startswith("still")]
        assert steps[0] == (0, 6) and steps[-1] == (6, 6) and (4, 6) in steps and (5, 6) in steps
        assert any(message == "captions written; making the gallery" for _, _, message in progress)

        again = await session.call_tool("get_showcase", {"showcase_id": showcase["showcase_id"]})
        assert json.loads(again.content[-1].text)["manifest"] == showcase["manifest"]
        unknown = await session.call_tool("get_showcase", {"showcase_id": "00000000-0000-4000-8000-000000000000"})
        assert unknown.isError and "no showcase" in unknown.content[0].text
        stranger = await session.call_tool("showcase", {"thread_id": "showcase-someone-else", "decision": "approve"})
        assert stranger.isError and "of yours" in stranger.content[0].text
