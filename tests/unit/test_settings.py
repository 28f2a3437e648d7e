"""Settings come from the environment and .env; a bad value names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.tools.errors import SettingsError
from atelier.tools.settings import load_settings

ALL = ("COMFYUI_URLS", "COMFYUI_URL", "OLLAMA_URL", "QDRANT_URL", "DATABASE_URL", "ATELIER_DATA_DIR",
       "ATELIER_OUTPUT_DIR", "ATELIER_CHAT_PORT", "ATELIER_COMFYUI_SILENCE_SECONDS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_point_at_local_services_and_embedded_stores() -> None:
    settings = load_settings()
    assert settings.comfyui_urls == ["http://localhost:8188"]
    assert settings.ollama_url == "http://localhost:11434"
    assert settings.qdrant_url is None and settings.database_url is None
    assert settings.outputs == settings.data_dir / "outputs"


def test_several_comfyui_servers_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_URLS", "http://gpu1:8188/, http://gpu2:8188,http://gpu1:8188")
    assert load_settings().comfyui_urls == ["http://gpu1:8188", "http://gpu2:8188"]


def test_single_comfyui_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_URL", "http://box:9000")
    assert load_settings().comfyui_urls == ["http://box:9000"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OLLAMA_URL=http://llm:11434\nATELIER_DATA_DIR=/srv/atelier\n")
    settings = load_settings()
    assert settings.ollama_url == "http://llm:11434" and settings.data_dir == Path("/srv/atelier")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("COMFYUI_URLS", "ftp://nope", "is not an http(s) URL"),
        ("COMFYUI_URLS", " , ", "no URL given"),
        ("ATELIER_CHAT_PORT", "seventy", "valid integer"),
        ("ATELIER_COMFYUI_SILENCE_SECONDS", "-1", "greater than 0"),
        ("OLLAMA_URL", "localhost:11434", "write it like http://"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert variable in str(caught.value) and words in str(caught.value)
