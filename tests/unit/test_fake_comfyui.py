"""The fake ComfyUI answers like the captured real one (0.3.64): same bodies, same WebSocket messages, same order."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.comfyui_catalog import gpu_device
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.fake_gpu import GIB, FakeGpu

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).resolve().parents[1] / "fakes" / "data"
TRANSCRIPT: list[dict[str, Any]] = json.loads((DATA / "comfyui-transcript.json").read_text())["records"]
CAPTURES: dict[str, Any] = json.loads((DATA / "comfyui-captures-2.json").read_text())
TRANSCRIPT_CLIENT = TRANSCRIPT[0]["message"]["data"]["sid"]
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


# --- helpers ----------------------------------------------------------------------------------------------------


def http_record(label: str, method: str, path: str) -> dict[str, Any]:
    return next(r for r in TRANSCRIPT if r["kind"] == "http" and (r["label"], r["method"], r["path"]) == (
        label, method, path))


def strip(value: Any, ids: dict[str, str] | None = None) -> Any:
    """Comparable form: no timestamps, tensors as '<tensor>', current_outputs sorted, ids mapped to ours."""
    if isinstance(value, dict):
        out = {k: strip(v, ids) for k, v in value.items() if k != "timestamp"}
        if isinstance(out.get("current_outputs"), list):
            out["current_outputs"] = sorted(out["current_outputs"])
        if out.get("nodes") and isinstance(out["nodes"], str) and out["nodes"].startswith("<elided"):
            out["nodes"] = "<elided>"
        return out
    if isinstance(value, list):
        return [strip(v, ids) for v in value]
    if isinstance(value, str):
        if "tensor(" in value:
            return "<tensor>"
        return (ids or {}).get(value, value)
    return value


def message_form(message: dict[str, Any], ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A WebSocket message without timestamps; progress_state payloads reduced (the transcript elides them)."""
    data = strip(message["data"], ids)
    if message["type"] == "progress_state":
        data = {"prompt_id": data["prompt_id"], "nodes": "<elided>"}
    return {"type": message["type"], "data": data}


class Reader:
    """Reads one socket in the background: JSON messages in a queue, binary frames in a list (with position)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.binary: list[tuple[int, bytes]] = []
        self.closed: ConnectionClosed | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    self.binary.append((len(self.seen), raw))
                else:
                    message = json.loads(raw)
                    self.seen.append(message)
                    self.messages.put_nowait(message)
        except ConnectionClosed as closed:
            self.closed = closed

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while not got or not done(got[-1]):
            got.append(await self.next(timeout))
        return got

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within `seconds`."""
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(await self.next(seconds))
        return got


def ends(prompt_id: str) -> Callable[[dict[str, Any]], bool]:
    """The late `executing {node: null}` that closes a prompt."""
    return lambda m: m["type"] == "executing" and m["data"] == {"node": None, "prompt_id": prompt_id}


@contextlib.asynccontextmanager
async def socket_for(fake: FakeComfyUI, client_id: str) -> AsyncIterator[Reader]:
    async with connect(f"{fake.ws_url}?clientId={client_id}", max_size=None) as ws:
        reader = Reader(ws)
        yield reader
        reader.task.cancel()


async def start_running(fake: FakeComfyUI, reader: Reader, client_id: str, **probe_args: Any) -> str:
    """Read the greeting, submit a probe prompt for this client and wait for its first step; return its id."""
    await reader.next()
    body = {"prompt": probe(**probe_args), "client_id": client_id}
    prompt_id: str = httpx.post(f"{fake.url}/prompt", json=body).json()["prompt_id"]
    await reader.until(lambda m: m["type"] == "progress")
    return prompt_id


def wait_history(fake: FakeComfyUI, prompt_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /history/{id} until the entry is there (ComfyUI writes it just after execution_success)."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{fake.url}/history/{prompt_id}").json()
        if body or time.monotonic() > deadline:
            return dict(body.get(prompt_id, {}))
        time.sleep(0.01)


