"""Atelier as a Python library: the example script runs against the fakes; the public API builds a graph."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from tests.fakes.chat_model import ScriptedChatModel
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_example_script_generates_asks_and_lists(fake_comfy: FakeComfyUI, fake_ollama: FakeOllama,
                                                     machine_pg_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "COMFYUI_URLS": fake_comfy.url, "OLLAMA_URL": fake_ollama.url,
           "DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "embed_atelier.py"), "a kite over dunes"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    status, path = lines["image"].split(" ", 1)
    assert status == "succeeded" and Path(path).read_bytes().startswith(b"\x89PNG")
    assert lines["supervisor"].startswith("For 3 image(s) I would use txt2img-hq")
    assert "txt2img" in lines["workflows"].split(", ")


@pytest.mark.asyncio
async def test_the_public_api_builds_the_supervisor_with_your_checkpointer(tmp_path: Path) -> None:
    from atelier import TOOLS, SupervisorDeps, build_supervisor, load_settings

    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9")
    graph = build_supervisor(deps=SupervisorDeps(settings=settings, llm=ScriptedChatModel(replies=["Paris."]))) \
        .compile(checkpointer=InMemorySaver())
    out = await graph.ainvoke({"messages": [HumanMessage("What is the capital of France?")]},
                              {"configurable": {"thread_id": "mine"}})
    assert out["messages"][-1].content == "Paris."
    assert [t.name for t in TOOLS] == ["generate_image", "submit_job", "job_status", "list_workflows",
                                       "search_images", "search_documents", "find_prompts", "ask_atelier",
                                       "showcase", "get_showcase"]


@pytest.mark.asyncio
async def test_open_atelier_calls_tools_by_name_for_its_owner(machine_pg_url: str, tmp_path: Path,
                                                             fake_comfy: FakeComfyUI) -> None:
    from atelier import AtelierError, load_settings, open_atelier

    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url)
    async with open_atelier(settings, owner="ana", conninfo=machine_pg_url, with_memory=False) as studio:
        queued = await studio.call("submit_job", prompt="a lamp", seed=3)
        assert queued.status == "queued"
        assert (await studio.call("job_status", job_id=queued.job_id)).job_id == queued.job_id
        with pytest.raises(AtelierError, match="no tool 'paint'"):
            await studio.call("paint", prompt="x")
        with pytest.raises(AtelierError, match="memory is not open"):
            await studio.call("search_images", query="lamp")
    async with open_atelier(settings, owner="ben", conninfo=machine_pg_url, with_memory=False) as other:
        with pytest.raises(AtelierError, match=r"no job .* of yours"):
            await other.call("job_status", job_id=queued.job_id)
