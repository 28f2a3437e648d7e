"""A protocol-faithful fake Ollama on 127.0.0.1, for tests and for trying Atelier without a GPU.

Built from ../shared/reference/ollama-api.md and Ollama's server/routes.go: /api/chat and /api/generate (NDJSON
streaming unless `"stream": false`), tool calls, `format`, `think`, vision captions (and the refusal of images sent
to a model that cannot see), load/unload and keep_alive, /api/embed (deterministic, L2-normalised, texts sharing
words close), legacy /api/embeddings, /api/tags, /api/ps, /api/show, /api/version, the documented errors with the
same statuses and messages, and /v1/chat/completions.
Replies are scripted per model (`fake.script`); unscripted chats echo the last user message. Tests drive it
in-process (`FakeOllama`, its own thread and event loop) or over HTTP (`/__fake__/{action}`).
Run by hand:  python -m tests.fakes.ollama_server --port 11434 [--models 'llama3.2=completion,tools;…']
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes import ollama_wire as wire
from tests.fakes.fake_gpu import FakeGpu
from tests.fakes.loopback_runner import Control, after_answer, dispatch_control
from tests.fakes.ollama_content import (
    Reply,
    count_tokens,
    embed_text,
    embedding,
    pieces,
    raw_embedding,
    wire_tool_calls,
)
from tests.fakes.ollama_models import DEFAULT_MODELS, FakeModel, display_name, model_from_json, parse_models
from tests.fakes.ollama_openai import openai_answer, openai_error, openai_format, openai_prompt
from tests.fakes.ollama_runtime import BackgroundServer
from tests.fakes.ollama_state import OllamaState, quoted
from tests.fakes.ollama_wire import ApiError, json_response, keep_alive_seconds, now

__all__ = ["DEFAULT_MODELS", "FakeModel", "FakeOllama", "Reply", "embed_text"]

VERSION = "0.32.15"
# Images sent to a model without a vision projector. Since Ollama runs models on llama-server (0.30+), the model is
# loaded, llama-server refuses the image (`oaicompat_chat_params_parse`: HTTP 500, its own error object) and Ollama
# passes that body on as the error text, with the same status (llm/llama_server.go `statusErrorMessage`).
NO_VISION = ('{"error":{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may '
             'need to provide the mmproj","type":"server_error"}}')


def _context_ids(text: str) -> list[int]:
    """/api/generate's `context`: stable token ids for the conversation."""
    return [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big") % 128256 for w in text.split()]


class FakeOllama(BackgroundServer):
    """The fake server. `with FakeOllama() as fake:` serves on `fake.url` from its own thread and event loop.

    `models` replaces the installed models (default: llama3.2, llava, nomic-embed-text, all-minilm). Streams
    send `chunk_words` words per line, `chunk_delay` seconds apart. A model request arriving while `queue_limit`
    are in flight answers 503 (OLLAMA_MAX_QUEUE); `keep_alive` is the default in seconds (OLLAMA_KEEP_ALIVE);
    loading a model past `max_loaded_models` unloads the one expiring first. Given a FakeGpu, its loaded models
    (those `on_gpu`, `size` bytes each) take that GPU's memory, under the name `gpu_holder`.
    """

    thread_name = "fake-ollama"

    def __init__(self, port: int = 0, *, models: list[FakeModel] | None = None, chunk_words: int = 1,
                 chunk_delay: float = 0.0, queue_limit: int = 512, keep_alive: float = 300.0,
                 max_loaded_models: int = 3, version: str = VERSION, seed: int = 0, gpu: FakeGpu | None = None,
                 gpu_holder: str = "ollama") -> None:
        super().__init__(port)
        self.chunk_words = chunk_words
        self.chunk_delay = chunk_delay
        self.version = version
        self.state = OllamaState(models, queue_limit=queue_limit, keep_alive=keep_alive,
                                 max_loaded_models=max_loaded_models, seed=seed)
        self._requests: list[tuple[str, str, Any]] = []
        self.gpu = gpu
        if gpu is not None:
            gpu.attach(gpu_holder, self.state.vram_held)
            self.state.on_change = lambda action, model: gpu.note(gpu_holder, action, model)

    def _setup_loop(self) -> None:
        """Create the pause gate on the server's loop."""
        self.state.bind_loop()

    def _on_down(self) -> None:
        """A stopped Ollama forgets which models it had loaded."""
        self.state.unload_all()

    # --- chat and generate ---------------------------------------------------------------------------------------

    def _installed(self, name: str, not_found: str) -> FakeModel:
        """The model `name` resolves to, else 404 with `not_found`."""
        model = self.state.find(name) if name else None
        if model is None:
            raise ApiError(404, not_found)
        return model

    def _keep_alive(self, body: dict[str, Any]) -> float:
        """The request's keep_alive in seconds (the server default when absent)."""
        return keep_alive_seconds(body.get("keep_alive"), self.state.default_keep_alive)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat."""
        body = wire.decode_body(await request.read(), "ChatRequest", wire.CHAT_FIELDS)
        _check_logprobs(body)
        name = str(body.get("model") or "")
        if not name:
            raise ApiError(400, "model is required")
        model = self._installed(name, f"model '{name}' not found")
        messages: list[dict[str, Any]] = body.get("messages") or []
        keep_alive = self._keep_alive(body)
        empty = {"model": name, "created_at": "", "message": {"role": "assistant", "content": ""}, "done": True}
        if not messages and body.get("keep_alive") is not None and keep_alive == 0:
            self.state.unload(model)
            return json_response({**empty, "created_at": now(), "done_reason": "unload"})
        thinking = self.state.thinking(model, name, body)
        if "completion" not in model.capabilities:
            raise ApiError(400, f"{quoted(name)} does not support chat")
        if body.get("tools") and "tools" not in model.capabilities:
            raise ApiError(400, f"{model.full_name} does not support tools")
        async with self.state.admit(model, keep_alive) as warm:
            if not messages:
                return json_response({**empty, "created_at": now(), "done_reason": "load"})
            users = [m for m in messages if str(m.get("role", "")).lower() == "user"]
            prompt = str(users[-1].get("content") or "") if users else ""
            images = [image for m in messages for image in m.get("images") or []]
            if images and "vision" not in model.capabilities:
                raise ApiError(500, NO_VISION)
            reply = self.state.next_reply(model, prompt, images, body.get("format"), thinking)
            prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
            return await self._answer(request, name, body, reply, chat=True, warm=warm, prompt_tokens=prompt_tokens)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """POST /api/generate."""
        body = wire.decode_body(await request.read(), "GenerateRequest", wire.GENERATE_FIELDS)
        _check_logprobs(body)
        name = str(body.get("model") or "")
        model = self._installed(name, f"model '{name}' not found")
        keep_alive = self._keep_alive(body)
        prompt = str(body.get("prompt") or "")
        empty = {"model": name, "created_at": "", "response": "", "done": True}
        if not prompt and body.get("keep_alive") is not None and keep_alive == 0:
            self.state.unload(model)
            return json_response({**empty, "created_at": now(), "done_reason": "unload"})
        if "image" in model.capabilities:
            raise ApiError(400, "image generation models are not currently supported")
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        thinking = self.state.thinking(model, name, body)
        if "completion" not in model.capabilities:
            raise ApiError(400, f"{quoted(name)} does not support generate")
        if body.get("suffix") and "insert" not in model.capabilities:
            raise ApiError(400, f"{model.full_name} does not support insert")
        async with self.state.admit(model, keep_alive) as warm:
            if not prompt:
                return json_response({**empty, "created_at": now(), "done_reason": "load"})
            images = list(body.get("images") or [])
            reply = self.state.next_reply(model, prompt, images, body.get("format"), thinking)
            prompt_tokens = count_tokens(str(body.get("system") or "") + " " + prompt) + 4
            return await self._answer(request, name, body, reply, chat=False, warm=warm, prompt_tokens=prompt_tokens)

    async def _answer(self, request: web.Request, name: str, body: dict[str, Any], reply: Reply, *, chat: bool,
                      warm: bool, prompt_tokens: int) -> web.StreamResponse:
        """Send one reply: NDJSON lines (thinking, content, tool calls, then `done`), or one object."""
        calls = wire_tool_calls(reply.tool_calls, self.state.rng)
        thoughts, words = pieces(reply.thinking, self.chunk_words), pieces(reply.content, self.chunk_words)
        stream = body.get("stream") is not False
        if reply.error is not None and (reply.status is not None or not stream or not (thoughts or words or calls)):
            raise ApiError(reply.status or 500, reply.error)

        def part(content: str = "", thinking: str = "", tool_calls: list[dict[str, Any]] | None = None,
                 ) -> dict[str, Any]:
            extra: dict[str, Any] = {"thinking": thinking} if thinking else {}
            extra.update({"tool_calls": tool_calls} if tool_calls else {})
            if chat:
                return {"model": name, "created_at": now(), "message": {"role": "assistant", "content": content,
                                                                        **extra}}
            return {"model": name, "created_at": now(), "response": content, **extra}

        eval_count = max(1, count_tokens(reply.thinking + " " + reply.content) + 10 * len(calls))
        load = 1_334_875 if warm else 512_000_000
        timing = {"total_duration": load + prompt_tokens * 1_000_000 + eval_count * 16_000_000 + 250_000,
                  "load_duration": load, "prompt_eval_count": prompt_tokens,
                  "prompt_eval_duration": prompt_tokens * 1_000_000, "eval_count": eval_count,
                  "eval_duration": eval_count * 16_000_000}
        context = {} if chat else {"context": _context_ids(f"{body.get('prompt', '')} {reply.content}")}
        final = {"done": True, "done_reason": reply.done_reason, **context, **timing}
        if not stream:
            return json_response({**part(reply.content, reply.thinking, calls), **final})
        lines = [{**part(thinking=p), "done": False} for p in thoughts]
        lines += [{**part(content=p), "done": False} for p in words]
        lines += [{**part(tool_calls=calls), "done": False}] if calls else []
        lines.append({"error": reply.error} if reply.error is not None else {**part(), **final})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await response.write((wire.dumps(line) + "\n").encode())
        await response.write_eof()
        return response

    # --- embeddings ----------------------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.Response:
        """POST /api/embed: one L2-normalised vector per input, in order."""
        body = wire.decode_body(await request.read(), "EmbedRequest", wire.EMBED_FIELDS)
        name = str(body.get("model") or "")
        if not name:
            raise ApiError(404, "model '' not found")
        given = body.get("input")
        if isinstance(given, list) and all(isinstance(text, str) for text in given):
            texts = list(given)
        elif isinstance(given, str) or given is None:
            texts = [given] if given else []
        else:
            raise ApiError(400, "invalid input type")
        model = self._installed(name, f"model {quoted(name)} not found, try pulling it first")
        async with self.state.admit(model, self._keep_alive(body)) as warm:
            if not texts:
                return json_response({"model": name, "embeddings": []})
            tokens = [count_tokens(text) + 2 for text in texts]
            if body.get("truncate") is False and max(tokens) > model.context_length:
                raise ApiError(400, "the input length exceeds the context length")
            vectors = [embedding(text, model.dims, int(body.get("dimensions") or 0)) for text in texts]
            load = 1_334_875 if warm else 512_000_000
            return json_response({"model": name, "embeddings": vectors, "total_duration": load + 2_000_000 * len(texts),
                                  "load_duration": load, "prompt_eval_count": sum(tokens)})

    async def embeddings(self, request: web.Request) -> web.Response:
        """Legacy POST /api/embeddings {model, prompt}: {embedding}, not normalised."""
        body = wire.decode_body(await request.read(), "EmbeddingRequest", wire.EMBEDDINGS_FIELDS)
        name = str(body.get("model") or "")
        if not name:
            raise ApiError(400, "model is required")
        model = self._installed(name, f"model {quoted(name)} not found, try pulling it first")
        async with self.state.admit(model, self._keep_alive(body)):
            prompt = str(body.get("prompt") or "")
            return json_response({"embedding": raw_embedding(prompt, model.dims) if prompt else []})

    # --- model info and misc -------------------------------------------------------------------------------------

    async def tags(self, request: web.Request) -> web.Response:
        """GET /api/tags: the installed models."""
        with self.state.lock:
            return json_response({"models": [m.tags_entry() for m in self.state.models]})

    async def ps(self, request: web.Request) -> web.Response:
        """GET /api/ps: the loaded models, longest time left first."""
        return json_response({"models": [m.ps_entry(until) for m, until in self.state.loaded_models()]})

    async def show(self, request: web.Request) -> web.Response:
        """POST /api/show {model} (or {name}); model_info is always present."""
        body = wire.decode_body(await request.read(), "ShowRequest", wire.SHOW_FIELDS)
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            raise ApiError(400, "model is required")
        return json_response(self._installed(name, f"model '{display_name(name)}' not found").show_body())

    async def version_route(self, request: web.Request) -> web.Response:
        """GET /api/version."""
        return json_response({"version": self.version})

    async def root(self, request: web.Request) -> web.Response:
        """GET / (and HEAD /): what a running Ollama answers."""
        return web.Response(text="Ollama is running")

    async def not_found(self, request: web.Request) -> web.Response:
        """Any other path or method: gin's plain 404."""
        return web.Response(status=404, text="404 page not found")

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions (OpenAI-compatible, errors in OpenAI's shape; scripted like /api/chat)."""
        try:
            body = wire.decode_body(await request.read(), "ChatCompletionRequest", {"model": "string"})
            name = str(body.get("model") or "")
            model = self._installed(name, f"model '{name}' not found")
            prompt = openai_prompt(body.get("messages") or [])
            async with self.state.admit(model, self.state.default_keep_alive):
                reply = self.state.next_reply(model, prompt, [], openai_format(body), thinking=False)
                return await openai_answer(request, body, reply, prompt, self.state.rng)
        except ApiError as exc:
            return openai_error(exc.status, exc.message)

    # --- test controls ---------------------------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        """/__fake__/{action}: the Python controls over HTTP (parameters in the query or a JSON body)."""
        queries: dict[str, Control] = {
            "requests": lambda _: [list(r) for r in self.requests],
            "state": lambda _: {**self.state.snapshot(), "down": self.down},
        }
        actions: dict[str, Control] = {
            "script": lambda p: self.script(str(p["model"]), list(p.get("replies", []))),
            "clear_scripts": lambda _: self.clear_scripts(),
            "clear_requests": lambda _: self.clear_requests(),
            "set_models": lambda p: self.state.set_models([model_from_json(m) for m in p.get("models", [])]),  # on loop
            "set_queue_limit": lambda p: self.set_queue_limit(int(p["limit"])),
            "pause": lambda _: self.state.set_paused(True),
            "resume": lambda _: self.state.set_paused(False),
            "go_down": lambda p: after_answer(
                partial(self._go_down_for, float(p["seconds"]) if "seconds" in p else None)),
        }
        return await dispatch_control(request, queries=queries, actions=actions, respond=json_response)

    def _app(self) -> web.Application:
        """The routes, behind a middleware that records requests and turns ApiError into Ollama's error body."""

        @web.middleware
        async def middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            if not request.path.startswith("/__fake__/"):
                raw = await request.read()
                try:
                    recorded: Any = json.loads(raw) if raw.strip() else None
                except ValueError:
                    recorded = raw.decode("utf-8", errors="replace")
                with self.state.lock:
                    self._requests.append((request.method, request.path, recorded))
            try:
                return await handler(request)
            except ApiError as exc:
                return wire.error_response(exc.status, exc.message)

        app = web.Application(middlewares=[middleware], client_max_size=100 * 2**20)
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/", self.root), ("GET", "/api/version", self.version_route), ("GET", "/api/tags", self.tags),
            ("HEAD", "/", self.root), ("HEAD", "/api/version", self.version_route), ("HEAD", "/api/tags", self.tags),
            ("GET", "/api/ps", self.ps), ("POST", "/api/show", self.show), ("POST", "/api/chat", self.chat),
            ("POST", "/api/generate", self.generate), ("POST", "/api/embed", self.embed),
            ("POST", "/api/embeddings", self.embeddings), ("POST", "/v1/chat/completions", self.openai_chat),
            ("*", "/__fake__/{action}", self.control), ("*", "/{tail:.*}", self.not_found),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    # --- controls, callable from any thread ------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, Any]]:
        """Every request so far but /__fake__ ones: (method, path, JSON body; None when empty, text if malformed)."""
        with self.state.lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self.state.lock:
            self._requests.clear()

    def script(self, model: str, replies: list[Any]) -> None:
        """Queue replies for a model (any spelling of its name), used in order by chat, generate and /v1.

        A reply is text; a Reply; a dict of Reply fields such as {"tool_calls": [{"function": {"name": "f",
        "arguments": {…}}}]}, {"content": "partial", "error": "boom"} (a mid-stream error line) or {"error": "busy",
        "status": 503}; {"json": value}; or any other dict or list, sent as JSON text (what `format` wants).
        """
        self.state.script(model, replies)

    def clear_scripts(self) -> None:
        """Drop every queued reply."""
        with self.state.lock:
            self.state.scripts.clear()

    def set_models(self, models: list[FakeModel]) -> None:
        """Install exactly these models (loaded models that are gone unload)."""
        self._run_on_loop(lambda: self.state.set_models(models))

    def set_queue_limit(self, limit: int) -> None:
        """Answer 503 to a model request arriving while `limit` are in flight (OLLAMA_MAX_QUEUE)."""
        self.state.queue_limit = limit

    def pause(self) -> None:
        """Hold every new model request (chat, generate, embed) until resume(); held requests count as in flight."""
        self._run_on_loop(lambda: self.state.set_paused(True))

    def resume(self) -> None:
        """Let held requests run."""
        self._run_on_loop(lambda: self.state.set_paused(False))

    @property
    def loaded_models(self) -> list[str]:
        """The names /api/ps lists now, longest time left first."""
        return self._run_on_loop(lambda: [model.tag for model, _ in self.state.loaded_models()])

    def stop(self) -> None:
        """Release held requests, then stop serving and end the thread."""
        if self._loop is not None:
            self.resume()
        super().stop()


def _check_logprobs(body: dict[str, Any]) -> None:
    """top_logprobs must be 0–20."""
    if not 0 <= (body.get("top_logprobs") or 0) <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")


def main(argv: list[str] | None = None) -> None:
    """Serve a fake Ollama in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A fake Ollama on 127.0.0.1 for trying Atelier without a GPU.")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--models", type=parse_models, default=None,
                        help="installed models, e.g. 'llama3.2=completion,tools;nomic-embed-text=embedding/768'")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between streamed lines")
    args = parser.parse_args(argv)
    fake = FakeOllama(args.port, models=args.models, chunk_delay=args.chunk_delay)
    fake.serve_forever(lambda fake: f"fake Ollama listening on {fake.url}; Ctrl-C stops it")


if __name__ == "__main__":
    main()
