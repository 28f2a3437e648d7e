"""Shared fixtures: a fake ComfyUI on a loopback port with the models the shipped workflows need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI

# What the shipped templates load (see workflows/*.meta.json "models").
INSTALLED_MODELS: dict[str, list[str]] = {
    "checkpoints": [
        "v1-5-pruned-emaonly.safetensors",
        "sd_xl_turbo_1.0_fp16.safetensors",
        "sd_xl_base_1.0.safetensors",
    ],
    "upscale_models": ["RealESRGAN_x4plus.pth"],
}


@pytest.fixture
def fake_comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    """A fresh fake ComfyUI per test, with its own output folder."""
    with FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui") as fake:
        yield fake


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
