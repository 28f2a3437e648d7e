"""Ready or not: which workflows a ComfyUI server can run now, and what each of the others lacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atelier.tools.catalog import list_templates
from atelier.tools.comfyui.readiness import check_server
from atelier.tools.doctor import run_doctor
from atelier.tools.settings import load_settings
from tests.fakes.comfyui_server import FakeComfyUI

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"
MISSING = "qwen_image_fp8_e4m3fn.safetensors"
URL = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/" + MISSING


def _user_workflow(folder: Path) -> Path:
    """A user workflow (txt2img's graph) that loads a checkpoint the fake server does not have."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = json.loads((SHIPPED / "txt2img.json").read_text())
    loader = next(node for node in graph.values() if node["class_type"] == "CheckpointLoaderSimple")
    loader["inputs"]["ckpt_name"] = MISSING
    (folder / "mine.json").write_text(json.dumps(graph))
    sidecar = json.loads((SHIPPED / "txt2img.meta.json").read_text())
    sidecar["catalog"]["models"] = {"checkpoints": [MISSING]}
    sidecar["catalog"]["model_files"] = [{"folder": "checkpoints", "name": MISSING, "size_gb": 20.4, "url": URL}]
    (folder / "mine.meta.json").write_text(json.dumps(sidecar))
    shutil.copy(SHIPPED / "txt2img.json", folder / "plain.json")  # no sidecar: its needs are read off the graph
    return folder


@pytest.mark.asyncio
async def test_the_server_says_which_workflows_run_now_and_what_the_others_lack(fake_comfy: FakeComfyUI,
                                                                              tmp_path: Path) -> None:
    templates = list_templates([_user_workflow(tmp_path / "mine")]).templates
    server = await check_server(fake_comfy.url, templates)
    assert server.error is None
    assert {"txt2img", "txt2img-hq", "plain"} <= set(server.ready)
    [mine] = [w for w in server.not_ready if w.workflow == "mine"]
    [missing] = mine.missing
    assert (missing.folder, missing.name, missing.size_gb, missing.url) == ("checkpoints", MISSING, 20.4, URL)
    assert missing.describe() == f"models/checkpoints/{MISSING} (20.4 GB, from {URL})"


@pytest.mark.asyncio
async def test_the_doctor_lists_readiness_per_server(fake_comfy: FakeComfyUI, closed_port_url: str,
                                                     tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", workflows_dir=_user_workflow(tmp_path / "mine"))
    checks = await run_doctor(settings, comfy_urls=[fake_comfy.url, closed_port_url])
    up, down = [c for c in checks if c.service == "ComfyUI"]
    assert up.ok and any(line.startswith("ready to run: ") and "txt2img" in line for line in up.details)
    assert f"mine needs models/checkpoints/{MISSING} (20.4 GB, from {URL})" in up.details
    assert not down.ok and not any("ready to run" in line for line in down.details)
