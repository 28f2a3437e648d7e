"""`atelier generate | workflows | doctor` against the fake ComfyUI: outputs, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atelier.cli.main import main
from tests.fakes.comfyui_server import FakeComfyUI

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables and bars unwrapped
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    monkeypatch.setenv("COMFYUI_URLS", "http://127.0.0.1:9")  # overridden per test


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_saves_pngs_and_prints_their_paths(fake_comfy: FakeComfyUI, capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "generate", "a red fox in snow", "--workflow", str(DATA / "probe.json"),
                         "--seed", "7", "--steps", "4", "--size", "48x40", "--comfy-url", fake_comfy.url,
                         "--out", str(tmp_path / "renders"))
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 1 and paths[0].parent == tmp_path / "renders"
    image = Image.open(paths[0])
    assert image.size == (48, 40) and '"seed": 7' in image.info["prompt"]
    assert "ProbeTextToImage #1" in err and "4/4" in err  # the live step bar
    assert "seed 7" in err


def test_generate_with_a_shipped_template_uses_comfyui_urls(fake_comfy: FakeComfyUI, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COMFYUI_URLS", f"http://127.0.0.1:9,{fake_comfy.url}")  # first one is down
    code, out, err = run(capsys, "generate", "a lighthouse", "--workflow", "txt2img-turbo", "--seed", "3")
    assert code == 0, err
    [path] = out.split()
    assert Image.open(path).size == (512, 512)


def test_generate_upscale_with_input_image(fake_comfy: FakeComfyUI, capsys, tmp_path: Path) -> None:
    source = tmp_path / "small.png"
    Image.new("RGB", (40, 30), "blue").save(source)
    code, out, err = run(capsys, "generate", "upscale it", "--workflow", "upscale", "--image", str(source),
                         "--comfy-url", fake_comfy.url)
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (160, 120)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--workflow", str(DATA / "probe-fail.json")], "ComfyUI failed in node 2 (ProbeFail): RuntimeError: boom"),
        (["--workflow", str(DATA / "broken.json")], "broken.json"),
        (["--workflow", "no-such-workflow"], "no-such-workflow"),
        (["--size", "big"], "WIDTHxHEIGHT"),
    ],
    ids=["execution-error", "malformed-json", "unknown-workflow", "bad-size"],
)
def test_errors_are_one_clear_line_without_traceback(fake_comfy, capsys, argv: list[str], expected: str) -> None:
    code, _, err = run(capsys, "generate", "x", "--comfy-url", fake_comfy.url, *argv)
    assert code != 0
    assert expected in err
    assert "Traceback" not in err


def test_missing_model_error_says_where_it_goes(tmp_path: Path, capsys) -> None:
    with FakeComfyUI(models={}, output_dir=tmp_path / "c") as fake:
        code, _, err = run(capsys, "generate", "a fox", "--comfy-url", fake.url)
    assert code == 1
    assert "v1-5-pruned-emaonly.safetensors" in err and "ComfyUI/models/checkpoints/" in err
    assert "Traceback" not in err


def test_unreachable_comfyui(closed_port_url: str, capsys) -> None:
    code, _, err = run(capsys, "generate", "x", "--comfy-url", closed_port_url)
    assert code == 1 and closed_port_url in err and "unreachable" in err and "Traceback" not in err


def test_debug_shows_the_traceback(closed_port_url: str, capsys) -> None:
    from atelier.tools.errors import ComfyUnreachableError

    with pytest.raises(ComfyUnreachableError):
        main(["--debug", "generate", "x", "--comfy-url", closed_port_url])


def test_workflows_lists_the_catalog(capsys) -> None:
    code, out, _ = run(capsys, "workflows")
    assert code == 0
    for name in ("txt2img", "txt2img-turbo", "img2img", "upscale"):
        assert name in out


def test_doctor_ok_and_down(fake_comfy: FakeComfyUI, closed_port_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COMFYUI_URLS", fake_comfy.url)
    code, out, _ = run(capsys, "doctor")
    assert code == 0 and "ComfyUI" in out and "ok" in out and "0.3.64" in out
    code, out, _ = run(capsys, "doctor", "--comfy-url", closed_port_url)
    assert code == 1 and "DOWN" in out