def png_chunks(data: bytes) -> list[tuple[str, bytes]]:
    chunks, offset = [], 8
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        chunks.append((data[offset + 4:offset + 8].decode(), data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


def text_chunks(data: bytes) -> dict[str, str]:
    return {body.split(b"\0", 1)[0].decode(): body.split(b"\0", 1)[1].decode("latin-1")
            for kind, body in png_chunks(data) if kind == "tEXt"}


def png_bytes(size: tuple[int, int] = (24, 16), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def sd_graph(*, seed: int = 1, width: int = 64, height: int = 48, batch: int = 1, steps: int = 3,
             prefix: str = "ComfyUI", ckpt: str = "v1-5-pruned-emaonly.safetensors") -> dict[str, Any]:
    """The standard text-to-image graph (as the missing-checkpoint capture), small."""
    graph: dict[str, Any] = copy.deepcopy(CAPTURES["txt2img_missing_checkpoint"]["request"]["body"]["prompt"])
    graph["3"]["inputs"].update(seed=seed, steps=steps)
    graph["4"]["inputs"]["ckpt_name"] = ckpt
    graph["5"]["inputs"].update(width=width, height=height, batch_size=batch)
    graph["9"]["inputs"]["filename_prefix"] = prefix
    return graph


def probe(steps: int = 3, step_seconds: float = 0.0, text: str = "a red fox in snow", seed: int = 1) -> dict[str, Any]:
    graph: dict[str, Any] = copy.deepcopy(http_record("success", "POST", "/prompt")["request"]["prompt"])
    graph["1"]["inputs"].update(steps=steps, step_seconds=step_seconds, text=text, seed=seed)
    return graph


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(output_dir=tmp_path, step_seconds=0.005) as server:
        yield server


# --- the transcript, replayed record by record -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_replaying_the_transcript_gives_the_same_answers_and_messages(tmp_path: Path) -> None:
    """Every record in order: success, execution_error, interrupt, validation, /view guards, upload, info."""
    ids: dict[str, str] = {}  # the real server's prompt ids → ours
    with FakeComfyUI(output_dir=tmp_path) as fake, httpx.Client(base_url=fake.url) as http:
        async with socket_for(fake, TRANSCRIPT_CLIENT) as reader:
            for record in TRANSCRIPT:
                if record["kind"] == "ws":
                    expected = message_form(record["message"], ids)
                    got = message_form(await reader.next(), ids)
                    if expected["type"] == "execution_interrupted":  # the interrupt may land one step later
                        while got["type"] in ("progress_state", "progress"):
                            assert got["type"] == "progress_state" or got["data"]["value"] <= 4
                            got = message_form(await reader.next(), ids)
                    assert got == expected, record
                    continue
                await asyncio.to_thread(replay_http, fake, http, record, ids)
    successes = [i for i, m in enumerate(reader.seen) if m["type"] == "execution_success"]
    late = reader.seen[successes[0] + 1: successes[0] + 3]  # after success: the status update, then node null
    assert [m["type"] for m in late] == ["status", "executing"] and late[1]["data"]["node"] is None
    frames = [(pos, frame) for pos, frame in reader.binary if pos <= successes[0]]
    assert len(frames) == 3, "one preview per step"
    assert all(frame[:8] == struct.pack(">II", 1, 1) and frame[8:10] == b"\xff\xd8" for _, frame in frames)


def replay_http(fake: FakeComfyUI, http: httpx.Client, record: dict[str, Any], ids: dict[str, str]) -> None:
    """Send one transcript HTTP record to the fake and compare the answer."""
    label, method, path = record["label"], record["method"], record["path"]
    if method == "POST" and path == "/prompt" and "request" in record:
        answer = http.post(path, json={**record["request"], "client_id": TRANSCRIPT_CLIENT})
        assert answer.status_code == record["status"]
        if answer.status_code == 200:
            ids[record["response"]["prompt_id"]] = answer.json()["prompt_id"]
            assert answer.json() == {**record["response"], "prompt_id": answer.json()["prompt_id"]}
        else:
            assert answer.json() == record["response"]
    elif path == "/prompt" and method == "POST":  # malformed JSON
        answer = http.post(path, content=b'{"prompt": {', headers={"content-type": "application/json"})
        assert (answer.status_code, answer.text) == (500, record["response"])
        assert answer.headers["content-type"].startswith("text/plain")
    elif path == "/history/{prompt_id}":
        prompt_id = ids[next(k for k in ids if k in json.dumps(record["response"]))]
        entry = wait_history(fake, prompt_id)
        assert list(entry) == ["prompt", "outputs", "status", "meta"]
        assert strip({k: v for k, v in entry.items() if k != "prompt"}) == strip(record["response"], ids)
    elif path == "/view":
        answer = http.get(path, params=record["params"])
        assert answer.status_code == record["status"]
        if answer.status_code == 200:
            assert answer.headers["content-type"] == record["content_type"]
            assert answer.headers["content-disposition"] == f'filename="{record["params"]["filename"]}"'
            image = Image.open(io.BytesIO(answer.content))
            assert image.format == "PNG" and image.size == (32, 32)
            prompt = json.loads(image.info["prompt"])
            assert prompt == http_record("success", "POST", "/prompt")["request"]["prompt"]
            assert "workflow" not in image.info
        else:
            assert answer.content == b""
    elif path == "/queue" and method == "GET" and label == "interrupt":
        body = http.get(path).json()
        assert [len(body["queue_running"]), len(body["queue_pending"])] == record["sample_len"]
        [running] = body["queue_running"]
        assert running[1] in ids.values() and running[3] == {"client_id": TRANSCRIPT_CLIENT}
        assert running[4] == ["9"] and running[0] == 2
    elif path == "/interrupt":
        answer = http.post(path, json={"prompt_id": ids[record["request"]["prompt_id"]]})
        assert (answer.status_code, answer.text) == (record["status"], record["response"])
    elif path == "/upload/image":
        answer = http.post(path, data={k: v for k, v in record["form"].items() if k != "image"},
                           files={"image": ("ref.png", png_bytes())})
        assert answer.status_code == record["status"] and answer.json() == record["response"]
    elif path == "/api/system_stats":
        assert http.get(path).json() == http.get("/system_stats").json()
    elif path == "/history?max_items=1":
        body = http.get(path).json()
        assert list(body) == [ids[k] for k in record["response"]]
        assert strip({k: {f: v for f, v in e.items() if f != "prompt"} for k, e in body.items()}) == strip(
            {ids[k]: v for k, v in record["response"].items()}, ids)
    elif method == "GET":
        assert http.get(path).json() == record["response"]
    else:  # POST /free, POST /queue {clear}
        answer = http.post(path, json=record.get("request", {}))
        assert (answer.status_code, answer.text) == (record["status"], record["response"])


# --- the second captures: missing checkpoint, prompt_id reuse, restart ----------------------------------------------


@pytest.mark.asyncio
async def test_captures_replayed_missing_checkpoint_reuse_workflow_chunk_and_restart(tmp_path: Path) -> None:
    missing, reuse, restart = CAPTURES["txt2img_missing_checkpoint"], CAPTURES["prompt_id_reuse"], CAPTURES["restart"]
    steps = reuse["steps"]
    prompt_id = reuse["chosen_prompt_id"]
    with FakeComfyUI(models={}, output_dir=tmp_path) as fake, httpx.Client(base_url=fake.url) as http:
        async with socket_for(fake, reuse["client_id"]) as reader:
            answer = http.post("/prompt", json=missing["request"]["body"])  # byte for byte, and it uses number 0
            assert (answer.status_code, answer.text) == (400, missing["response"]["body_raw"])
            assert answer.headers["content-type"] == missing["response"]["content_type"]
            for step in steps[:2]:  # the same prompt_id twice: both accepted, numbers 1 and 2
                answer = http.post("/prompt", json=step["request"]["body"])
                assert (answer.status_code, answer.text) == (200, step["body_raw"])
            queue = http.get("/queue").json()
            expected_items = [[n, *steps[2]["body"]["queue_pending"][0][1:]] for n in (1, 2)]
            assert all(item in expected_items for item in queue["queue_running"] + queue["queue_pending"])
            await reader.until(ends(prompt_id))
            await reader.until(ends(prompt_id))
            expected = [m["msg"] for m in reuse["ws_messages"] if m["kind"] == "text"]
            index = max(i for i, m in enumerate(expected) if m["type"] == "executing" and m["data"]["node"] is None
                        and i < len(expected) - 3)
            not_status = [strip(m) for m in reader.seen if m["type"] != "status"]
            assert not_status == [strip(m) for m in expected[: index + 1] if m["type"] != "status"]
            history = http.get(f"/history/{prompt_id}").json()
            assert strip(history) == strip(steps[3]["body"])  # the second run overwrote the first
            assert list(http.get("/history").json()) == steps[4]["keys"]
            answer = http.post("/prompt", json=steps[5]["request"]["body"])
            assert answer.text == steps[5]["body_raw"]
            await reader.until(ends(prompt_id))
            assert strip(wait_history(fake, prompt_id)) == strip(steps[6]["body"][prompt_id])
        assert fake.execution_counts[prompt_id] == 3
        assert sorted(os.listdir(tmp_path / "output")) == ["capture_00001_.png"]  # cached runs wrote nothing

        view = reuse["view"]
        answer = http.get("/view", params=view["request"]["query"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.headers["content-disposition"] == view["content_disposition"]
        assert answer.content[:32].hex() == view["first_32_bytes_hex"]
        assert [kind for kind, _ in png_chunks(answer.content)] == view["png_chunk_types"]
        assert text_chunks(answer.content) == view["tEXt_values"]
        assert http.get("/view", params={"filename": "nope.png"}).content == b""

        extra = reuse["extra_with_extra_pnginfo_workflow"]
        answer = http.post("/prompt", json=extra["post"]["request"]["body"])
        assert answer.text == extra["post"]["body_raw"]
        extra_id = extra["post"]["body"]["prompt_id"]
        assert strip({extra_id: wait_history(fake, extra_id)}) == strip(extra["history"])
        saved = http.get("/view", params=extra["view"]["query"]).content
        assert [kind for kind, _ in png_chunks(saved)] == extra["view"]["png_chunk_types"]
        assert text_chunks(saved) == extra["view"]["tEXt_values"]

        before = http.get("/view", params=view["request"]["query"]).content
        assert sorted(fake.history) == sorted(restart["history_keys_before_restart"])
        fake.restart()
        for step in restart["steps"]:
            answer = http.get(step["request"]["path"])
            if step["request"]["path"] == "/system_stats":
                assert answer.json()["system"]["comfyui_version"] == step["body"]["system"]["comfyui_version"]
                assert set(answer.json()["devices"][0]) == set(step["body"]["devices"][0])
            else:
                assert (answer.status_code, answer.text) == (step["status"], step["body_raw"])
        after = http.get("/view", params=view["request"]["query"])
        assert after.status_code == 200 and after.content == before


# --- validation beyond the transcript --------------------------------------------------------------------------


def _graph_with(node_id: str, **inputs: Any) -> dict[str, Any]:
    graph = sd_graph()
    graph[node_id]["inputs"].update(inputs)
    return graph


VALIDATION_CASES: list[tuple[str, dict[str, Any], str, str, str, str]] = [
    ("return_type_mismatch", _graph_with("8", samples=["4", 0]), "8", "9", "return_type_mismatch",
     "samples, received_type(MODEL) mismatch input_type(LATENT)"),
    ("bigger_than_max", _graph_with("3", steps=20000), "3", "9", "value_bigger_than_max", "steps"),
    ("not_in_list", _graph_with("3", sampler_name="nope"), "3", "9", "value_not_in_list",
     "sampler_name: 'nope' not in (list of length 42)"),
    ("invalid_int", _graph_with("5", width="wide"), "5", "9", "invalid_input_type",
     "width, wide, invalid literal for int() with base 10: 'wide'"),
    ("bad_link", _graph_with("3", model=["4", 0, 1]), "3", "9", "bad_linked_input", "model"),
    ("inner_exception", _graph_with("8", samples=["3", 7]), "8", "9", "exception_during_inner_validation",
     "tuple index out of range"),
    ("load_image_missing", {"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
                            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
     "1", "2", "custom_validation_failed", "image - Invalid image file: nope.png"),
]


@pytest.mark.parametrize(("graph", "node", "output", "kind", "details"), [c[1:] for c in VALIDATION_CASES],
                         ids=[c[0] for c in VALIDATION_CASES])
def test_validation_errors_are_shaped_like_comfyui(fake: FakeComfyUI, graph: dict[str, Any], node: str, output: str,
                                                   kind: str, details: str) -> None:
    answer = httpx.post(f"{fake.url}/prompt", json={"prompt": graph})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                             "details": "", "extra_info": {}}  # the output itself was fine: no details
    assert list(body["node_errors"]) == [node]
    [error] = body["node_errors"][node]["errors"]
    assert (error["type"], error["details"]) == (kind, details)
    assert body["node_errors"][node]["dependent_outputs"] == [output]
    assert body["node_errors"][node]["class_type"] == graph[node]["class_type"]


def test_more_validation_answers(fake: FakeComfyUI) -> None:
    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{fake.url}/prompt", json=body)

    missing = sd_graph()
    del missing["9"]["inputs"]["filename_prefix"]
    body = post({"prompt": missing}).json()
    assert body["error"]["details"] == "Required input is missing: filename_prefix"  # the output's own reasons
    assert body["node_errors"]["9"]["errors"] == [{"type": "required_input_missing", "message": (
        "Required input is missing"), "details": "filename_prefix", "extra_info": {"input_name": "filename_prefix"}}]
    assert post({"prompt": {"1": {"inputs": {}}}}).json()["error"]["message"] == (
        "Cannot execute because a node is missing the class_type property.")
    assert post({"client_id": "x"}).json() == {"error": {"type": "no_prompt", "message": "No prompt provided",
                                                         "details": "No prompt provided", "extra_info": {}},
                                               "node_errors": {}}
    two = sd_graph()  # one good output, one bad: queued anyway, with the bad one's errors
    two["10"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": 5}}
    two["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}
    two["12"] = {"class_type": "ProbeTextToImage", "inputs": {"text": "x", "width": 4, "height": 8, "steps": 1,
                                                              "seed": 0, "step_seconds": 0}}
    answer = post({"prompt": two})
    assert answer.status_code == 200
    assert answer.json()["node_errors"]["12"]["dependent_outputs"] == ["11"]
    entry = wait_history(fake, answer.json()["prompt_id"])
    assert entry["prompt"][4] == ["9", "10"] and set(entry["outputs"]) == {"9", "10"}
    assert entry["prompt"][2]["10"]["inputs"]["filename_prefix"] == "5"  # STRING inputs converted in place


def test_v3_combo_models_are_checked_at_run_time_in_0_3_64(tmp_path: Path) -> None:
    graph = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-missing.pth"}},
             "2": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
             "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["1", 0], "image": ["2", 0]}},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}}}
    with FakeComfyUI(output_dir=tmp_path / "a") as fake:
        answer = httpx.post(f"{fake.url}/prompt", json={"prompt": graph})
        assert answer.status_code == 200  # 0.3.64 does not check ["COMBO", {options}] inputs…
        entry = wait_history(fake, answer.json()["prompt_id"])
        error = entry["status"]["messages"][-1][1]
        assert (error["node_type"], error["exception_type"]) == ("UpscaleModelLoader", "FileNotFoundError")
        assert error["exception_message"] == (
            "Model in folder 'upscale_models' with filename '4x-missing.pth' not found.\n")
    with FakeComfyUI(output_dir=tmp_path / "b", validate_v3_combos=True) as fake:  # …newer ComfyUI does
        body = httpx.post(f"{fake.url}/prompt", json={"prompt": graph}).json()
        assert body["node_errors"]["1"]["errors"][0]["details"] == (
            "model_name: '4x-missing.pth' not in ['RealESRGAN_x4plus.pth']")


# --- execution: images, cache, queue -------------------------------------------------------------------------------


def test_images_follow_the_graph_and_pixels_follow_the_seed(fake: FakeComfyUI) -> None:
    def run(graph: dict[str, Any], **extra: Any) -> dict[str, Any]:
        answer = httpx.post(f"{fake.url}/prompt", json={"prompt": graph, **extra})
        assert answer.status_code == 200, answer.text
        entry = wait_history(fake, answer.json()["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        return entry

    def images(entry: dict[str, Any]) -> list[Image.Image]:
        refs = [ref for output in entry["outputs"].values() for ref in output["images"]]
        return [Image.open(io.BytesIO(httpx.get(f"{fake.url}/view", params=ref).content)) for ref in refs]

    first = run(sd_graph(seed=5, width=72, height=52, batch=2, prefix="sd/fox"))
    assert [r["filename"] for r in first["outputs"]["9"]["images"]] == ["fox_00001_.png", "fox_00002_.png"]
    assert first["outputs"]["9"]["images"][0]["subfolder"] == "sd"
    a, b = images(first)
    assert a.size == b.size == (72, 48)  # latents are 1/8 of the size: 52 → 48
    again = images(run(sd_graph(seed=5, width=72, height=52, batch=2, prefix="sd/other")))
    assert again[0].tobytes() == a.tobytes() and a.tobytes() != b.tobytes()
    assert images(run(sd_graph(seed=6, width=72, height=52, prefix="x")))[0].tobytes() != a.tobytes()

    name = httpx.post(f"{fake.url}/upload/image", files={"image": ("small.png", png_bytes((24, 16)))}).json()["name"]
    upscale = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
               "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
               "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
               "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "nearest-exact",
                                                               "scale_by": 0.5}},
               "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "up"}},
               "6": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    entry = run(upscale)
    saved, preview = images(entry)
    assert saved.size == (48, 32) and preview.size == (24, 16)
    assert saved.getpixel((0, 0)) == (255, 0, 0)  # the uploaded pixels, upscaled
    ref = entry["outputs"]["6"]["images"][0]
    assert ref["type"] == "temp" and ref["filename"].startswith("ComfyUI_temp_") and ref["filename"].endswith(
        "_00001_.png")
    prompt_chunk = json.loads(saved.info["prompt"])
    assert len(prompt_chunk["1"]["is_changed"][0]) == 64  # LoadImage's IS_CHANGED hash, as ComfyUI embeds it


def test_identical_prompt_is_cached_until_free_memory(fake: FakeComfyUI) -> None:
    def run() -> dict[str, Any]:
        answer = httpx.post(f"{fake.url}/prompt", json={"prompt": sd_graph(steps=2)})
        return wait_history(fake, answer.json()["prompt_id"])

    first, second = run(), run()
    cached = [m[1]["nodes"] for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert cached == [["3", "4", "5", "6", "7", "8", "9"]] and second["outputs"] == first["outputs"]
    assert httpx.post(f"{fake.url}/free", json={"free_memory": True}).status_code == 200
    time.sleep(0.05)
    third = run()
    assert [m[1]["nodes"] for m in third["status"]["messages"] if m[0] == "execution_cached"] == [[]]
    assert third["outputs"]["9"]["images"][0]["filename"] == "ComfyUI_00002_.png"
    assert httpx.post(f"{fake.url}/free", content=b"").status_code == 500  # ComfyUI requires a JSON body


def test_on_a_shared_gpu_a_prompt_loads_its_models_and_free_unloads_them(tmp_path: Path) -> None:
    gpu = FakeGpu(total=8 * GIB)
    gpu.attach("other", lambda: {"llm": 3 * GIB})
    sizes = {"v1-5-pruned-emaonly.safetensors": 2 * GIB, "sd_xl_turbo_1.0_fp16.safetensors": 4 * GIB}
    with FakeComfyUI(output_dir=tmp_path, step_seconds=0.001, gpu=gpu, model_sizes=sizes) as fake:
        def vram() -> tuple[int, int]:
            device = httpx.get(f"{fake.url}/system_stats").json()["devices"][0]
            return device["vram_free"], device["vram_total"]

        def run(ckpt: str) -> str:
            prompt_id = str(httpx.post(f"{fake.url}/prompt", json={"prompt": sd_graph(ckpt=ckpt)}).json()["prompt_id"])
            assert wait_history(fake, prompt_id)["status"]["status_str"] == "success"
            return prompt_id

        assert vram() == (5 * GIB, 8 * GIB)
        run("v1-5-pruned-emaonly.safetensors")
        assert vram() == (3 * GIB, 8 * GIB) and fake.loaded_models == {"v1-5-pruned-emaonly.safetensors": 2 * GIB}
        turbo = run("sd_xl_turbo_1.0_fp16.safetensors")  # 4 GB do not fit next to SD 1.5: ComfyUI drops it first
        assert fake.loaded_models == {"sd_xl_turbo_1.0_fp16.safetensors": 4 * GIB} and vram()[0] == 1 * GIB
        assert httpx.post(f"{fake.url}/free", json={"unload_models": True}).status_code == 200
        deadline = time.monotonic() + 5
        while fake.loaded_models and time.monotonic() < deadline:
            time.sleep(0.01)
        assert vram() == (5 * GIB, 8 * GIB)
        assert [(e.action, e.model) for e in gpu.events] == [
            ("run", gpu.events[0].model), ("load", "v1-5-pruned-emaonly.safetensors"), ("run", turbo),
            ("unload", "v1-5-pruned-emaonly.safetensors"), ("load", "sd_xl_turbo_1.0_fp16.safetensors"),
            ("unload", "sd_xl_turbo_1.0_fp16.safetensors")]
        assert [(m, p, b) for m, p, b in fake.requests if p == "/free"] == [("POST", "/free", {"unload_models": True})]
        with pytest.raises(ValueError, match="FakeGpu"):
            fake.set_vram(1, 2)


def test_queue_order_front_delete_and_targeted_interrupt(fake: FakeComfyUI) -> None:
    fake.pause()
    ids = [httpx.post(f"{fake.url}/prompt", json={"prompt": probe(text=t), "front": t == "c"}).json()["prompt_id"]
           for t in ("a", "b", "c")]
    pending = httpx.get(f"{fake.url}/queue").json()["queue_pending"]
    assert [(item[0], item[1]) for item in pending] == [(-2, ids[2]), (1, ids[1]), (0, ids[0])]  # heap order
    assert httpx.post(f"{fake.url}/interrupt", json={"prompt_id": ids[0]}).status_code == 200  # not running: no-op
    httpx.post(f"{fake.url}/queue", json={"delete": [ids[1]]})
    assert [item[1] for item in httpx.get(f"{fake.url}/queue").json()["queue_pending"]] == [ids[2], ids[0]]
    fake.resume()
    entries = [wait_history(fake, prompt_id) for prompt_id in (ids[2], ids[0])]
    assert all(e["status"]["status_str"] == "success" for e in entries)
    assert list(httpx.get(f"{fake.url}/history").json()) == [ids[2], ids[0]]
    assert fake.execution_counts == {ids[2]: 1, ids[0]: 1}
    assert httpx.post(f"{fake.url}/history", json={"delete": [ids[2]]}).status_code == 200
    assert list(httpx.get(f"{fake.url}/history").json()) == [ids[0]]


# --- routing, sockets and the chaos controls ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_messages_go_to_their_client_and_status_to_everyone(fake: FakeComfyUI) -> None:
    async with socket_for(fake, "owner") as owner, socket_for(fake, "bystander") as bystander:
        await owner.next()
        await bystander.next()
        answer = httpx.post(f"{fake.url}/prompt", json={"prompt": probe(), "client_id": "owner"})
        await owner.until(ends(answer.json()["prompt_id"]))
        seen = await bystander.quiet(0.2)
        assert seen and {m["type"] for m in seen} == {"status"} and not bystander.binary
        # without a client_id ComfyUI sends progress (and progress_state, previews) to every socket
        httpx.post(f"{fake.url}/prompt", json={"prompt": probe(text="nobody's")})
        seen = await bystander.quiet(0.3)
        assert {m["type"] for m in seen} == {"status", "progress", "progress_state"} and bystander.binary


@pytest.mark.asyncio
async def test_feature_flags_give_previews_with_metadata(fake: FakeComfyUI) -> None:
    async with socket_for(fake, "modern") as reader:
        await reader.next()
        await reader.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        flags = await reader.next()
        assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
        prompt_id = httpx.post(f"{fake.url}/prompt", json={"prompt": probe(steps=2), "client_id": "modern"}).json()[
            "prompt_id"]
        await reader.until(ends(prompt_id))
    assert len(reader.binary) == 2
    for _, frame in reader.binary:
        event, length = struct.unpack(">II", frame[:8])
        meta = json.loads(frame[8:8 + length])
        assert event == 4 and meta == {"node_id": "1", "prompt_id": prompt_id, "display_node_id": "1",
                                       "parent_node_id": None, "real_node_id": "1", "image_type": "image/jpeg"}
        assert Image.open(io.BytesIO(frame[8 + length:])).format == "JPEG"


@pytest.mark.asyncio
async def test_drop_sockets_mid_run_and_reconnect_with_the_same_id(fake: FakeComfyUI) -> None:
    async with socket_for(fake, "dropped") as reader:
        prompt_id = await start_running(fake, reader, "dropped", steps=30, step_seconds=0.01)
        await asyncio.to_thread(fake.drop_sockets)
        await asyncio.wait_for(reader.task, 5)
    assert reader.closed is not None and reader.closed.rcvd is None  # no close frame: an abrupt drop
    async with socket_for(fake, "dropped") as again:
        greeting, current = await again.next(), await again.next()
        assert greeting["data"]["sid"] == "dropped"
        assert current == {"type": "executing", "data": {"node": "1"}}  # ComfyUI re-sends the running node
        await again.until(ends(prompt_id))
    assert wait_history(fake, prompt_id)["status"]["status_str"] == "success"
    assert fake.execution_counts[prompt_id] == 1


@pytest.mark.asyncio
async def test_go_silent_keeps_running_but_says_nothing(fake: FakeComfyUI) -> None:
    async with socket_for(fake, "watched") as reader:
        prompt_id = await start_running(fake, reader, "watched", steps=16, step_seconds=0.025)
        fake.go_silent(0.2)
        started = time.monotonic()
        after = await reader.next()
        assert time.monotonic() - started >= 0.15
        rest = [after, *await reader.until(ends(prompt_id))]
    values = [m["data"]["value"] for m in rest if m["type"] == "progress"]
    assert values and values[0] >= 5 and values[-1] == 16  # the steps during the silence were never sent
    assert wait_history(fake, prompt_id)["status"]["status_str"] == "success"


@pytest.mark.asyncio
async def test_restart_mid_run_aborts_the_prompt_and_refuses_connections_a_while(fake: FakeComfyUI) -> None:
    async with socket_for(fake, "client") as reader:
        prompt_id = await start_running(fake, reader, "client", steps=100, step_seconds=0.01)
        await asyncio.to_thread(fake.restart, 0.3)
        await asyncio.wait_for(reader.task, 5)
        assert reader.closed is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fake.url}/queue")
    await asyncio.sleep(0.45)
    assert httpx.get(f"{fake.url}/queue").json() == {"queue_running": [], "queue_pending": []}
    assert httpx.get(f"{fake.url}/history/{prompt_id}").json() == {}
    again = httpx.post(f"{fake.url}/prompt", json={"prompt": probe()}).json()
    assert again["number"] == 0 and fake.execution_counts[prompt_id] == 1


def test_http_controls_drive_the_fake_from_another_process(tmp_path: Path) -> None:
    with FakeComfyUI(output_dir=tmp_path, devices=[gpu_device()]) as fake, httpx.Client(base_url=fake.url) as http:
        assert http.get("/system_stats").json()["devices"][0]["type"] == "cuda"
        assert http.post("/__fake__/set_vram", json={"free": 1024, "total": 2048}).json() == {"ok": True}
        device = http.get("/api/system_stats").json()["devices"][0]
        assert (device["vram_free"], device["vram_total"]) == (1024, 2048)
        http.post("/__fake__/pause")
        prompt_id = http.post("/prompt", json={"prompt": probe()}).json()["prompt_id"]
        time.sleep(0.05)
        assert len(http.get("/queue").json()["queue_pending"]) == 1 and fake.execution_counts == {}
        http.post("/__fake__/resume")
        wait_history(fake, prompt_id)
        assert http.get("/__fake__/execution_counts").json() == {prompt_id: 1}
        assert http.post("/__fake__/go_silent?seconds=0.01").status_code == 200
        assert http.post("/__fake__/drop_sockets").status_code == 200
        http.post("/__fake__/set_models", json={"models": {"checkpoints": ["dreamshaper_8.safetensors"]}})
        assert http.get("/models/checkpoints").json() == ["dreamshaper_8.safetensors"]
        assert http.post("/__fake__/restart", json={"down_seconds": 0.2}).json() == {"ok": True}
        time.sleep(0.12)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{fake.url}/queue")
        time.sleep(0.3)
        assert httpx.get(f"{fake.url}/history").json() == {}
        assert http.get("/__fake__/nope").status_code == 404


def test_routes_models_and_uploads(tmp_path: Path) -> None:
    models = {"checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors", "a.safetensors"], "loras": ["x.safetensors"],
              "vae": ["ae.safetensors"], "embeddings": ["easynegative.safetensors"]}
    with FakeComfyUI(models=models, output_dir=tmp_path) as fake, httpx.Client(base_url=fake.url) as http:
        info = http.get("/object_info").json()
        assert len(info) == 498 and {"ProbeTextToImage", "ProbeFail"} <= set(info)
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "a.safetensors", "sd_xl_turbo_1.0_fp16.safetensors"]
        assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == ["x.safetensors"]
        assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors", "pixel_space"]
        assert info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] == []
        assert http.get("/object_info/Nope").json() == {}
        assert http.get("/models/loras").json() == ["x.safetensors"] and http.get("/models/nope").status_code == 404
        assert http.get("/embeddings").json() == ["easynegative"]
        assert http.get("/api/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0] == [
            "example.png"]  # a fresh ComfyUI has input/example.png

        def upload(data: bytes, **form: str) -> httpx.Response:
            return http.post("/upload/image", data=form, files={"image": ("ref.png", data)})

        assert upload(png_bytes()).json()["name"] == "ref.png"
        assert upload(png_bytes()).json()["name"] == "ref.png"  # the same bytes again: no copy
        assert upload(png_bytes(color="blue")).json()["name"] == "ref (1).png"
        assert upload(png_bytes(color="green")).json()["name"] == "ref (2).png"
        assert upload(png_bytes(color="white"), overwrite="true").json()["name"] == "ref.png"
        assert upload(png_bytes(), subfolder="refs", type="temp").json() == {"name": "ref.png", "subfolder": "refs",
                                                                            "type": "temp"}
        assert upload(png_bytes(), subfolder="../..").status_code == 400
        assert upload(png_bytes(), type="bogus").status_code == 500
        assert "ref (1).png" in http.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
        view = http.get("/view", params={"filename": "ref.png", "subfolder": "refs", "type": "temp"})
        assert view.status_code == 200 and Image.open(io.BytesIO(view.content)).size == (24, 16)
        assert http.get("/view", params={"filename": "ref.png [input]"}).status_code == 200
        assert http.get("/view", params={"filename": "ref.png", "type": "input", "preview": "jpeg;50"}).headers[
            "content-type"] == "image/jpeg"
        assert http.get("/view", params={"filename": "/etc/passwd"}).status_code == 400
        assert http.get("/features").json()["supports_preview_metadata"] is True


def test_command_line_serves_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.fakes.comfyui_server", "--port", str(port), "--step-seconds", "0",
               "--models", "checkpoints=a.safetensors,b.safetensors;upscale_models=x.pth", "--output-dir",
               str(tmp_path)]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        assert httpx.get(f"http://127.0.0.1:{port}/models/checkpoints").json() == ["a.safetensors", "b.safetensors"]
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
