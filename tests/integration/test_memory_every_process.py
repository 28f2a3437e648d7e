"""One memory for every process: the chat (`python app.py`), `langgraph dev` and `atelier ingest` run at once on
embedded defaults (no DATABASE_URL, no QDRANT_URL) and share it: the document the CLI ingests while both servers
run is cited by the LangGraph server (through langgraph_sdk) and by the chat (through gradio_client), and the
shared embedded PostgreSQL stops once the last of them exits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from atelier.tools.ledger.database import embedded_status, stop_embedded
from atelier.tools.settings import Settings, load_settings
from tests.chat_server import free_port, message_text
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "atelier.cli.main"]
DOCUMENT = ROOT / "tests" / "data" / "corpus" / "sourdough.md"
QUESTION = "According to my documents, how often should I feed the sourdough starter?"
PASSAGE = "Feed the starter once a day"  # a sentence of DOCUMENT: the retrieved passage sent to the model
START_SECONDS = 150.0  # both servers cold-start the embedding model and the embedded PostgreSQL on 2 shared cores
STOP_SECONDS = 30.0


@contextmanager
def _process(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` from the repository root (its output into `log_path`) until the block ends, then stop it.

    Stopping is SIGTERM (a normal exit, which deregisters from the embedded PostgreSQL), SIGKILL only if it lingers.
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=ROOT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _tail(path: Path, chars: int = 3000) -> str:
    """The end of a log, for failure messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _wait_until_all_answer(servers: Mapping[str, tuple[subprocess.Popen[bytes], str, Path]]) -> None:
    """Wait until every server's probe answers 200; fail quoting its log if one exits or the deadline passes."""
    pending = dict(servers)
    deadline = time.monotonic() + START_SECONDS
    while pending:
        for name, (proc, probe, log) in list(pending.items()):
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode}) before answering {probe}:\n{_tail(log)}")
            try:
                if httpx.get(probe, timeout=2).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if pending and time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {name} ({probe}):\n{_tail(log)}" for name, (_, probe, log) in pending.items())
            pytest.fail(f"not answering after {START_SECONDS:g} s: {', '.join(pending)}\n{logs}")
        time.sleep(0.25)


def _environment(data_dir: Path, comfy_url: str, ollama_url: str) -> dict[str, str]:
    """Embedded defaults: this process's environment without any Atelier, database, Qdrant or Gradio setting."""
    dropped = ("ATELIER_", "DATABASE_URL", "QDRANT_", "GRADIO_SERVER_", "COMFYUI_URL", "OLLAMA_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return env | {
        "ATELIER_AUTH": "local", "ATELIER_DATA_DIR": str(data_dir), "COMFYUI_URLS": comfy_url,
        "OLLAMA_URL": ollama_url, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "HF_HUB_OFFLINE": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }


def _stopped(settings: Settings) -> bool:
    """Wait (up to STOP_SECONDS) for the embedded PostgreSQL of settings' data folder to stop; whether it did."""
    deadline = time.monotonic() + STOP_SECONDS
    while embedded_status(settings).running or _postmasters(settings):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _postmasters(settings: Settings) -> list[int]:
    """Pids of live postgres processes serving this data folder's embedded PostgreSQL."""
    pgdata = str((settings.data_dir / "postgres").resolve())
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if (proc.info["name"] == "postgres" and proc.info["status"] != psutil.STATUS_ZOMBIE
                and pgdata in " ".join(proc.info["cmdline"] or [])):
            found.append(proc.pid)
    return found


def _ask_server(url: str, thread_id: str, text: str) -> str:
    """One supervisor turn on the LangGraph server through langgraph_sdk; the last message's text."""
    from langgraph_sdk import get_sync_client

    ask: Any = {"messages": [{"role": "user", "content": text}]}
    result = get_sync_client(url=url, timeout=120).runs.wait(thread_id, "supervisor", input=ask)
    assert isinstance(result, dict) and result.get("messages"), result
    return str(result["messages"][-1]["content"])


