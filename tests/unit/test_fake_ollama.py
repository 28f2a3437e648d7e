"""The fake Ollama speaks the protocol in ollama-api.md: routes, bodies, NDJSON streams, errors, scripts, controls."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.fake_gpu import GIB, FakeGpu
from tests.fakes.ollama_server import FakeModel, FakeOllama, Reply

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
HAS_LANGCHAIN_OLLAMA = importlib.util.find_spec("langchain_ollama") is not None
HAS_OLLAMA_CLIENT = importlib.util.find_spec("ollama") is not None
USER_HI = [{"role": "user", "content": "hi"}]
HTTP = httpx.Client(timeout=10)  # one client: creating one per call costs ~40 ms


class _AnyTime:
    """Equal to any created_at timestamp (replies are otherwise identical)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(TIMESTAMP.match(other))

    def __hash__(self) -> int:
        return 0


ANY_TIME: Any = _AnyTime()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """A fresh fake per test."""
    with FakeOllama() as server:
        yield server


def post(fake: FakeOllama, path: str, body: Any) -> httpx.Response:
    return HTTP.post(f"{fake.url}{path}", json=body)


def stream_lines(fake: FakeOllama, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    """POST and collect the raw NDJSON text lines (each still with its newline)."""
    with HTTP.stream("POST", f"{fake.url}{path}", json=body) as response:
        text = response.read().decode()
    return response, text.splitlines(keepends=True)


def png_b64(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def expires(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00"))


# --- info routes -----------------------------------------------------------------------------------------------------


def test_root_version_and_unknown_routes(fake: FakeOllama) -> None:
    assert HTTP.get(fake.url).text == "Ollama is running"
    assert HTTP.head(fake.url).status_code == 200
    version = HTTP.get(f"{fake.url}/api/version")
    assert version.headers["content-type"] == "application/json; charset=utf-8"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.json()["version"])
    assert HTTP.get(f"{fake.url}/api/nothing").text == "404 page not found"
    assert HTTP.get(f"{fake.url}/api/chat").status_code == 404  # gin answers a wrong method with 404 too


def test_tags_list_the_default_models_with_details_and_capabilities(fake: FakeOllama) -> None:
    models = {m["model"]: m for m in HTTP.get(f"{fake.url}/api/tags").json()["models"]}
    assert set(models) == {"llama3.2:latest", "llava:latest", "nomic-embed-text:latest", "all-minilm:latest"}
    llama = models["llama3.2:latest"]
    assert llama["name"] == "llama3.2:latest" and TIMESTAMP.match(llama["modified_at"])
    assert isinstance(llama["size"], int) and re.fullmatch(r"[0-9a-f]{64}", llama["digest"])
    assert set(llama["details"]) == {"parent_model", "format", "family", "families", "parameter_size",
                                     "quantization_level"}
    assert llama["capabilities"] == ["completion", "tools"]
    assert models["llava:latest"]["capabilities"] == ["completion", "vision"]
    assert models["nomic-embed-text:latest"]["capabilities"] == ["embedding"]


def test_show_reports_model_info_and_capabilities(fake: FakeOllama) -> None:
    shown = post(fake, "/api/show", {"model": "nomic-embed-text"}).json()
    assert shown["capabilities"] == ["embedding"] and shown["details"]["family"] == "nomic-bert"
    assert shown["model_info"]["nomicbert.embedding_length"] == 768
    assert post(fake, "/api/show", {"name": "llava:latest"}).json()["capabilities"] == ["completion", "vision"]
    missing = post(fake, "/api/show", {"model": "mistral"})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'mistral:latest' not found"}
    assert post(fake, "/api/show", {}).json() == {"error": "model is required"}


def test_models_can_be_replaced_from_the_constructor_and_at_run_time() -> None:
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion", "tools", "thinking"])]) as fake:
        assert [m["name"] for m in HTTP.get(f"{fake.url}/api/tags").json()["models"]] == ["qwen3:8b"]
        assert post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI}).status_code == 404
        fake.set_models([FakeModel("mxbai-embed-large", ["embedding"], dims=1024)])
        body = post(fake, "/api/embed", {"model": "mxbai-embed-large", "input": "x"}).json()
        assert len(body["embeddings"][0]) == 1024
        with pytest.raises(ValueError, match="unknown capabilities"):
            FakeModel("x", ["chat"])


# --- chat --------------------------------------------------------------------------------------------------------


