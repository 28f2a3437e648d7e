"""The fake Ollama speaks the protocol langchain-ollama, the ollama client and OpenAI clients expect."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.fakes.ollama_server import FakeOllama


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """A fresh fake per test."""
    with FakeOllama() as server:
        yield server


def test_chat_streams_ndjson_lines_ending_with_done(fake: FakeOllama) -> None:
    fake.script("llama3.2", ["one two three four five"])
    with httpx.stream("POST", f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": [
            {"role": "user", "content": "count"}]}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == "one two three four five"
    assert [line["done"] for line in lines][-1] is True and lines[-1]["done_reason"] == "stop"
    assert lines[-1]["prompt_eval_count"] > 0 and lines[-1]["eval_count"] > 0


def test_documented_errors(fake: FakeOllama) -> None:
    chat = f"{fake.url}/api/chat"
    assert httpx.post(chat, content=b"").json() == {"error": "missing request body"}
    assert httpx.post(chat, json={"messages": []}).json() == {"error": "model is required"}
    unknown = httpx.post(chat, json={"model": "mistral", "messages": [{"role": "user", "content": "x"}]})
    assert unknown.status_code == 404 and unknown.json()["error"] == "model 'mistral' not found"
    embed_only = httpx.post(chat, json={"model": "all-minilm", "messages": [{"role": "user", "content": "x"}]})
    assert embed_only.status_code == 400 and embed_only.json()["error"] == '"all-minilm" does not support chat'
    tools = httpx.post(chat, json={"model": "llava", "messages": [{"role": "user", "content": "x"}],
                                   "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert tools.json()["error"] == "registry.ollama.ai/library/llava:latest does not support tools"
    missing = httpx.post(f"{fake.url}/api/embed", json={"model": "nope", "input": ["x"]})
    assert missing.status_code == 404 and missing.json()["error"] == 'model "nope" not found, try pulling it first'
    bad = httpx.post(f"{fake.url}/api/embed", json={"model": "all-minilm", "input": 3})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid input type"


def test_embeddings_are_normalised_deterministic_and_meaningful(fake: FakeOllama) -> None:
    texts = ["a red fox in the snow", "a red fox walking in snow", "quarterly tax report"]
    body = httpx.post(f"{fake.url}/api/embed", json={"model": "nomic-embed-text", "input": texts}).json()
    fox, fox2, tax = body["embeddings"]
    assert len(fox) == 768 and math.isclose(sum(v * v for v in fox), 1.0, rel_tol=1e-9)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(fox, fox2) > cosine(fox, tax)
    again = httpx.post(f"{fake.url}/api/embed", json={"model": "nomic-embed-text", "input": texts[0]}).json()
    assert again["embeddings"] == [fox]
    empty = httpx.post(f"{fake.url}/api/embed", json={"model": "all-minilm", "input": []}).json()
    assert empty["embeddings"] == []


def test_load_unload_ps_tags_show_and_version(fake: FakeOllama) -> None:
    loaded = httpx.post(f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": []}).json()
    assert loaded["done_reason"] == "load" and loaded["message"]["content"] == ""
    assert [m["name"] for m in httpx.get(f"{fake.url}/api/ps").json()["models"]] == ["llama3.2:latest"]
    gone = httpx.post(f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": [], "keep_alive": 0}).json()
    assert gone["done_reason"] == "unload" and httpx.get(f"{fake.url}/api/ps").json()["models"] == []
    assert httpx.post(f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": [],
                                                    "keep_alive": "-1"}).status_code == 400
    names = [m["model"] for m in httpx.get(f"{fake.url}/api/tags").json()["models"]]
    assert "llava:latest" in names and "nomic-embed-text:latest" in names
    shown = httpx.post(f"{fake.url}/api/show", json={"model": "llava"}).json()
    assert "vision" in shown["capabilities"] and shown["model_info"] is not None
    assert httpx.get(f"{fake.url}/api/version").json()["version"]


def test_a_vision_model_captions_an_image(fake: FakeOllama) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (220, 30, 30)).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    body = httpx.post(f"{fake.url}/api/chat", json={"model": "llava", "stream": False, "messages": [
        {"role": "user", "content": "describe", "images": [image]}]}).json()
    assert body["message"]["content"] == "A 40x20 image, mostly red." and body["done"] is True


@pytest.mark.asyncio
async def test_chat_ollama_and_ollama_embeddings_work_against_it(fake: FakeOllama) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama, OllamaEmbeddings
    from pydantic import BaseModel

    fake.script("llama3.2", ["Paris is the capital.",
                             {"tool_calls": [{"function": {"name": "lookup", "arguments": {"city": "Paris"}}}]},
                             {"json": {"intent": "plan"}}])
    chat = ChatOllama(model="llama3.2", base_url=fake.url)
    reply = await chat.ainvoke([HumanMessage("capital of France?")])
    assert reply.content == "Paris is the capital." and reply.usage_metadata is not None

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    called = await chat.bind_tools([lookup]).ainvoke([HumanMessage("look up Paris")])
    assert called.tool_calls[0]["name"] == "lookup" and called.tool_calls[0]["args"] == {"city": "Paris"}

    class Choice(BaseModel):
        intent: str

    assert await chat.with_structured_output(Choice).ainvoke([HumanMessage("route me")]) == Choice(intent="plan")
    vectors = await OllamaEmbeddings(model="all-minilm", base_url=fake.url).aembed_documents(["a", "b c"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    missing = ChatOllama(model="mistral", base_url=fake.url)
    with pytest.raises(Exception, match="not found"):
        await missing.ainvoke([HumanMessage("hi")])


def test_openai_compatible_chat_completions(fake: FakeOllama) -> None:
    fake.script("llama3.2", ["Hello there", {"tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}])
    body = httpx.post(f"{fake.url}/v1/chat/completions", json={"model": "llama3.2", "messages": [
        {"role": "user", "content": "hi"}]}).json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Hello there"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    with httpx.stream("POST", f"{fake.url}/v1/chat/completions", json={"model": "llama3.2", "stream": True,
                                                                       "messages": [{"role": "user", "content": "x"}]}
                      ) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    missing = httpx.post(f"{fake.url}/v1/chat/completions", json={"model": "nope", "messages": []})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]["message"]


@pytest.mark.asyncio
async def test_the_supervisor_answers_through_chat_ollama_on_the_fake(fake: FakeOllama, tmp_path: object) -> None:
    from langchain_core.messages import HumanMessage

    from graphs.deps import SupervisorDeps
    from graphs.supervisor import build_supervisor
    from tools.settings import load_settings

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
