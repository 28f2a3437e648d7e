"""The chat server (atelier.chat.build_server) under uvicorn in a thread on a loopback port, for browser tests."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from atelier.tools.settings import Settings, load_settings

__all__ = ["ServerThread", "chat_settings", "free_port", "message_files", "message_text"]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chat_settings(tmp_path: Path, comfy_url: str, ollama_url: str, pg_url: str) -> Settings:
    """Settings for a test chat: the fakes, a fresh database, thresholds that make a 4-image plan ask first."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=comfy_url, ollama_url=ollama_url,
                         database_url=pg_url, approval_cost=0.02, approval_gpu_seconds=60)


class ServerThread:
    """`with ServerThread(settings, conninfo) as url:` serves the chat until the block ends."""

    def __init__(self, settings: Settings, conninfo: str, *, worker: bool = True) -> None:
        from atelier.chat import build_server

        self.port = free_port()
        config = uvicorn.Config(build_server(settings, conninfo=conninfo, worker=worker), host="127.0.0.1",
                                port=self.port, log_level="warning", timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="chat-server")

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return f"http://127.0.0.1:{self.port}/"
            self.thread.join(0.05)
        raise RuntimeError("the chat server did not start in 30 s")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the chat server did not stop within 30 s"


def message_text(message: dict[str, Any]) -> str:
    """The text parts of a chat message as gradio_client returns it."""
    content = message.get("content")
    parts = content if isinstance(content, list) else [content]
    return " ".join(p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
                    for p in parts if p is not None)


def message_files(message: dict[str, Any]) -> list[str]:
    """Local paths of the files (images) gradio_client downloaded for a message."""
    content = message.get("content")
    parts = content if isinstance(content, list) else [content]
    found = []
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "file":
            file = part["file"]
            found.append(str(file["path"] if isinstance(file, dict) else file))
    return found
