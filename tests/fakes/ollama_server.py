"""A protocol-faithful fake Ollama on 127.0.0.1, for tests and for trying Atelier without a GPU.

Built from ../shared/reference/ollama-api.md (the API as langchain-ollama and the `ollama` client use it):
/api/chat and /api/generate (NDJSON streaming by default, or one object), tool calls, `format`, vision
captions, load/unload, /api/embed (L2-normalised, deterministic, similar texts close), legacy
/api/embeddings, /api/tags, /api/ps, /api/show, /api/version, the documented errors, and the
OpenAI-compatible /v1/chat/completions (JSON or SSE). Replies are scripted per model (`fake.script`);
unscripted chats echo the last user message.
Run by hand:  python -m tests.fakes.ollama_server --port 11434
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from PIL import Image

__all__ = ["DEFAULT_MODELS", "FakeModel", "FakeOllama"]


@dataclass
class FakeModel:
    """One installed model: its name, capabilities and (for embedding models) its dimension."""

    name: str
    capabilities: list[str]
    dims: int = 384
    family: str = "llama"

    @property
    def tag(self) -> str:
        """`name:latest` unless a tag is given."""
        return self.name if ":" in self.name else f"{self.name}:latest"


DEFAULT_MODELS: list[FakeModel] = [
    FakeModel("llama3.2", ["completion", "tools"]),
    FakeModel("llava", ["completion", "vision"], family="llava"),
    FakeModel("nomic-embed-text", ["embedding"], dims=768, family="nomic-bert"),
    FakeModel("all-minilm", ["embedding"], dims=384, family="bert"),
]


def _error(status: int, message: str) -> web.Response:
    """Ollama's error body."""
    return web.json_response({"error": message}, status=status)


def embed_text(text: str, dims: int) -> list[float]:
    """A deterministic unit vector: hashed words and word pairs, so texts sharing words are close."""
    vector = [0.0] * dims
    words = re.findall(r"[a-z0-9]+", text.lower())
    for gram in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
        digest = hashlib.sha256(gram.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dims] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def caption(image_b64: str) -> str:
    """A deterministic caption naming the image's size and dominant colour."""
    with Image.open(io.BytesIO(base64.b64decode(image_b64))) as image:
        rgb = image.convert("RGB")
        raw = rgb.resize((16, 16)).tobytes()
        r, g, b = (sum(raw[i::3]) / (len(raw) / 3) for i in range(3))
        width, height = image.size
    names = {"red": (r, g, b), "green": (g, r, b), "blue": (b, r, g)}
    colour = max(names, key=lambda n: names[n][0] - max(names[n][1:]))
    return f"A {width}x{height} image, mostly {colour}."


@dataclass
class _Server:
    """The state a real Ollama keeps in memory."""

    models: list[FakeModel]
    scripts: dict[str, list[Any]] = field(default_factory=dict)
    loaded: dict[str, datetime] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    queue_limit: int | None = None
    active: int = 0

    def find(self, name: str | None) -> FakeModel | None:
        """A model by `name` or `name:tag`."""
        if not name:
            return None
        for model in self.models:
            if name in (model.name, model.tag) or model.tag.startswith(f"{name}:"):
                return model
        return None


