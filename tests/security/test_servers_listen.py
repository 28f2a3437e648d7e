"""Local mode stays local: every server this repository starts, asked to listen on 0.0.0.0 with ATELIER_AUTH=local
(no login: whoever reaches it is the admin), refuses and says how to turn accounts on; an explicit, loud
--allow-unauthenticated (or ATELIER_ALLOW_UNAUTHENTICATED=true) starts it with a warning; with accounts it starts.

Each server is the real command in its own process: `python app.py` (the chat, which honours Gradio's
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT), `atelier api`, `atelier mcp --http`, `atelier worker --metrics-port`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.chat_server import free_port
from tests.serving import serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "atelier.cli.main"]
REFUSAL = "will not listen on 0.0.0.0 in local mode"
WARNING = "WITHOUT AUTHENTICATION"
# Where each server answers once it listens (any HTTP answer will do).
READY_PATH = {"chat": "/api/health", "api": "/health", "mcp": "/mcp", "worker": "/metrics"}


def _command(server: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line that starts `server` on 0.0.0.0:port, and the environment it needs for that."""
    if server == "chat":
        return [sys.executable, "app.py"], {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port)}
    if server == "api":
        return [*CLI, "api", "--host", "0.0.0.0", "--port", str(port)], {}
    if server == "mcp":
        return [*CLI, "mcp", "--http", "--host", "0.0.0.0", "--port", str(port), "--no-worker"], {}
    return [*CLI, "worker", "--metrics-port", str(port), "--metrics-host", "0.0.0.0"], {}


def _env(tmp_path: Path, pg_url: str, **extra: str) -> dict[str, str]:
    """A clean environment: local mode, a fresh data folder and database, services on a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "GRADIO_SERVER_"))}
    return env | {
        "ATELIER_AUTH": "local", "ATELIER_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": pg_url,
        "COMFYUI_URLS": "http://127.0.0.1:9", "OLLAMA_URL": "http://127.0.0.1:9", "ATELIER_CHAT_WORKER": "false",
        "COLUMNS": "250", "PYTHONPATH": str(ROOT), **extra,
    }


def _listens_on_every_address(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (Linux's table of TCP sockets; state 0A is LISTEN)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(f"00000000:{port:04X}" == fields[1] and fields[3] == "0A" for fields in (line.split() for line in lines))


def _refused(argv: list[str], env: dict[str, str], probe: str, log: Path) -> tuple[int, str]:
    """Run a server that should refuse to start: (its exit code, what it said); the test fails if it serves."""
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                return process.wait(timeout=0.2), log.read_text()
            except subprocess.TimeoutExpired:
                pass
            try:
                httpx.get(probe, timeout=1)
            except httpx.TransportError:
                continue
            pytest.fail(f"it serves {probe} in local mode:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("server", ["chat", "api", "mcp", "worker"])
def test_local_mode_refuses_to_listen_beyond_loopback(server: str, machine_pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    argv, extra = _command(server, port)
    code, said = _refused(argv, _env(tmp_path, machine_pg_url, **extra), f"http://127.0.0.1:{port}{READY_PATH[server]}",
                          tmp_path / "server.log")
    assert code != 0, said
    assert REFUSAL in said, said
    assert "ATELIER_AUTH=accounts" in said and "atelier users add NAME --admin" in said, said
    assert "--allow-unauthenticated" in said, said


@pytest.mark.parametrize(("server", "how"), [
    ("chat", "flag"), ("api", "environment"), ("mcp", "flag"), ("worker", "flag"), ("api", "accounts"),
])
def test_the_override_starts_it_and_says_so_and_accounts_need_none(
    server: str, how: str, machine_pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    argv, extra = _command(server, port)
    if how == "flag":
        argv.append("--allow-unauthenticated")
    elif how == "environment":
        extra["ATELIER_ALLOW_UNAUTHENTICATED"] = "true"
    else:
        extra["ATELIER_AUTH"] = "accounts"
    log = tmp_path / "server.log"
    with serving(argv, f"http://127.0.0.1:{port}{READY_PATH[server]}", log, cwd=ROOT, timeout=120,
                 env=_env(tmp_path, machine_pg_url, **extra)):
        assert _listens_on_every_address(port), log.read_text()
        said = log.read_text()
    if how == "accounts":
        assert WARNING not in said and REFUSAL not in said, said
    else:
        assert WARNING in said and "ATELIER_AUTH=accounts" in said, said
