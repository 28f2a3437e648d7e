"""Every shipped workflow runs with `atelier generate` on the fake ComfyUI (which validates like ComfyUI 0.3.64)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atelier.cli.main import main
from atelier.tools.catalog import list_templates
from atelier.tools.comfyui.templates import load_workflow
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI

SHIPPED = list_templates().names()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    monkeypatch.setenv("COMFYUI_URLS", "http://127.0.0.1:9")


def _generate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `atelier generate` in-process; (exit code, stdout, stderr)."""
    try:
        main(["generate", *argv])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _default_size(name: str) -> tuple[int, int]:
    template = load_workflow(name)
    width, height = template.bindings["width"][0], template.bindings["height"][0]
    return template.graph[width.node_id]["inputs"]["width"], template.graph[height.node_id]["inputs"]["height"]


def test_the_fake_has_every_model_file_the_shipped_catalog_names() -> None:
    for template in list_templates().templates:
        assert template.catalog is not None
        for folder, files in template.catalog.models.items():
            assert set(files) <= set(INSTALLED_MODELS.get(folder, [])), (template.name, folder)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_workflow_runs_and_saves_its_image(
    name: str, fake_comfy: FakeComfyUI, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    template = load_workflow(name)
    argv = ["a kingfisher on a branch", "--workflow", name, "--comfy-url", fake_comfy.url, "--out", str(tmp_path)]
    source = tmp_path / "input.png"
    Image.new("RGB", (1200, 896), "teal").save(source)
    if "input_image" in template.bindings:
        argv += ["--image", str(source)]
    if "seed" in template.bindings:
        argv += ["--seed", "11"]
    code, out, err = _generate(capsys, *argv)
    assert code == 0, err
    [path] = [Path(line) for line in out.split()]
    size = Image.open(path).size
    if "width" in template.bindings:
        assert size == _default_size(name)
    elif name == "upscale":
        assert size == (4800, 3584)
    else:  # img2img keeps the input's size; the Qwen edit scales it to the nearest Kontext size (4:3 → 1184x880)
        assert size == ((1184, 880) if name == "qwen-image-edit" else (1200, 896))
        assert template.catalog is not None
        assert name != "qwen-image-edit" or f"{size[0]}x{size[1]}" in template.catalog.native_resolutions


@pytest.mark.parametrize("size", ["1664x928", "1136x1472"])
def test_qwen_image_renders_its_native_sizes(size: str, fake_comfy: FakeComfyUI, capsys, tmp_path: Path) -> None:
    code, out, err = _generate(capsys, "a poster that reads OPEN", "--workflow", "qwen-image-fast", "--size", size,
                               "--seed", "5", "--comfy-url", fake_comfy.url, "--out", str(tmp_path))
    assert code == 0, err
    width, height = (int(n) for n in size.split("x"))
    assert Image.open(out.split()[0]).size == (width, height)


def test_qwen_image_off_its_multiple_of_16_is_refused_before_comfyui_is_asked(
    fake_comfy: FakeComfyUI, capsys
) -> None:
    code, _, err = _generate(capsys, "x", "--workflow", "qwen-image", "--size", "1472x1140",
                             "--comfy-url", fake_comfy.url)
    assert code != 0 and "height 1140 is not a multiple of 16" in err and "use 1136 or 1152" in err
    assert not [r for r in fake_comfy.requests if r[1] == "/prompt"], "nothing is queued"


def test_a_server_without_the_qwen_files_says_which_file_goes_where(tmp_path: Path, capsys) -> None:
    with FakeComfyUI(models={"checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors"]}, output_dir=tmp_path / "c") as fake:
        code, _, err = _generate(capsys, "a fox", "--workflow", "qwen-image", "--comfy-url", fake.url)
    assert code == 1 and "Traceback" not in err
    assert "qwen_image_fp8_e4m3fn.safetensors" in err and "ComfyUI/models/diffusion_models/" in err
