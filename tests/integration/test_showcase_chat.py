"""The Gallery tab's product photo through the chat server's Gradio queue: a photo the person uploads is kept as an
input image; a server path handed in its place (another user's output, any local file) is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.chat_server import ServerThread, chat_settings


def _completed(base: str, api_name: str, data: list[Any]) -> dict[str, Any]:
    """Join the queue for a named event with raw `data` (no client-side upload) and read its outcome."""
    config = httpx.get(base + "config", timeout=10).json()
    fn = next(d.get("id", i) for i, d in enumerate(config["dependencies"]) if d.get("api_name") == api_name)
    session = "showcase-photo-test"
    joined = httpx.post(base + "gradio_api/queue/join", timeout=10,
                        json={"data": data, "fn_index": fn, "session_hash": session, "event_data": None,
                              "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", base + "gradio_api/queue/data", params={"session_hash": session}, timeout=60) as events:
        for line in events.iter_lines():
            if line.startswith("data:") and "process_completed" in line:
                message: dict[str, Any] = json.loads(line.removeprefix("data:"))
                return message
    raise AssertionError("the event never completed")


def test_only_an_uploaded_photo_becomes_the_showcases_input(machine_pg_url: str, tmp_path: Path,
                                                            closed_port_url: str) -> None:
    from gradio_client import Client, handle_file

    settings = chat_settings(tmp_path, closed_port_url, closed_port_url, machine_pg_url)
    settings.outputs.mkdir(parents=True, exist_ok=True)
    theirs = settings.outputs / "someone-elses-image.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(theirs)
    inputs = settings.data_dir / "inputs"
    with ServerThread(settings, machine_pg_url, worker=False) as base:
        refused = _completed(base, "make_showcase",
                             ["a copper cup", {"path": str(theirs), "meta": {"_type": "gradio.FileData"}}])
        assert not refused["success"] and "it was not uploaded by a user" in refused["output"]["error"]
        assert not inputs.exists() or list(inputs.iterdir()) == []

        mine = tmp_path / "my-cup.png"
        Image.new("RGB", (48, 32), (184, 115, 51)).save(mine)
        Client(base, verbose=False).predict("a copper cup", handle_file(str(mine)), api_name="/make_showcase")
        assert [p.suffix for p in inputs.iterdir()] == [".png"], "the uploaded photo is kept as an input image"
