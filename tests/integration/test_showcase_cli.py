"""`atelier showcase` in a child process on the fake ComfyUI and the fake Ollama: progress on stderr, the finished
showcase as JSON, and a plan over the thresholds refused without --yes when nobody can be asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.showcases import COPY, PLAN

pytestmark = pytest.mark.slow

ATELIER = Path(sys.executable).with_name("atelier")


def test_the_cli_makes_a_showcase_and_prints_its_files(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    fake_ollama.script("llama3.2", [json.dumps(PLAN), json.dumps(PLAN), json.dumps(COPY)])
    env = {**os.environ, "COMFYUI_URLS": fake_comfy.url, "OLLAMA_URL": fake_ollama.url,
           "DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_APPROVAL_COST": "0.02"}
    brief = "A showcase for our copper espresso cup"
    refused = subprocess.run([str(ATELIER), "showcase", brief], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and "run again with --yes" in refused.stderr
    assert "Understood: nothing was generated." in refused.stderr

    made = subprocess.run([str(ATELIER), "showcase", brief, "--yes", "--json", "--owner", "ana"], env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    assert "images 0/6" in made.stderr and "done 6/6" in made.stderr
    info = json.loads(made.stdout)
    assert info["status"] == "ready" and info["images"] == 4 and info["headline"] == COPY["headline"]
    with zipfile.ZipFile(info["links"]["zip"]) as zipped:
        assert len(zipped.namelist()) == 6
