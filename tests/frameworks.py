"""Helpers for tests of third-party agent frameworks (CrewAI, AutoGen): settings, scripted calls, no egress."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from atelier.studio import ChatServices, studio
from atelier.tools.settings import Settings, load_settings
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

__all__ = ["MODEL", "framework_settings", "is_loopback", "open_services", "openai_chats", "refuse_egress",
           "settings_fixture", "tool_call"]

MODEL = "llama3.2"


def framework_settings(tmp_path: Path, comfy: FakeComfyUI, ollama: FakeOllama) -> Settings:
    """The fakes, a fresh data folder, and Ollama embeddings for the memory (no MiniLM load)."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=comfy.url, ollama_url=ollama.url,
                         chat_model=MODEL, embed_model="nomic-embed-text")


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama) -> Settings:
    """The `settings` fixture of framework tests (import it into the test module)."""
    return framework_settings(tmp_path, fake_comfy, fake_ollama)


@asynccontextmanager
async def open_services(settings: Settings, conninfo: str, corpus: Path | None = None) -> AsyncIterator[ChatServices]:
    """Ledger + memory + a worker against the fake ComfyUI (with a document folder in the memory, if given)."""
    from atelier.tools.memory.documents import chunk_file, find_documents
    from atelier.tools.memory.records import SHARED

    async with studio(settings, conninfo=conninfo) as opened:
        memory = opened.memory
        assert memory is not None, opened.memory_problem
        if corpus is not None:
            chunks = [chunk for path in find_documents([corpus]) for chunk in chunk_file(path, SHARED)]
            await asyncio.to_thread(memory.add_documents, chunks)
        yield opened


def openai_chats(fake: FakeOllama) -> list[dict[str, Any]]:
    """The bodies of the chat requests the fake Ollama received on its OpenAI-compatible endpoint."""
    return [body for method, path, body in fake.requests if method == "POST" and path == "/v1/chat/completions"]


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    """A scripted fake-Ollama model turn that calls one tool."""
    return {"tool_calls": [{"function": {"name": name, "arguments": arguments}}]}


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine."""
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def refuse_egress(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse (and record) every Python-level name look-up or connection that would leave loopback."""
    refused: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        if not is_loopback(name):
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"test refuses to look up {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guard(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(str(address[0])):
            refused.append(str(address[0]))
            raise ConnectionRefusedError(f"test refuses to connect to {address[0]}")

    def connect(sock: socket.socket, address: Any) -> None:
        guard(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        guard(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield refused