class FakeOllama:
    """`with FakeOllama() as fake:` serves on `fake.url` from its own thread and event loop."""

    def __init__(self, port: int = 0, *, models: list[FakeModel] | None = None, chunk_words: int = 2) -> None:
        self.port = port
        self.chunk_words = chunk_words
        self.state = _Server(list(models or DEFAULT_MODELS))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    # --- controls --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str, Any]]:
        """Every request so far: (method, path, JSON body)."""
        return list(self.state.requests)

    def script(self, model: str, replies: list[Any]) -> None:
        """Queue replies for a model: text, {"tool_calls": [...]}, {"json": obj}, {"error": msg, "status": n}."""
        self.state.scripts.setdefault(model, []).extend(replies)

    def set_models(self, models: list[FakeModel]) -> None:
        """Install exactly these models."""
        self.state.models = list(models)

    def set_queue_limit(self, limit: int | None) -> None:
        """Answer 503 when more than `limit` requests run at once (OLLAMA_MAX_QUEUE)."""
        self.state.queue_limit = limit

    # --- chat and generate -----------------------------------------------------------------------------

    def _reply(self, model: FakeModel, prompt: str, images: list[str], fmt: Any) -> dict[str, Any]:
        """The next scripted reply for a model, or the default (caption / echo)."""
        queue = self.state.scripts.get(model.name) or self.state.scripts.get(model.tag) or []
        if queue:
            item = queue.pop(0)
            if isinstance(item, str):
                return {"content": item}
            if "json" in item:
                return {"content": json.dumps(item["json"])}
            return dict(item)
        if images and "vision" in model.capabilities:
            return {"content": caption(images[-1])}
        if fmt:
            return {"content": json.dumps({"answer": prompt})}
        return {"content": f"You said: {prompt}"}

    def _keep_alive(self, model: FakeModel, value: Any) -> bool:
        """Apply keep_alive; True when it asks to unload (0)."""
        if isinstance(value, str) and value == "-1":
            raise web.HTTPBadRequest(text=json.dumps({"error": 'time: missing unit in duration "-1"'}),
                                     content_type="application/json")
        seconds = _duration(value)
        if seconds == 0:
            self.state.loaded.pop(model.tag, None)
            return True
        until = datetime.now(UTC) + (timedelta(days=365 * 290) if seconds < 0 else timedelta(seconds=seconds))
        self.state.loaded[model.tag] = until
        return False

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The JSON body, or Ollama's 400 for a missing or malformed one."""
        raw = await request.read()
        if not raw:
            return _error(400, "missing request body")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(400, str(exc))
        self.state.requests.append((request.method, request.path, body))
        if not isinstance(body, dict):
            return _error(400, "invalid request body")
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return await self._complete(request, body, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """POST /api/generate."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return await self._complete(request, body, chat=False)

    async def _complete(self, request: web.Request, body: dict[str, Any], *, chat: bool) -> web.StreamResponse:
        """Chat or generate: errors, load/unload, then one reply streamed or whole."""
        if not body.get("model"):
            return _error(400, "model is required")
        model = self.state.find(body["model"])
        if model is None:
            return _error(404, f"model '{body['model']}' not found")
        if "completion" not in model.capabilities:
            return _error(400, f'"{body["model"]}" does not support {"chat" if chat else "generate"}')
        if body.get("tools") and "tools" not in model.capabilities:
            return _error(400, f"registry.ollama.ai/library/{model.tag} does not support tools")
        if self.state.queue_limit is not None and self.state.active >= self.state.queue_limit:
            return _error(503, "server busy, please try again.  maximum pending requests exceeded")
        messages = body.get("messages") or []
        unload = self._keep_alive(model, body.get("keep_alive", 300))
        base = {"model": body["model"], "created_at": _now()}
        if (chat and not messages) or (not chat and not body.get("prompt")):
            reason = "unload" if unload else "load"
            empty = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            return web.json_response({**base, **empty, "done": True, "done_reason": reason})
        if chat:
            users = [m for m in messages if m.get("role") == "user"]
            prompt = str(users[-1].get("content", "")) if users else ""
            images = [i for m in messages for i in (m.get("images") or [])]
        else:
            prompt, images = str(body.get("prompt", "")), list(body.get("images") or [])
        reply = self._reply(model, prompt, images, body.get("format"))
        if "error" in reply and "status" in reply:
            return _error(int(reply["status"]), str(reply["error"]))
        counts = {"total_duration": 1_000_000, "load_duration": 10_000, "prompt_eval_count": len(prompt.split()) + 1,
                  "prompt_eval_duration": 100_000, "eval_count": len(str(reply.get("content", "")).split()) + 1,
                  "eval_duration": 200_000}
        self.state.active += 1
        try:
            if body.get("stream", True) is False:
                return web.json_response({**base, **self._piece(reply, chat, whole=True), "done": True,
                                          "done_reason": "stop", **counts})
            return await self._stream(request, base, reply, chat, counts)
        finally:
            self.state.active -= 1

    def _piece(self, reply: dict[str, Any], chat: bool, *, whole: bool, text: str | None = None) -> dict[str, Any]:
        """The content part of one line."""
        content = str(reply.get("content", "")) if text is None else text
        if not chat:
            return {"response": content}
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if whole and reply.get("tool_calls"):
            message["tool_calls"] = reply["tool_calls"]
        return {"message": message}

    async def _stream(self, request: web.Request, base: dict[str, Any], reply: dict[str, Any], chat: bool,
                      counts: dict[str, int]) -> web.StreamResponse:
        """NDJSON: content in small pieces, tool calls in one line, then done (or a mid-stream error line)."""
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        words = re.findall(r"\S+\s*", str(reply.get("content", "")))
        for start in range(0, len(words), self.chunk_words):
            piece = "".join(words[start:start + self.chunk_words])
            line = {**base, **self._piece(reply, chat, whole=False, text=piece), "done": False}
            await response.write((json.dumps(line) + "\n").encode())
        if reply.get("mid_stream_error"):
            await response.write((json.dumps({"error": reply["mid_stream_error"]}) + "\n").encode())
            await response.write_eof()
            return response
        if chat and reply.get("tool_calls"):
            line = {**base, "message": {"role": "assistant", "content": "", "tool_calls": reply["tool_calls"]},
                    "done": False}
            await response.write((json.dumps(line) + "\n").encode())
        last = {**base, **self._piece(reply, chat, whole=False, text=""), "done": True, "done_reason": "stop", **counts}
        await response.write((json.dumps(last) + "\n").encode())
        await response.write_eof()
        return response

    # --- embeddings ------------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.Response:
        """POST /api/embed: one normalised vector per input."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = self.state.find(body.get("model"))
        if model is None:
            return _error(404, f'model "{body.get("model")}" not found, try pulling it first')
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "invalid input type")
        dims = int(body.get("dimensions") or model.dims)
        return web.json_response({"model": body["model"], "embeddings": [embed_text(t, dims) for t in texts],
                                  "total_duration": 1000, "load_duration": 10,
                                  "prompt_eval_count": sum(len(t.split()) for t in texts)})

    async def embeddings(self, request: web.Request) -> web.Response:
        """Legacy POST /api/embeddings: {embedding}, not normalised."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = self.state.find(body.get("model"))
        if model is None:
            return _error(404, f'model "{body.get("model")}" not found, try pulling it first')
        return web.json_response({"embedding": [v * 3.0 for v in embed_text(str(body.get("prompt", "")),
                                                                              model.dims)]})

    # --- model info --------------------------------------------------------------------------------------

    def _entry(self, model: FakeModel) -> dict[str, Any]:
        """A /api/tags entry."""
        return {"name": model.tag, "model": model.tag, "modified_at": "2026-11-01T10:00:00Z", "size": 2019393189,
                "digest": hashlib.sha256(model.tag.encode()).hexdigest(),
                "details": {"parent_model": "", "format": "gguf", "family": model.family, "families": [model.family],
                            "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
                "capabilities": model.capabilities}

    async def tags(self, request: web.Request) -> web.Response:
        """GET /api/tags."""
        return web.json_response({"models": [self._entry(m) for m in self.state.models]})

    async def ps(self, request: web.Request) -> web.Response:
        """GET /api/ps: loaded models, latest expiry first."""
        now = datetime.now(UTC)
        loaded = [(tag, until) for tag, until in self.state.loaded.items() if until > now]
        loaded.sort(key=lambda item: item[1], reverse=True)
        models = []
        for tag, until in loaded:
            entry = self._entry(self.state.find(tag) or FakeModel(tag, []))
            models.append({k: entry[k] for k in ("name", "model", "size", "digest", "details")}
                          | {"size_vram": entry["size"], "expires_at": until.isoformat(), "context_length": 4096})
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        """POST /api/show."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = self.state.find(body.get("model"))
        if model is None:
            return _error(404, f"model '{body.get('model')}' not found")
        return web.json_response({"license": "", "modelfile": f"FROM {model.tag}", "parameters": "",
                                  "template": "{{ .Prompt }}", "details": self._entry(model)["details"],
                                  "model_info": {"general.architecture": model.family},
                                  "capabilities": model.capabilities, "modified_at": "2026-11-01T10:00:00Z"})

    async def root(self, request: web.Request) -> web.Response:
        """GET /: what a running Ollama answers."""
        return _text("Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        """GET /api/version."""
        return web.json_response({"version": "0.12.6"})

    # --- OpenAI-compatible ---------------------------------------------------------------------------------

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions (what CrewAI and AutoGen clients may use)."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = self.state.find(body.get("model"))
        if model is None:
            return web.json_response({"error": {"message": f"model '{body.get('model')}' not found",
                                                "type": "api_error", "param": None, "code": None}}, status=404)
        users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        prompt = str(users[-1].get("content", "")) if users else ""
        reply = self._reply(model, prompt, [], body.get("response_format"))
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:8]}", int(time.time())
        calls = [{"id": f"call_{i}", "type": "function", "function": {
            "name": c["function"]["name"], "arguments": json.dumps(c["function"].get("arguments", {}))}}
            for i, c in enumerate(reply.get("tool_calls") or [])]
        message: dict[str, Any] = {"role": "assistant", "content": str(reply.get("content", ""))}
        if calls:
            message["tool_calls"] = calls
        usage = {"prompt_tokens": len(prompt.split()) + 1, "completion_tokens": len(message["content"].split()) + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            return web.json_response({"id": ident, "object": "chat.completion", "created": created,
                                      "model": body["model"], "system_fingerprint": "fp_ollama",
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                      "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], reason: str | None) -> None:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                     "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "delta": delta,
                                                                     "finish_reason": reason}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        for word in re.findall(r"\S+\s*", message["content"]):
            await send({"role": "assistant", "content": word}, None)
        if calls:
            await send({"role": "assistant", "tool_calls": [c | {"index": i} for i, c in enumerate(calls)]}, None)
        await send({}, finish)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # --- lifecycle -----------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        """Routes."""
        app = web.Application()
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("POST", "/api/chat", self.chat), ("POST", "/api/generate", self.generate),
            ("POST", "/api/embed", self.embed), ("POST", "/api/embeddings", self.embeddings),
            ("GET", "/api/tags", self.tags), ("GET", "/api/ps", self.ps), ("POST", "/api/show", self.show),
            ("GET", "/api/version", self.version), ("POST", "/v1/chat/completions", self.openai_chat),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        app.router.add_route("GET", "/", self.root)
        return app

    async def _serve(self) -> AsyncIterator[None]:
        """Bind, serve, clean up."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        yield
        await self._runner.cleanup()

    def start(self) -> FakeOllama:
        """Serve from a background thread; returns when the port is bound."""
        stop = asyncio.Event()

        async def main() -> None:
            self._stop = stop
            serving = self._serve()
            await anext(serving)
            self._ready.set()
            await stop.wait()
            await anext(serving, None)

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-ollama", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Ollama did not start")
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused afterwards)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._loop = self._thread = None
        self._ready.clear()

    def __enter__(self) -> FakeOllama:
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()


def _text(text: str) -> web.Response:
    """A plain-text answer."""
    return web.Response(text=text)


def _now() -> str:
    """Ollama's created_at."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _duration(value: Any) -> float:
    """keep_alive in seconds: a number, or a Go duration such as '10m', '0', '-1m'."""
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
    if not match:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"time: invalid duration {value!r}"}),
                                 content_type="application/json")
    if match.group(2) is None and match.group(1) not in ("0",):
        raise web.HTTPBadRequest(text=json.dumps({"error": f'time: missing unit in duration "{value}"'}),
                                 content_type="application/json")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def main() -> None:
    """Serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A fake Ollama for trying Atelier without a GPU.")
    parser.add_argument("--port", type=int, default=11434)
    args = parser.parse_args()
    with FakeOllama(args.port) as fake:
        print(f"fake Ollama on {fake.url}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
