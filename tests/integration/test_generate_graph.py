"""The `generate` LangGraph graph (exposed in langgraph.json) runs the generate tool with per-run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tools.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_langgraph_json_points_at_a_compiled_graph() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, name = config["graphs"]["generate"].partition(":")
    assert (ROOT / path).is_file() and name == "graph"
    from graphs.generate import graph

    assert "generate" in graph.get_graph().nodes


@pytest.mark.asyncio
async def test_graph_generates_with_configurable_server_and_folder(
    fake_comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    from graphs.generate import build_generate_graph

    graph = build_generate_graph(settings=load_settings()).compile()
    state = await graph.ainvoke(
        {"params": {"prompt": "a lighthouse at dusk", "seed": 11}, "workflow": "txt2img-turbo"},
        config={"configurable": {"comfy_url": fake_comfy.url, "out_dir": str(tmp_path / "out")}},
    )
    result = state["result"]
    assert result["workflow"] == "txt2img-turbo" and result["seed"] == 11 and result["server"] == fake_comfy.url
    [image] = result["images"]
    assert Path(image["path"]).parent == tmp_path / "out" and Path(image["path"]).is_file()
