"""`langgraph dev` serves the graphs of langgraph.json; runs through langgraph_sdk reach the ledger and ComfyUI."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakes.comfyui_server import FakeComfyUI
from tests.serving import serving

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def langgraph_dev(env: Mapping[str, str], folder: Path) -> Iterator[str]:
    """`langgraph dev` on a free port (no reload, no browser, offline) with `env` added; yields its URL, then stops.

    Its output goes to `folder`/langgraph.log (quoted when it exits early).
    """
    port = free_port()
    full_env = os.environ | {"LANGGRAPH_NO_VERSION_CHECK": "true", "LANGGRAPH_CLI_NO_ANALYTICS": "1"} | dict(env)
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "langgraph"), "dev", "--port", str(port), "--no-browser",
               "--no-reload"]
    with serving(command, f"{url}/ok", folder / "langgraph.log", env=full_env, cwd=ROOT, ready=200, timeout=90):
        yield url


@pytest.fixture
def server(machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI) -> Iterator[str]:
    """`langgraph dev` in local mode, with our checkpointer and settings."""
    env = {"DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "data"), "COMFYUI_URLS": fake_comfy.url,
           "ATELIER_AUTH": "local"}
    with langgraph_dev(env, tmp_path) as url:
        yield url


def test_the_server_runs_the_supervisor_and_keeps_threads_in_postgres(server: str, machine_pg_url: str) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    assert {a["graph_id"] for a in client.assistants.search()} >= {"supervisor", "showcase", "generate"}
    thread = client.threads.create()
    ask: Any = {"messages": [{"role": "user", "content": "Generate a red fox in the snow"}], "owner": "sdk"}
    first = client.runs.wait(thread["thread_id"], "supervisor", input=ask)
    assert isinstance(first, dict) and first["messages"][-1]["content"].startswith("Queued 1 image(s)")
    cost: Any = {"messages": [{"role": "user", "content": "How much would 3 hero images cost?"}]}
    second = client.runs.wait(thread["thread_id"], "supervisor", input=cost)
    assert isinstance(second, dict) and "txt2img-hq" in second["messages"][-1]["content"]
    assert [m["type"] for m in second["messages"]] == ["human", "ai", "human", "ai"]
    with psycopg.connect(machine_pg_url) as conn:
        jobs = conn.execute("SELECT owner, workflow FROM jobs").fetchall()
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s",
                                   (thread["thread_id"],)).fetchone()
    assert jobs == [("local", "txt2img")]  # the input's owner means nothing: local mode acts as the local user
    mounted = httpx.get(f"{server}/jobs", params={"owner": "local"}, timeout=10)  # the job API on the same server
    assert mounted.status_code == 200 and [j["owner"] for j in mounted.json()] == ["local"]
    from websockets.sync.client import connect

    events_url = server.replace("http://", "ws://") + f"/jobs/{mounted.json()[0]['id']}/events?previews=none"
    with connect(events_url, open_timeout=10) as socket:  # the events socket is served there too
        first = json.loads(socket.recv(timeout=10))
    assert first["type"] == "status" and first["status"] == "queued"
    assert checkpoints is not None and checkpoints[0] > 0, "the thread lives in our PostgreSQL"

    # A request for options is one result in the run's state: the earlier images (this server's PostgreSQL has no
    # pgvector, which the reply says) and the new variations' jobs, as many as the run's config asks for.
    options: Any = {"messages": [{"role": "user", "content": "show me options similar to my red fox"}]}
    found = client.runs.wait(thread["thread_id"], "supervisor", input=options,
                             config={"configurable": {"variations": 2, "similar": 5}})
    assert isinstance(found, dict) and found["intent"] == "images" and len(found["jobs"]) == 2
    assert found["options"] == {"query": "my red fox", "earlier": [], "variations": 2}
    assert "cannot search your earlier images right now" in found["messages"][-2]["content"]


def test_the_server_runs_the_generate_graph_against_comfyui(server: str) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    result = client.runs.wait(None, "generate", input={"params": {"prompt": "a kite", "seed": 3, "steps": 2}})
    assert isinstance(result, dict)
    images = result["result"]["images"]
    assert len(images) == 1 and Path(images[0]["path"]).read_bytes().startswith(b"\x89PNG")
