"""The chat's Gradio API through gradio_client: named endpoints, a streamed answer, an image, approval, the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chat_server import ServerThread, chat_settings, message_files, message_text
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.slow


def test_the_chat_through_gradio_client(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from gradio_client import Client

    fake_ollama.script("llama3.2", [
        "Terracotta and cream sit well beside sage green.",
        json.dumps({"briefs": [{"purpose": p, "subject": f"a linen lamp, {p}"}
                               for p in ("hero", "lifestyle", "detail", "thumbnail")]}),
    ])
    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    with ServerThread(settings, machine_pg_url) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/chat", "/approve", "/reject", "/search_images", "/jobs", "/cancel_job", "/retry_job",
                "/open_conversation", "/rate"} <= named

        job = client.submit("Which colours go well with a sage green kitchen?", [], "", "auto", "auto",
                            api_name="/chat")
        final = job.result(timeout=60)
        history = final[1]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert message_text(history[1]) == "Terracotta and cream sit well beside sage green."
        streamed = [message_text(update[1][-1]) for update in job.outputs() if len(update[1]) == 2]
        assert len(set(streamed)) > 2, "the answer arrives in pieces, not at once"

        # The conversation lives on the server (the client's session keeps its thread): send only new turns.
        job = client.submit("draw a paper boat on a pond", [], "", "auto", "auto", api_name="/chat")
        history = job.result(timeout=90)[1]
        picture = history[-1]
        assert message_text(picture).startswith("Done:") and "paper boat on a pond" in message_text(picture)
        files = message_files(picture)
        assert files and Path(files[0]).read_bytes().startswith(b"\x89PNG")

        paused = client.predict("Plan a launch: hero, lifestyle, detail and thumbnail images of a linen lamp",
                                [], "", "auto", "auto", api_name="/chat")
        assert "Generate these images?" in paused[-1]
        approved = client.predict(paused[1], "", "auto", "auto", api_name="/approve")
        done = [m for m in approved[0] if message_text(m).startswith("Done:")]
        assert len(done) == 4

        rows = client.predict(api_name="/jobs")
        assert len(rows["data"]) == 5 and {row[1] for row in rows["data"]} == {"succeeded"}
        again = client.predict(rows["data"][0][0], api_name="/retry_job")
        assert "queued again" in again[1]
        client.close()


def test_a_conversation_comes_back_after_a_restart(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    import psycopg
    from gradio_client import Client

    fake_ollama.script("llama3.2", ["Linen and oak."])
    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    with ServerThread(settings, machine_pg_url) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "first"))
        client.predict("Which materials suit a quiet bedroom?", [], "", "auto", "auto", api_name="/chat")
        client.predict("draw a linen lamp", [], "", "auto", "auto", api_name="/chat")
        client.close()
    with psycopg.connect(machine_pg_url) as conn:
        row = conn.execute("SELECT id, title FROM chat_threads").fetchone()
    assert row is not None and row[1] == "Which materials suit a quiet bedroom?"

    with ServerThread(settings, machine_pg_url) as url:  # a new process's worth of services on the same database
        client = Client(url, verbose=False, download_files=str(tmp_path / "second"))
        history = client.predict(row[0], api_name="/open_conversation")[0]  # (chat, approval text)
        client.close()
    texts = [message_text(m) for m in history]
    assert texts[:2] == ["Which materials suit a quiet bedroom?", "Linen and oak."]
    assert texts[-1].startswith("Done:") and "linen lamp" in texts[-1]
    assert Path(message_files(history[-1])[0]).read_bytes().startswith(b"\x89PNG")
