"""The fake ComfyUI answers like the real one in the captures: same bodies, same message order."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests import reference
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio
TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}


def _types(messages: list[dict[str, Any]], prompt_id: str) -> list[str]:
    """Message types of one prompt, without the elided progress_state noise."""
    return [m["type"] for m in messages
            if m["type"] != "progress_state" and (m.get("data") or {}).get("prompt_id") == prompt_id]


async def _run(fake: FakeComfyUI, request: dict[str, Any], *, interrupt_after: int | None = None) -> tuple[str, list]:
    """POST a transcript request on a fresh socket; collect the prompt's JSON messages until terminal."""
    client_id = uuid.uuid4().hex
    messages: list[dict[str, Any]] = []
    async with connect(f"{fake.ws_url}?clientId={client_id}") as ws, httpx.AsyncClient(base_url=fake.url) as http:
        body = {**request, "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        progress = 0
        while True:
            raw = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(raw, bytes):
                continue
            message = json.loads(raw)
            messages.append(message)
            if message["type"] == "progress":
                progress += 1
                if progress == interrupt_after:
                    await http.post("/interrupt", json={"prompt_id": prompt_id})
            if message["type"] in TERMINAL and message["data"].get("prompt_id") == prompt_id:
                return prompt_id, messages


@pytest.mark.parametrize("label", ["success", "execution_error"])
async def test_message_sequence_matches_the_transcript(tmp_path: Path, label: str) -> None:
    record = reference.http(label, "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        prompt_id, messages = await _run(fake, {"prompt": record["request"]["prompt"]})
        history = httpx.get(f"{fake.url}/history/{prompt_id}").json()[prompt_id]
    real_id = record["response"]["prompt_id"]
    assert _types(messages, prompt_id) == _types(reference.ws_messages(label), real_id)
    real_history = reference.http(label, "GET", "/history/{prompt_id}")["response"]
    assert history["status"]["status_str"] == real_history["status"]["status_str"]
    assert [m[0] for m in history["status"]["messages"]] == [m[0] for m in real_history["status"]["messages"]]
    assert set(history) == {"prompt", "outputs", "status", "meta"}


async def test_interrupt_sequence_matches_the_transcript(tmp_path: Path) -> None:
    record = reference.http("interrupt", "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        prompt_id, messages = await _run(fake, {"prompt": record["request"]["prompt"]}, interrupt_after=3)
    real = _types(reference.ws_messages("interrupt"), record["response"]["prompt_id"])
    assert _types(messages, prompt_id) == real
    assert messages[-1]["data"]["node_type"] == "ProbeTextToImage"


async def test_late_executing_null_follows_the_end(tmp_path: Path) -> None:
    record = reference.http("success", "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        client_id = uuid.uuid4().hex
        async with connect(f"{fake.ws_url}?clientId={client_id}") as ws:
            httpx.post(f"{fake.url}/prompt", json={"prompt": record["request"]["prompt"], "client_id": client_id})
            seen = []
            while not seen or seen[-1] != ("executing", None):
                raw = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(raw, str):
                    data = json.loads(raw)
                    seen.append((data["type"], data["data"].get("node", "-")))
    assert seen.index(("execution_success", "-")) < seen.index(("executing", None))


@pytest.mark.parametrize(
    "label", ["validation_error_missing_link", "validation_error_out_of_range", "unknown_node", "no_output_node"]
)
async def test_validation_answers_match_the_transcript(tmp_path: Path, label: str) -> None:
    record = reference.http(label, "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        answer = httpx.post(f"{fake.url}/prompt", json=record["request"])
    assert answer.status_code == record["status"] == 400
    body, real = answer.json(), record["response"]
    assert body["error"]["type"] == real["error"]["type"] and body["error"]["message"] == real["error"]["message"]
    assert body["error"]["details"] == real["error"]["details"]
    for node, entry in real["node_errors"].items():
        mine = body["node_errors"][node]
        assert mine["class_type"] == entry["class_type"]
        assert [(e["type"], e["message"], e["details"]) for e in mine["errors"]] == [
            (e["type"], e["message"], e["details"]) for e in entry["errors"]]
    assert set(body["node_errors"]) == set(real["node_errors"])


async def test_missing_checkpoint_is_byte_for_byte(tmp_path: Path) -> None:
    capture = reference.captures()["txt2img_missing_checkpoint"]
    with FakeComfyUI(models={}, output_dir=tmp_path) as fake:
        answer = httpx.post(f"{fake.url}/prompt", json=capture["request"]["body"])
    assert answer.status_code == 400
    assert answer.text == capture["response"]["body_raw"]


async def test_malformed_json_and_view_guards(tmp_path: Path) -> None:
    with FakeComfyUI(output_dir=tmp_path) as fake:
        bad = httpx.post(f"{fake.url}/prompt", content=b"{nope")
        assert (bad.status_code, bad.text) == (500, reference.http("malformed_json")["response"])
        for record in (r for r in reference.transcript() if r["kind"] == "http" and r["label"] == "view-bad"):
            assert httpx.get(f"{fake.url}/view", params=record["params"]).status_code == record["status"]


async def test_prompt_id_reuse_runs_twice_and_the_second_is_cached(tmp_path: Path) -> None:
    request = reference.captures()["prompt_id_reuse"]["steps"][0]["request"]["body"]
    with FakeComfyUI(output_dir=tmp_path) as fake:
        first = httpx.post(f"{fake.url}/prompt", json=request).json()
        second = httpx.post(f"{fake.url}/prompt", json=request).json()
        assert first["prompt_id"] == second["prompt_id"] == request["prompt_id"]
        assert second["number"] == first["number"] + 1
        for _ in range(200):
            if fake.execution_counts[request["prompt_id"]] == 2 and not httpx.get(f"{fake.url}/queue").json()[
                    "queue_pending"]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        entry = httpx.get(f"{fake.url}/history/{request['prompt_id']}").json()[request["prompt_id"]]
    cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
    assert sorted(cached) == ["1", "2"]
    assert len(list((tmp_path / "output").glob("*.png"))) == 1  # no new file for the cached run


async def test_restart_forgets_queue_and_history_but_files_stay(tmp_path: Path) -> None:
    record = reference.http("success", "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        prompt_id, _ = await _run(fake, {"prompt": record["request"]["prompt"]})
        image = httpx.get(f"{fake.url}/history/{prompt_id}").json()[prompt_id]["outputs"]["9"]["images"][0]
        fake.restart(down_seconds=0.2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{fake.url}/queue")
        await asyncio.sleep(0.4)
        assert httpx.get(f"{fake.url}/history/{prompt_id}").json() == {}
        assert httpx.get(f"{fake.url}/queue").json() == {"queue_running": [], "queue_pending": []}
        assert httpx.get(f"{fake.url}/view", params=image).status_code == 200


async def test_other_clients_do_not_receive_a_prompts_messages(tmp_path: Path) -> None:
    record = reference.http("success", "POST", "/prompt")
    with FakeComfyUI(output_dir=tmp_path) as fake:
        async with connect(f"{fake.ws_url}?clientId=bystander") as other:
            await other.recv()  # its own status greeting
            await _run(fake, {"prompt": record["request"]["prompt"]})
            received = []
            while True:
                try:
                    received.append(json.loads(await asyncio.wait_for(other.recv(), 0.2)))
                except TimeoutError:
                    break
    assert received and {m["type"] for m in received} == {"status"}


async def test_http_controls_and_api_prefix(tmp_path: Path) -> None:
    with FakeComfyUI(output_dir=tmp_path) as fake:
        assert httpx.get(f"{fake.url}/api/system_stats").json() == httpx.get(f"{fake.url}/system_stats").json()
        assert httpx.post(f"{fake.url}/__fake__/pause").json() == {"ok": True}
        httpx.post(f"{fake.url}/prompt", json={"prompt": reference.http("success", "POST")["request"]["prompt"]})
        await asyncio.sleep(0.1)
        assert len(httpx.get(f"{fake.url}/queue").json()["queue_pending"]) == 1
        httpx.post(f"{fake.url}/queue", json={"clear": True})
        assert httpx.get(f"{fake.url}/queue").json()["queue_pending"] == []
        assert httpx.get(f"{fake.url}/__fake__/execution_counts").json() == {}
        assert httpx.get(f"{fake.url}/models").json() == reference.http("info", "GET", "/models")["response"]