def test_chat_langgraph_server_and_ingest_share_one_memory_on_embedded_defaults(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    from gradio_client import Client
    from langgraph_sdk import get_sync_client

    data_dir = tmp_path / "data"
    env = _environment(data_dir, fake_comfy.url, fake_ollama.url)
    settings = load_settings(data_dir=data_dir, database_url=None)
    chat_port, server_port = free_port(), free_port()
    chat_url, server_url = f"http://127.0.0.1:{chat_port}", f"http://127.0.0.1:{server_port}"
    chat_log, server_log = tmp_path / "chat.log", tmp_path / "langgraph.log"
    langgraph = [str(Path(sys.executable).parent / "langgraph"), "dev", "--port", str(server_port), "--no-browser",
                 "--no-reload"]
    try:
        with ExitStack() as running:
            # Both start at once, as the README's two commands do: they race to start the one embedded server.
            chat_env = env | {"GRADIO_SERVER_PORT": str(chat_port)}
            chat = running.enter_context(_process([sys.executable, "app.py"], chat_env, chat_log))
            server = running.enter_context(_process(langgraph, env, server_log))
            _wait_until_all_answer({"the chat (app.py)": (chat, f"{chat_url}/api/health", chat_log),
                                    "langgraph dev": (server, f"{server_url}/ok", server_log)})

            thread = get_sync_client(url=server_url).threads.create()["thread_id"]
            before = _ask_server(server_url, thread, QUESTION)
            assert "found nothing" in before, f"the server's memory is open and empty before the ingest: {before}"

            ingest = subprocess.run([*CLI, "ingest", str(DOCUMENT)], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=120)
            said = ingest.stdout + ingest.stderr
            assert ingest.returncode == 0, f"atelier ingest failed beside the chat and langgraph dev:\n{said}"
            counts = re.search(r"1 file\(s\), (\d+) chunk\(s\): (\d+) new, 0 already in the memory", ingest.stdout)
            assert counts and int(counts[2]) == int(counts[1]) > 0, said
            status = embedded_status(settings)
            assert status.running and sorted(status.user_pids) == sorted([chat.pid, server.pid]), (
                f"the ingest left and the two servers still share the embedded PostgreSQL: {status}")

            fake_ollama.clear_requests()
            fake_ollama.script("llama3.2", ["Feed it once a day with equal weights of flour and water [1]."])
            answer = _ask_server(server_url, thread, QUESTION)
            assert answer.startswith("Feed it once a day"), f"{answer}\n--- langgraph dev:\n{_tail(server_log)}"
            sources = answer.split("Sources:\n", 1)
            assert len(sources) == 2 and "sourdough.md" in sources[1], f"no citation of the document: {answer}"
            prompts = [str(body) for method, path, body in fake_ollama.requests if path == "/api/chat"]
            assert any(PASSAGE in prompt for prompt in prompts), "the ingested passage went to the model"

            fake_ollama.script("llama3.2", ["Once a day, flour and water in equal weights [1]."])
            client = Client(f"{chat_url}/", verbose=False, download_files=str(tmp_path / "downloads"))
            try:
                history = client.predict(QUESTION, [], "", "auto", "auto", api_name="/chat")[1]
            finally:
                client.close()
            reply = message_text(history[-1])
            assert reply.startswith("Once a day") and "Sources:" in reply and "sourdough.md" in reply, (
                f"the chat does not cite the document the CLI ingested: {reply}\n--- chat:\n{_tail(chat_log)}")
            assert httpx.get(f"{chat_url}/", timeout=10).status_code == 200
            assert chat.poll() is None and server.poll() is None, "both servers still run"
            for proc in (chat, server):  # SIGTERM to both at once; leaving the block waits for them
                proc.terminate()
        killed = [name for name, proc in (("the chat", chat), ("langgraph dev", server)) if proc.returncode == -9]
        assert not killed, f"{killed} ignored SIGTERM for {STOP_SECONDS:g} s and had to be killed"
        assert _stopped(settings), (
            f"the embedded PostgreSQL still runs after every Atelier process stopped: {embedded_status(settings)}, "
            f"postgres pids {_postmasters(settings)}\n--- chat:\n{_tail(chat_log)}\n--- langgraph dev:\n"
            f"{_tail(server_log)}")
    finally:
        if embedded_status(settings).running:  # a failed run must not leave a server behind
            stop_embedded(settings, force=True)