def test_chat_streams_ndjson_by_default_and_ends_with_counters(fake: FakeOllama) -> None:
    fake.script("llama3.2", ["one two three four five"])
    response, lines = stream_lines(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    assert all(line.endswith("\n") for line in lines)
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objects) and len(objects) == 6
    assert "".join(o["message"]["content"] for o in objects) == "one two three four five"
    assert [o["done"] for o in objects] == [False] * 5 + [True]
    assert all(o["model"] == "llama3.2" and TIMESTAMP.match(o["created_at"]) for o in objects)
    assert all(o["message"]["role"] == "assistant" and "thinking" not in o["message"] for o in objects)
    last = objects[-1]
    assert last["done_reason"] == "stop" and last["message"]["content"] == ""
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        assert isinstance(last[key], int) and last[key] > 0
        assert all(key not in o for o in objects[:-1]), "counters only on the final line"


def test_chat_without_streaming_is_one_json_object(fake: FakeOllama) -> None:
    response = post(fake, "/api/chat", {"model": "llama3.2:latest", "stream": False, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "You said: hello there"}
    assert body["done"] is True and body["done_reason"] == "stop" and body["model"] == "llama3.2:latest"
    assert body["eval_count"] > 0 and body["prompt_eval_count"] > 0


def test_scripts_are_per_model_in_order_then_the_default_echo(fake: FakeOllama) -> None:
    fake.script("llama3.2:latest", ["first", Reply(content="second", done_reason="length")])
    fake.script("llava", ["for llava"])

    def ask(model: str, text: str = "again") -> Any:
        return post(fake, "/api/chat", {"model": model, "stream": False,
                                        "messages": [{"role": "user", "content": text}]}).json()

    assert ask("llama3.2")["message"]["content"] == "first"
    second = ask("llama3.2")
    assert second["message"]["content"] == "second" and second["done_reason"] == "length"
    assert ask("llama3.2")["message"]["content"] == "You said: again"
    assert ask("llama3.2", "again") == {**ask("llama3.2", "again"), "created_at": ANY_TIME}
    assert ask("llava")["message"]["content"] == "for llava"


def test_scripted_tool_calls_stream_then_done(fake: FakeOllama) -> None:
    fake.script("llama3.2", [{"tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
                                             {"name": "get_time", "arguments": '{"zone": "JST"}'}]}])
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    _, lines = stream_lines(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "tools": tools})
    objects = [json.loads(line) for line in lines]
    assert [o["done"] for o in objects] == [False, True] and objects[-1]["done_reason"] == "stop"
    message = objects[0]["message"]
    assert message["content"] == ""
    calls = message["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
        {"index": 1, "name": "get_time", "arguments": {"zone": "JST"}}]
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", c["id"]) for c in calls)
    fake.script("llama3.2", [{"content": "Checking.", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}])
    whole = post(fake, "/api/chat", {"model": "llama3.2", "stream": False, "messages": USER_HI, "tools": tools})
    assert whole.json()["message"]["content"] == "Checking."
    assert whole.json()["message"]["tool_calls"][0]["function"]["name"] == "f"


def test_scripted_errors_mid_stream_and_as_statuses(fake: FakeOllama) -> None:
    fake.script("llama3.2", [{"content": "Partial answer", "error": "llama runner process has terminated"},
                             {"error": "server overloaded", "status": 503}, {"error": "boom"},
                             {"content": "x", "error": "late"}])
    response, lines = stream_lines(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI})
    objects = [json.loads(line) for line in lines]
    assert response.status_code == 200 and objects[-1] == {"error": "llama runner process has terminated"}
    assert not any(o.get("done") for o in objects) and objects[0]["message"]["content"] == "Partial"
    status = post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI})
    assert status.status_code == 503 and status.json() == {"error": "server overloaded"}
    before_output = post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI})
    assert before_output.status_code == 500 and before_output.json() == {"error": "boom"}
    whole = post(fake, "/api/chat", {"model": "llama3.2", "stream": False, "messages": USER_HI})
    assert whole.status_code == 500 and whole.json() == {"error": "late"}


