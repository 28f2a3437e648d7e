"""The `showcase` graph served by `langgraph dev`, through langgraph_sdk: approval as an interrupt, progress across the
set on the custom stream, and the gallery served by the job API the server mounts (an `atelier worker` renders)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_langgraph_server import langgraph_dev
from tests.serving import serving
from tests.showcases import COPY, PLAN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_the_served_showcase_streams_progress_and_its_gallery_is_served(
    machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama
) -> None:
    from langgraph_sdk import get_sync_client

    fake_ollama.script("llama3.2", [json.dumps(PLAN), json.dumps(COPY)])
    env = {"DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "data"), "COMFYUI_URLS": fake_comfy.url,
           "OLLAMA_URL": fake_ollama.url, "ATELIER_AUTH": "local", "ATELIER_APPROVAL_COST": "0.02"}
    port = free_port()
    worker = [str(Path(sys.executable).with_name("atelier")), "worker", "--metrics-port", str(port)]
    with (langgraph_dev(env, tmp_path) as server,
          serving(worker, f"http://127.0.0.1:{port}/metrics", tmp_path / "worker.log", env={**os.environ, **env})):
        client = get_sync_client(url=server)
        thread = client.threads.create()["thread_id"]
        brief: Any = {"messages": [{"role": "user", "content": "A showcase for our copper espresso cup"}]}
        client.runs.wait(thread, "showcase", input=brief)
        state: Any = client.threads.get_state(thread)
        asked = state["tasks"][0]["interrupts"][0]["value"]
        assert state["next"] == ["approve"] and asked["estimate"]["images"] == 4

        progress = []
        for part in client.runs.stream(thread, "showcase", command={"resume": {"action": "approve"}},
                                       stream_mode="custom"):
            if part.event == "custom":
                progress.append((part.data["stage"], part.data["done"], part.data["total"]))
        assert progress[0] == ("images", 0, 6) and progress[-1] == ("done", 6, 6)
        assert ("images", 4, 6) in progress and ("gallery", 5, 6) in progress

        after: Any = client.threads.get_state(thread)
        values = after["values"]
        showcase = values["showcase"]
        assert showcase["status"] == "ready" and values["messages"][-1]["content"].startswith("Your showcase is ready")
        page = httpx.get(f"{server}/showcases/{showcase['id']}/page", timeout=10)
        assert page.status_code == 200 and page.text.count("data:image/png;base64,") == 4
        assert "sandbox" in page.headers["content-security-policy"]
        listed = httpx.get(f"{server}/showcases", timeout=10).json()
        assert [s["id"] for s in listed] == [showcase["id"]] and listed[0]["images"] == 4
