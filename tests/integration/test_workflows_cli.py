"""`atelier workflows`: the user's workflows listed, `--explain` a routing decision (rules, alternatives, the servers'
model files), and `import` of a models_config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.tools.models_config import strip_json_comments
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration.test_cli import run
from tests.user_workflows import QWEN_FILE, S12_CONFIG, make_user_workflows


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, closed_port_url: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATELIER_WORKFLOWS_DIR", str(make_user_workflows(tmp_path / "workflows")))
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    monkeypatch.delenv("ATELIER_MODELS_CONFIG", raising=False)
    monkeypatch.setenv("COMFYUI_URLS", closed_port_url)


def test_explain_prints_the_deciding_rule_and_why_each_alternative_lost(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATELIER_MODELS_CONFIG", str(S12_CONFIG))
    code, out, err = run(capsys, "workflows", "--explain", "urgent thumbnail", "--vram", "16")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("Request: 'urgent thumbnail' → purpose thumbnail, urgency immediate, 16 GB VRAM free; "
                        "no server listed its model files")
    assert lines[1] == "Decision: qwen-image-fast — by routing_rules.by_purpose.thumbnail → qwen-image-fast"
    assert lines[2].startswith("  qwen-image-fast: medium quality, ~30 s and 0.01 per image, needs 6 GB (16 GB free)")
    assert "Alternatives:" in lines
    assert ("  - txt2img-turbo: routing_rules.by_purpose.thumbnail → qwen-image-fast decided first (fast quality, "
            "~10 s, 0.005 per image)") in lines
    assert ("  - my-sketch: routing_rules.by_purpose.thumbnail → qwen-image-fast decided first (no catalog entry, "
            "~60 s)") in lines
    low = run(capsys, "workflows", "--explain", "an image with 6 GB free")[1]
    assert "Decision: qwen-image-fast — by routing_rules.by_available_vram.low → qwen-image-fast" in low
    assert ("  - routing_rules.by_urgency.standard → qwen-image-standard (workflow qwen-image) did not apply: "
            "qwen-image: needs 8 GB of VRAM, 6 GB free") in low.splitlines()
    assert "  - qwen-image-ultra: needs 14 GB of VRAM, 6 GB free" in low.splitlines()


def test_explain_asks_the_servers_for_vram_and_model_files(fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATELIER_MODELS_CONFIG", str(S12_CONFIG))
    monkeypatch.setenv("COMFYUI_URLS", fake_comfy.url)  # has the shipped workflows' files, none of Qwen's
    code, out, err = run(capsys, "workflows", "--explain", "urgent thumbnail")
    assert code == 0, err
    assert "GB VRAM free; model files listed by 1 server(s)" in out
    assert "Decision: txt2img-turbo — by routing_rules.by_urgency.immediate → sdxl-turbo (workflow txt2img-turbo)" \
        in out
    assert ("  - routing_rules.by_purpose.thumbnail → qwen-image-fast did not apply: qwen-image-fast: its model files "
            f"are not installed (the server lacks checkpoints/{QWEN_FILE}): put them in ComfyUI/models/") \
        in out.splitlines()
    assert f"  - qwen-image-ultra: its model files are not installed (the server lacks checkpoints/{QWEN_FILE})" \
        in out


def test_import_checks_keeps_and_uses_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "workflows", "import", str(S12_CONFIG))
    assert code == 0, err
    kept = tmp_path / "data" / "models_config.json"
    assert kept.read_text() == S12_CONFIG.read_text(), "kept as written, comments and all"
    rows = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert 'qwen-image-standard qwen-image its name without "-standard" txt2img high 8 60 0.02 1024x1024' in rows
    assert "sdxl-turbo txt2img-turbo its file sd_xl_turbo_1.0_fp16.safetensors txt2img fast 4 10 0.005 1024x1024" \
        in rows
    assert "routing_rules.by_purpose.social_media → qwen-image-standard (workflow qwen-image)" in out
    assert f"imported to {kept}; the router uses it from now on" in out
    explained = run(capsys, "workflows", "--explain", "social media post", "--vram", "16")[1]
    assert "Decision: qwen-image — by routing_rules.by_purpose.social_media → qwen-image-standard (workflow " \
           "qwen-image)" in explained
    listed = run(capsys, "workflows")[1]
    assert f"models config: {kept} (4 models)" in listed


def test_a_bad_file_is_refused_and_not_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(strip_json_comments(S12_CONFIG.read_text()))
    data["routing_rules"]["by_purpose"]["thumbnail"] = "qwen-image-fastt"
    bad = tmp_path / "models_config.json"
    bad.write_text(json.dumps(data))
    code, _, err = run(capsys, "workflows", "import", str(bad))
    assert code == 1
    assert 'routing_rules.by_purpose.thumbnail names "qwen-image-fastt", which is not in models' in " ".join(
        err.split())
    assert not (tmp_path / "data" / "models_config.json").exists()
    del data["models"]["sdxl-turbo"]["path"]
    data["routing_rules"]["by_purpose"]["thumbnail"] = "qwen-image-fast"
    data["models"]["sdxl-turbo"]["workflow"] = "turbo-xl"
    bad.write_text(json.dumps(data))
    code, _, err = run(capsys, "workflows", "import", str(bad))
    assert code == 1 and 'models.sdxl-turbo.workflow names "turbo-xl", which is not a workflow' in " ".join(
        err.split())


def test_the_list_shows_the_users_workflows_with_their_task(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "workflows")
    assert code == 0, err
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
                                          if line.startswith("│")) if cells and cells[0]}
    assert rows["my-sketch"][1:3] == ["txt2img", "?"] and rows["my-restyle"][1] == "img2img"
    assert rows["qwen-image-edit"][1:3] == ["edit", "high"]
    assert "your workflow, no catalog entry" in out


def test_ready_lists_per_server_what_runs_now_and_what_is_missing(fake_comfy: FakeComfyUI,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COMFYUI_URLS", fake_comfy.url)  # the shipped workflows' files; not the test copies' QWEN_FILE
    code, out, err = run(capsys, "workflows", "--ready")
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert f"{fake_comfy.url}:" in lines
    ready = next(line for line in lines if line.startswith("ready to run: "))
    assert "txt2img" in ready and "txt2img-turbo" in ready and "qwen-image-ultra" not in ready
    assert any(line.startswith("qwen-image-ultra needs ") and f"models/checkpoints/{QWEN_FILE}" in line
               for line in lines)