def test_format_replies_are_json(fake: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"intent": {"type": "string", "enum": ["plan", "chat"]},
                                               "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}}},
              "required": ["intent", "steps"],
              "$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}}}}
    fake.script("llama3.2", [{"intent": "plan", "steps": []}, {"json": ["a", "b"]}])

    def content(fmt: Any) -> Any:
        body = post(fake, "/api/chat", {"model": "llama3.2", "stream": False, "format": fmt, "messages": USER_HI})
        return json.loads(body.json()["message"]["content"])

    assert content(schema) == {"intent": "plan", "steps": []}
    assert content("json") == ["a", "b"]
    assert content(schema) == {"intent": "plan", "steps": [{"n": 1}]}, "unscripted: an instance of the schema"
    assert content("json") == {"answer": "You said: hi"}


def test_thinking_models_think_first_and_others_refuse(fake: FakeOllama) -> None:
    fake.set_models([FakeModel("qwen3", ["completion", "tools", "thinking"]), FakeModel("llama3.2", ["completion"])])
    fake.script("qwen3", [Reply(content="Four.", thinking="Two plus two is four.")])
    _, lines = stream_lines(fake, "/api/chat", {"model": "qwen3", "messages": USER_HI})
    objects = [json.loads(line) for line in lines]
    thinking = [o["message"].get("thinking", "") for o in objects]
    assert "".join(thinking) == "Two plus two is four."
    first_content = next(i for i, o in enumerate(objects) if o["message"]["content"])
    assert all(t == "" for t in thinking[first_content:]) and all(o["message"]["content"] == "" for o in
                                                                    objects[:first_content])
    quiet = post(fake, "/api/chat", {"model": "qwen3", "think": False, "stream": False, "messages": USER_HI}).json()
    assert "thinking" not in quiet["message"]
    refused = post(fake, "/api/chat", {"model": "llama3.2", "think": True, "messages": USER_HI})
    assert refused.status_code == 400 and refused.json() == {"error": '"llama3.2" does not support thinking'}
    assert post(fake, "/api/chat", {"model": "llama3.2", "think": False, "messages": USER_HI}).status_code == 200
    bad = post(fake, "/api/chat", {"model": "qwen3", "think": "extreme", "messages": USER_HI})
    assert bad.status_code == 400 and bad.json()["error"].startswith('invalid think value: "extreme"')


def test_a_vision_model_captions_images_unless_scripted(fake: FakeOllama) -> None:
    red, blue = png_b64((40, 20), (220, 30, 30)), png_b64((64, 48), (30, 60, 200))
    body = post(fake, "/api/chat", {"model": "llava", "stream": False, "messages": [
        {"role": "user", "content": "describe", "images": [red]}]}).json()
    assert body["message"]["content"] == "A 40x20 image, mostly red." and body["done"] is True
    generated = post(fake, "/api/generate", {"model": "llava", "prompt": "what is it?", "images": [blue],
                                             "stream": False}).json()
    assert generated["response"] == "A 64x48 image, mostly blue."
    fake.script("llava", ["A cat."])
    assert post(fake, "/api/chat", {"model": "llava", "stream": False, "messages": [
        {"role": "user", "content": "describe", "images": [red]}]}).json()["message"]["content"] == "A cat."
    bad = post(fake, "/api/chat", {"model": "llava", "messages": [{"role": "user", "content": "x",
                                                                   "images": ["not base64!"]}]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("illegal base64 data at input byte")


def test_images_to_a_model_that_cannot_see_are_refused_like_llama_server_does(fake: FakeOllama) -> None:
    red = png_b64((8, 8), (220, 30, 30))
    for stream in (True, False):
        refused = post(fake, "/api/chat", {"model": "llama3.2", "stream": stream, "messages": [
            {"role": "user", "content": "what is it?", "images": [red]}]})
        assert refused.status_code == 500 and refused.headers["content-type"].startswith("application/json")
        inner = json.loads(refused.json()["error"])  # llama-server's own error object, passed on as the text
        assert inner == {"error": {"code": 500, "message": "image input is not supported - hint: if this is "
                                   "unexpected, you may need to provide the mmproj", "type": "server_error"}}
    assert "llama3.2:latest" in fake.loaded_models  # the model was loaded before the runner refused the image
    assert post(fake, "/api/chat", {"model": "llama3.2", "stream": False, "messages": USER_HI}).status_code == 200
    shown = post(fake, "/api/show", {"model": "llama3.2"}).json()["capabilities"]
    assert "vision" not in shown and "vision" in post(fake, "/api/show", {"model": "llava"}).json()["capabilities"]


def test_chat_errors_from_the_table(fake: FakeOllama) -> None:
    chat = f"{fake.url}/api/chat"
    assert HTTP.post(chat, content=b"").json() == {"error": "missing request body"}
    malformed = HTTP.post(chat, content=b'{"model": llama3.2}')
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "invalid character 'l' looking for beginning of value"}
    assert HTTP.post(chat, content=b'{"model": "llama3.2"').json() == {"error": "unexpected EOF"}
    assert HTTP.post(chat, content=b"[]").json() == {
        "error": "json: cannot unmarshal array into Go value of type api.ChatRequest"}
    assert post(fake, "/api/chat", {"model": "llama3.2", "stream": "yes"}).json() == {
        "error": "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"}
    required = post(fake, "/api/chat", {"messages": USER_HI})
    assert required.status_code == 400 and required.json() == {"error": "model is required"}
    unknown = post(fake, "/api/chat", {"model": "mistral", "messages": USER_HI})
    assert unknown.status_code == 404 and unknown.json() == {"error": "model 'mistral' not found"}
    embed_only = post(fake, "/api/chat", {"model": "all-minilm", "messages": USER_HI})
    assert embed_only.status_code == 400 and embed_only.json() == {"error": '"all-minilm" does not support chat'}
    tools = post(fake, "/api/chat", {"model": "llava", "messages": USER_HI,
                                     "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert tools.status_code == 400
    assert tools.json() == {"error": "registry.ollama.ai/library/llava:latest does not support tools"}
    assert post(fake, "/api/chat", {"model": "llava", "messages": USER_HI, "tools": []}).status_code == 200
    logprobs = post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "top_logprobs": 21})
    assert logprobs.json() == {"error": "top_logprobs must be between 0 and 20"}


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"])
def test_every_post_route_rejects_missing_and_malformed_bodies(fake: FakeOllama, path: str) -> None:
    empty = HTTP.post(f"{fake.url}{path}", content=b"  \n")
    assert empty.status_code == 400 and empty.json() == {"error": "missing request body"}
    broken = HTTP.post(f"{fake.url}{path}", content=b'{"model" "x"}')
    assert broken.status_code == 400 and broken.json() == {"error": "invalid character '\"' after object key"}
    no_model = post(fake, path, {"prompt": "x", "input": "x", "messages": USER_HI})
    # Like Ollama: chat, embeddings and show say the model is required; generate and embed look up '' and miss.
    expected = (404, "model '' not found") if path in ("/api/generate", "/api/embed") else (400, "model is required")
    assert (no_model.status_code, no_model.json()["error"]) == expected


def test_a_full_queue_answers_503_and_pause_holds_requests(fake: FakeOllama) -> None:
    fake.set_queue_limit(1)
    fake.pause()
    held: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: held.append(post(fake, "/api/chat", {
        "model": "llama3.2", "stream": False, "messages": USER_HI})))
    worker.start()
    deadline = time.monotonic() + 5
    while fake.state.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = post(fake, "/api/embed", {"model": "all-minilm", "input": "x"})
    assert busy.status_code == 503
    assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    assert held == []
    fake.resume()
    worker.join(5)
    assert held[0].status_code == 200 and held[0].json()["message"]["content"] == "You said: hi"
    fake.set_queue_limit(0)
    assert post(fake, "/api/generate", {"model": "llama3.2", "prompt": "x"}).status_code == 503


# --- load, unload, keep_alive, /api/ps ---------------------------------------------------------------------------


def test_load_and_unload_with_empty_messages(fake: FakeOllama) -> None:
    loaded = post(fake, "/api/chat", {"model": "llama3.2", "messages": []})  # streaming asked, one object answered
    assert loaded.headers["content-type"] == "application/json; charset=utf-8"
    assert loaded.json() == {"model": "llama3.2", "created_at": ANY_TIME, "done": True, "done_reason": "load",
                             "message": {"role": "assistant", "content": ""}}
    assert fake.loaded_models == ["llama3.2:latest"]
    unloaded = post(fake, "/api/chat", {"model": "llama3.2", "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload" and unloaded["message"]["content"] == ""
    assert HTTP.get(f"{fake.url}/api/ps").json() == {"models": []}
    missing = post(fake, "/api/chat", {"model": "mistral", "keep_alive": 0})
    assert missing.status_code == 404
    generated = post(fake, "/api/generate", {"model": "llama3.2"}).json()
    assert generated["done_reason"] == "load" and generated["response"] == ""
    assert post(fake, "/api/generate", {"model": "llama3.2", "keep_alive": "0"}).json()["done_reason"] == "unload"
    assert fake.loaded_models == []


def test_keep_alive_sets_expires_at_in_ps(fake: FakeOllama) -> None:
    start = datetime.now(UTC)
    post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "stream": False})
    post(fake, "/api/embed", {"model": "all-minilm", "input": "x", "keep_alive": "10m"})
    post(fake, "/api/generate", {"model": "llava", "prompt": "x", "stream": False, "keep_alive": -1})
    ps = HTTP.get(f"{fake.url}/api/ps").json()["models"]
    assert [m["name"] for m in ps] == ["llava:latest", "all-minilm:latest", "llama3.2:latest"], "latest expiry first"
    assert expires(ps[0]).year >= 2300
    assert timedelta(minutes=9, seconds=59) < expires(ps[1]) - start < timedelta(minutes=10, seconds=5)
    assert timedelta(minutes=4, seconds=59) < expires(ps[2]) - start < timedelta(minutes=5, seconds=5)
    llama = ps[2]
    assert llama["size_vram"] == llama["size"] and llama["context_length"] == 4096
    assert set(llama) == {"name", "model", "size", "size_vram", "digest", "details", "expires_at", "context_length"}
    post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "keep_alive": 0, "stream": False})
    assert "llama3.2:latest" not in fake.loaded_models, "keep_alive 0 unloads when the request ends"
    post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "keep_alive": 0.05, "stream": False})
    time.sleep(0.1)
    assert "llama3.2:latest" not in fake.loaded_models, "expired"


