"""Shared fixtures: a fake ComfyUI on a loopback port with the models the shipped workflows need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

# What the shipped templates load (see workflows/*.meta.json "models").
INSTALLED_MODELS: dict[str, list[str]] = {
    "checkpoints": [
        "v1-5-pruned-emaonly.safetensors",
        "sd_xl_turbo_1.0_fp16.safetensors",
        "sd_xl_base_1.0.safetensors",
    ],
    "upscale_models": ["RealESRGAN_x4plus.pth"],
    "diffusion_models": ["qwen_image_fp8_e4m3fn.safetensors", "qwen_image_edit_2509_fp8_e4m3fn.safetensors"],
    "text_encoders": ["qwen_2.5_vl_7b_fp8_scaled.safetensors"],
    "vae": ["qwen_image_vae.safetensors"],
    "loras": ["Qwen-Image-Lightning-8steps-V1.0.safetensors"],
}


@pytest.fixture
def fake_comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    """A fresh fake ComfyUI per test, with its own output folder."""
    with FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui") as fake:
        yield fake


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A fake Ollama on a loopback port that streams its answers a word at a time."""
    with FakeOllama(chunk_delay=0.01) as fake:
        yield fake


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse and record any look-up or connection leaving loopback; fail the test if one was tried."""
    from tests.frameworks import refuse_egress

    with refuse_egress(monkeypatch) as refused:
        yield refused
    assert refused == [], f"something tried to leave loopback: {refused}"


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def embedded_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded PostgreSQL for the whole run (started on first use, stopped at the end)."""
    from tests.pg import embedded_server

    with embedded_server(tmp_path_factory.mktemp("embedded-pg")) as url:
        yield url


@pytest.fixture(params=["machine", "embedded"])
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on each kind of real PostgreSQL: the machine's server and the embedded wheel."""
    from tests.pg import MACHINE_ADMIN_URL, fresh_database

    admin = MACHINE_ADMIN_URL if request.param == "machine" else request.getfixturevalue("embedded_admin_url")
    with fresh_database(admin) as url:
        yield url


@pytest.fixture
def machine_pg_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL only (for the heavier worker tests)."""
    from tests.pg import MACHINE_ADMIN_URL, fresh_database

    with fresh_database(MACHINE_ADMIN_URL) as url:
        yield url


@pytest.fixture
def embedded_pg_url(embedded_admin_url: str) -> Iterator[str]:
    """A fresh database on the embedded PostgreSQL only (it ships pgvector, which the memory needs)."""
    from tests.pg import fresh_database

    with fresh_database(embedded_admin_url) as url:
        yield url
