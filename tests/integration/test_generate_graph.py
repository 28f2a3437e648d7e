"""The `generate` LangGraph graph (exposed in langgraph.json) runs the generate tool with per-run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.tools.settings import load_settings
from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[2]


def test_langgraph_json_points_at_a_compiled_graph() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, name = config["graphs"]["generate"].partition(":")
    assert (ROOT / path).is_file() and name == "graph"
    from atelier.graphs.generate import graph

    assert "generate" in graph.get_graph().nodes


@pytest.mark.asyncio
async def test_graph_generates_on_the_settings_server_and_folder_whatever_the_run_config_says(
    fake_comfy: FakeComfyUI, tmp_path: Path, closed_port_url: str
) -> None:
    from atelier.graphs.generate import build_generate_graph

    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=fake_comfy.url, output_dir=tmp_path / "out")
    graph = build_generate_graph(settings=settings).compile()
    state = await graph.ainvoke(
        {"params": {"prompt": "a lighthouse at dusk", "seed": 11}, "workflow": "txt2img-turbo"},
        # A caller cannot point the graph at another server or folder (issue 15): these keys mean nothing.
        config={"configurable": {"comfy_url": closed_port_url, "out_dir": str(tmp_path / "elsewhere")}},
    )
    result = state["result"]
    assert result["workflow"] == "txt2img-turbo" and result["seed"] == 11 and result["server"] == fake_comfy.url
    [image] = result["images"]
    assert Path(image["path"]).parent == tmp_path / "out" and Path(image["path"]).is_file()
    assert not (tmp_path / "elsewhere").exists()