def test_keep_alive_parsing_errors(fake: FakeOllama) -> None:
    def error(keep_alive: Any) -> Any:
        response = post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "keep_alive": keep_alive})
        return response.status_code, response.json().get("error")

    assert error("-1") == (400, 'time: missing unit in duration "-1"')
    assert error("soon") == (400, 'time: invalid duration "soon"')
    assert error("5y") == (400, 'time: unknown unit "y" in duration "5y"')
    assert error(True) == (400, "Unsupported type: 'bool'")
    for fine in ("1h30m", "-1m", "0.5s", None, 60):
        assert post(fake, "/api/chat", {"model": "llama3.2", "messages": USER_HI, "keep_alive": fine,
                                        "stream": False}).status_code == 200


def test_keep_alive_0_unloads_a_model_answering_a_request_when_that_request_ends() -> None:
    gpu = FakeGpu(total=8 * GIB)
    with FakeOllama(models=[FakeModel("llama3.2", ["completion"], size=2 * GIB)], gpu=gpu, chunk_delay=0.05) as fake:
        fake.script("llama3.2", ["one two three four five six seven eight"])
        replies: list[httpx.Response] = []
        talk = threading.Thread(target=lambda: replies.append(post(fake, "/api/chat", {
            "model": "llama3.2", "messages": USER_HI})))
        talk.start()
        deadline = time.monotonic() + 5
        while not fake.state.refs["llama3.2:latest"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gpu.free == 6 * GIB
        assert post(fake, "/api/chat", {"model": "llama3.2", "messages": [], "keep_alive": 0}).json()[
            "done_reason"] == "unload"
        assert fake.loaded_models == ["llama3.2:latest"], "Scheduler.expireRunner waits for the request"
        talk.join(5)
        assert replies[0].status_code == 200 and fake.loaded_models == [] and gpu.free == 8 * GIB
        assert [(e.holder, e.action, e.model) for e in gpu.events] == [
            ("ollama", "load", "llama3.2:latest"), ("ollama", "unload", "llama3.2:latest")]


def test_loading_past_the_limit_evicts_the_model_expiring_first() -> None:
    with FakeOllama(max_loaded_models=2) as fake:
        post(fake, "/api/generate", {"model": "llama3.2", "keep_alive": "1m"})
        post(fake, "/api/generate", {"model": "llava", "keep_alive": "1h"})
        post(fake, "/api/embed", {"model": "all-minilm", "input": "x"})
        assert fake.loaded_models == ["llava:latest", "all-minilm:latest"]


# --- generate ----------------------------------------------------------------------------------------------------


def test_generate_streams_and_answers_whole(fake: FakeOllama) -> None:
    fake.script("llama3.2", ["Once upon a time"])
    response, lines = stream_lines(fake, "/api/generate", {"model": "llama3.2", "prompt": "Tell a story"})
    objects = [json.loads(line) for line in lines]
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "".join(o["response"] for o in objects) == "Once upon a time"
    assert objects[-1]["done"] is True and objects[-1]["response"] == "" and objects[-1]["eval_count"] > 0
    assert all(isinstance(i, int) for i in objects[-1]["context"])
    whole = post(fake, "/api/generate", {"model": "llama3.2", "prompt": "hello", "stream": False}).json()
    assert whole["response"] == "You said: hello" and whole["done_reason"] == "stop"
    unknown = post(fake, "/api/generate", {"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404 and unknown.json() == {"error": "model 'nope' not found"}
    embed_only = post(fake, "/api/generate", {"model": "nomic-embed-text", "prompt": "x"})
    assert embed_only.json() == {"error": '"nomic-embed-text" does not support generate'}
    suffix = post(fake, "/api/generate", {"model": "llama3.2", "prompt": "def f(", "suffix": "return x"})
    assert suffix.json() == {"error": "registry.ollama.ai/library/llama3.2:latest does not support insert"}


# --- embeddings --------------------------------------------------------------------------------------------------


def test_embed_is_deterministic_normalised_ordered_and_meaningful(fake: FakeOllama) -> None:
    texts = ["a red fox runs in the snow", "a red fox walking in snow", "quarterly tax report for the board"]
    body = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": texts}).json()
    assert body["model"] == "nomic-embed-text" and body["prompt_eval_count"] > 0 and body["total_duration"] > 0
    fox, fox2, tax = body["embeddings"]
    assert len(fox) == 768 and all(math.isclose(sum(v * v for v in e), 1.0, rel_tol=1e-9) for e in (fox, fox2, tax))
    assert cosine(fox, fox2) > 0.5 > cosine(fox, tax)
    single = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": texts[1]}).json()
    assert single["embeddings"] == [fox2], "a string input gives the same vector as in a list"
    reversed_order = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": texts[::-1]}).json()
    assert reversed_order["embeddings"] == [tax, fox2, fox]
    with FakeOllama() as other:
        assert post(other, "/api/embed", {"model": "nomic-embed-text", "input": texts[0]}).json()["embeddings"] == [fox]
    minilm = post(fake, "/api/embed", {"model": "all-minilm", "input": ["x"]}).json()["embeddings"][0]
    assert len(minilm) == 384


def test_embed_dimensions_empty_input_and_errors(fake: FakeOllama) -> None:
    short = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": "hello", "dimensions": 64}).json()
    assert len(short["embeddings"][0]) == 64 and math.isclose(sum(v * v for v in short["embeddings"][0]), 1.0)
    assert post(fake, "/api/embed", {"model": "all-minilm", "input": []}).json() == {"model": "all-minilm",
                                                                                    "embeddings": []}
    assert post(fake, "/api/embed", {"model": "all-minilm", "input": ""}).json()["embeddings"] == []
    for bad in (3, [1, 2], {"text": "x"}, ["ok", None]):
        response = post(fake, "/api/embed", {"model": "all-minilm", "input": bad})
        assert response.status_code == 400 and response.json() == {"error": "invalid input type"}
    missing = post(fake, "/api/embed", {"model": "nope", "input": ["x"]})
    assert missing.status_code == 404 and missing.json() == {"error": 'model "nope" not found, try pulling it first'}
    long_text = " ".join(["word"] * 300)
    assert post(fake, "/api/embed", {"model": "all-minilm", "input": long_text}).status_code == 200
    too_long = post(fake, "/api/embed", {"model": "all-minilm", "input": long_text, "truncate": False})
    assert too_long.status_code == 400 and too_long.json() == {"error": "the input length exceeds the context length"}


def test_legacy_embeddings_are_not_normalised(fake: FakeOllama) -> None:
    legacy = post(fake, "/api/embeddings", {"model": "nomic-embed-text", "prompt": "a red fox"}).json()
    assert set(legacy) == {"embedding"} and len(legacy["embedding"]) == 768
    norm = math.sqrt(sum(v * v for v in legacy["embedding"]))
    assert norm > 1.5
    unit = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": "a red fox"}).json()["embeddings"][0]
    assert math.isclose(cosine([v / norm for v in legacy["embedding"]], unit), 1.0, rel_tol=1e-9)
    assert post(fake, "/api/embeddings", {"model": "all-minilm", "prompt": ""}).json() == {"embedding": []}
    assert post(fake, "/api/embeddings", {"model": "nope", "prompt": "x"}).status_code == 404
    assert post(fake, "/api/embeddings", {"prompt": "x"}).json() == {"error": "model is required"}


# --- test controls -----------------------------------------------------------------------------------------------


def test_requests_are_recorded(fake: FakeOllama) -> None:
    HTTP.get(f"{fake.url}/api/tags")
    post(fake, "/api/embed", {"model": "all-minilm", "input": "x"})
    HTTP.post(f"{fake.url}/api/chat", content=b"{broken")
    HTTP.get(f"{fake.url}/__fake__/state")
    assert fake.requests == [("GET", "/api/tags", None), ("POST", "/api/embed", {"model": "all-minilm", "input": "x"}),
                             ("POST", "/api/chat", "{broken")]
    fake.clear_requests()
    assert fake.requests == []


def test_go_down_refuses_connections_until_come_back(fake: FakeOllama) -> None:
    url = fake.url
    post(fake, "/api/generate", {"model": "llama3.2"})
    with httpx.Client() as client:
        assert client.get(f"{url}/api/version").status_code == 200  # a pooled keep-alive connection
        fake.go_down()
        with pytest.raises(httpx.ConnectError):
            client.get(f"{url}/api/version")
        fake.come_back()
        assert fake.url == url and client.get(f"{url}/api/version").status_code == 200
    assert fake.loaded_models == [], "a restarted Ollama has nothing loaded"
    assert HTTP.post(f"{url}/__fake__/go_down", json={"seconds": 0.3}).json() == {"ok": True}
    time.sleep(0.15)
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"{url}/api/version")
    deadline = time.monotonic() + 5
    while fake.down and time.monotonic() < deadline:
        time.sleep(0.02)
    assert HTTP.get(f"{url}/api/version").status_code == 200


def test_http_controls(fake: FakeOllama) -> None:
    control = f"{fake.url}/__fake__"
    HTTP.post(f"{control}/script", json={"model": "llama3.2", "replies": ["over HTTP", {"intent": "x"}]})
    assert HTTP.get(f"{control}/state").json()["scripts"] == {"llama3.2:latest": 2}
    assert post(fake, "/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False}).json()[
        "response"] == "over HTTP"
    HTTP.post(f"{control}/clear_scripts")
    HTTP.post(f"{control}/set_models", json={"models": ["phi4", {"name": "bge-m3", "capabilities": ["embedding"],
                                                                  "dims": 1024}]})
    assert [m["name"] for m in HTTP.get(f"{fake.url}/api/tags").json()["models"]] == ["phi4:latest",
                                                                                      "bge-m3:latest"]
    recorded = HTTP.get(f"{control}/requests").json()
    assert recorded[0] == ["POST", "/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False}]
    HTTP.post(f"{control}/set_queue_limit", params={"limit": 0})
    assert post(fake, "/api/chat", {"model": "phi4", "messages": USER_HI}).status_code == 503
    assert HTTP.post(f"{control}/nope").status_code == 404


def test_openai_compatible_chat_completions(fake: FakeOllama) -> None:
    fake.script("llama3.2", ["Hello there", {"tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}])
    body = post(fake, "/v1/chat/completions", {"model": "llama3.2", "messages": USER_HI}).json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Hello there"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    with HTTP.stream("POST", f"{fake.url}/v1/chat/completions",
                      json={"model": "llama3.2", "stream": True, "messages": USER_HI}) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1}
    missing = post(fake, "/v1/chat/completions", {"model": "nope", "messages": []})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]["message"]


def test_the_cli_serves_on_the_given_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.ollama_server", "--port", str(port), "--models",
                                "tinyllama=completion;bge=embedding/32"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert [m["name"] for m in HTTP.get(f"{url}/api/tags").json()["models"]] == ["tinyllama:latest",
                                                                                     "bge:latest"]
        assert len(HTTP.post(f"{url}/api/embed", json={"model": "bge", "input": "x"}).json()["embeddings"][0]) == 32
    finally:
        process.terminate()
        process.wait(10)


# --- real clients ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_OLLAMA_CLIENT, reason="the `ollama` Python client is not installed")
def test_the_ollama_client_validates_every_answer(fake: FakeOllama) -> None:
    import ollama

    client = ollama.Client(host=fake.url)
    assert next(m.model for m in client.list().models) == "llama3.2:latest"
    assert client.show("llava").capabilities == ["completion", "vision"]
    fake.script("llama3.2", [{"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                             {"content": "Half", "error": "runner died"}])
    called = client.chat("llama3.2", messages=USER_HI, tools=[])
    assert called.message.tool_calls is not None and called.message.tool_calls[0].function.arguments == {"a": 1}
    with pytest.raises(ollama.ResponseError, match="runner died"):
        list(client.chat("llama3.2", messages=USER_HI, stream=True))
    assert "".join(c.message.content or "" for c in client.chat("llama3.2", messages=USER_HI, stream=True)) \
        == "You said: hi"
    assert len(client.embed("all-minilm", ["a", "b"]).embeddings) == 2
    assert len(client.embeddings("all-minilm", "a").embedding) == 384
    assert client.generate("llama3.2", "x").response == "You said: x"
    assert {m.model for m in client.ps().models} == {"llama3.2:latest", "all-minilm:latest"}
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat("mistral", messages=USER_HI)
    assert missing.value.status_code == 404 and missing.value.error == "model 'mistral' not found"


@pytest.mark.skipif(not HAS_LANGCHAIN_OLLAMA, reason="langchain-ollama is not installed")
@pytest.mark.asyncio
async def test_chat_ollama_and_ollama_embeddings_work_against_it(fake: FakeOllama) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama, OllamaEmbeddings
    from pydantic import BaseModel

    fake.script("llama3.2", ["Paris is the capital.",
                             {"tool_calls": [{"function": {"name": "lookup", "arguments": {"city": "Paris"}}}]},
                             {"intent": "plan"}])
    chat = ChatOllama(model="llama3.2", base_url=fake.url, validate_model_on_init=True)
    reply = await chat.ainvoke([HumanMessage("capital of France?")])
    assert reply.content == "Paris is the capital." and reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] > 0

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    called = await chat.bind_tools([lookup]).ainvoke([HumanMessage("look up Paris")])
    assert called.tool_calls[0]["name"] == "lookup" and called.tool_calls[0]["args"] == {"city": "Paris"}

    class Choice(BaseModel):
        intent: str

    assert await chat.with_structured_output(Choice).ainvoke([HumanMessage("route me")]) == Choice(intent="plan")
    assert await chat.with_structured_output(Choice).ainvoke([HumanMessage("route me")]) == Choice(
        intent="You said: route me"), "unscripted: an instance of the schema"
    chunks = [c.content async for c in chat.astream([HumanMessage("stream this")])]
    assert "".join(str(c) for c in chunks) == "You said: stream this" and len(chunks) > 2
    embeddings = OllamaEmbeddings(model="all-minilm", base_url=fake.url)
    vectors = await embeddings.aembed_documents(["a", "b c"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert await embeddings.aembed_query("a") == vectors[0]
    with pytest.raises(Exception, match="not found"):
        await ChatOllama(model="mistral", base_url=fake.url).ainvoke([HumanMessage("hi")])
    with pytest.raises(ValueError, match="not found"):
        ChatOllama(model="mistral", base_url=fake.url, validate_model_on_init=True)
    sent = [body for method, path, body in fake.requests if path == "/api/chat"]
    assert sent[0]["stream"] is True and sent[0]["tools"] == [] and "options" in sent[0]


@pytest.mark.skipif(not HAS_LANGCHAIN_OLLAMA, reason="langchain-ollama is not installed")
@pytest.mark.asyncio
async def test_the_supervisor_answers_through_chat_ollama_on_the_fake(fake: FakeOllama, tmp_path: Path) -> None:
    from langchain_core.messages import HumanMessage

    from atelier.graphs.deps import SupervisorDeps
    from atelier.graphs.supervisor import build_supervisor
    from atelier.tools.settings import load_settings

    fake.script("llama3.2", ["Lisbon."])
    settings = load_settings(ollama_url=fake.url, data_dir=str(tmp_path))
    graph = build_supervisor(deps=SupervisorDeps(settings=settings)).compile()
    out = await graph.ainvoke({"messages": [HumanMessage("What is the capital of Portugal?")]})
    assert out["messages"][-1].content == "Lisbon." and out["hops"][-1]["llm_calls"] == 1
    assert out["hops"][-1]["prompt_tokens"] > 0, "token usage comes from Ollama's counters"
    pulled = load_settings(ollama_url=fake.url, data_dir=str(tmp_path), chat_model="qwen3")
    graph = build_supervisor(deps=SupervisorDeps(settings=pulled)).compile()
    out = await graph.ainvoke({"messages": [HumanMessage("What is the capital of Portugal?")]})
    assert "ollama pull qwen3" in out["messages"][-1].content
