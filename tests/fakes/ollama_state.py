"""What the fake Ollama keeps in memory: installed and loaded models, the request queue, and the tests' scripts."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from tests.fakes.ollama_content import Reply, as_reply, caption, json_reply
from tests.fakes.ollama_models import FakeModel, canonical, default_models, display_name
from tests.fakes.ollama_wire import ApiError, expiry, think_value

QUEUE_BUSY = "server busy, please try again.  maximum pending requests exceeded"


def quoted(name: str) -> str:
    """Go's %q of a model name."""
    return json.dumps(name, ensure_ascii=False)


class OllamaState:
    """Models, keep_alive timers, the queue limit and the pause gate, and per-model queues of scripted replies."""

    def __init__(self, models: list[FakeModel] | None, *, queue_limit: int, keep_alive: float,
                 max_loaded_models: int, seed: int) -> None:
        self.models = copy.deepcopy(models) if models is not None else default_models()
        self.queue_limit = queue_limit
        self.default_keep_alive = keep_alive
        self.max_loaded_models = max_loaded_models
        self.scripts: dict[str, deque[Any]] = {}
        self.loaded: dict[str, datetime] = {}
        self.refs: Counter[str] = Counter()  # requests using each loaded model now
        self.unload_when_idle: set[str] = set()
        self.on_change: Callable[[str, str], None] | None = None  # (load|unload, model name), for a FakeGpu
        self.in_flight = 0
        self.paused = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self._resume: asyncio.Event | None = None

    def bind_loop(self) -> None:
        """Create the pause gate on the server's loop."""
        self._resume = asyncio.Event()
        self.set_paused(self.paused)

    def set_paused(self, paused: bool) -> None:
        """Hold (or release) model requests before they start; call on the server's loop."""
        self.paused = paused
        if self._resume is not None:
            (self._resume.clear if paused else self._resume.set)()

    def find(self, name: str) -> FakeModel | None:
        """The installed model Ollama resolves `name` to (`llama3.2`, `llama3.2:latest`, `library/llama3.2`…)."""
        key = canonical(name)
        with self.lock:
            return next((m for m in self.models if canonical(m.name) == key), None)

    def set_models(self, models: list[FakeModel]) -> None:
        """Install exactly these models; loaded ones that are gone unload."""
        with self.lock:
            self.models = copy.deepcopy(models)
            keys = {canonical(m.name) for m in self.models}
        for key in [k for k in self.loaded if k not in keys]:
            self._drop(key)

    # --- loading --------------------------------------------------------------------------------------------------

    def _changed(self, action: str, key: str) -> None:
        if self.on_change is not None:
            self.on_change(action, display_name(key))

    def _drop(self, key: str) -> None:
        """The runner of `key` unloads: its memory is free."""
        self.unload_when_idle.discard(key)
        if self.loaded.pop(key, None) is not None:
            self._changed("unload", key)

    def unload_all(self) -> None:
        """The server stops: every model leaves memory."""
        for key in list(self.loaded):
            self._drop(key)

    def expire(self) -> None:
        """Unload the idle models whose keep_alive ran out (a model answering a request has no timer running)."""
        moment = datetime.now(UTC)
        for key in [k for k, until in self.loaded.items() if until <= moment and not self.refs[k]]:
            self._drop(key)

    def vram_held(self) -> dict[str, int]:
        """What the loaded models take in VRAM now (model name → bytes), for a FakeGpu; callable from any thread."""
        moment = datetime.now(UTC)
        held = {}
        for key, until in dict(self.loaded).items():
            model = self.find(display_name(key))
            if model is not None and model.on_gpu and (until > moment or self.refs[key]):
                held[model.tag] = model.size
        return held

    def loaded_models(self) -> list[tuple[FakeModel, datetime]]:
        """The loaded models with their expiry, longest time left first (what /api/ps lists)."""
        self.expire()
        ordered = sorted(self.loaded.items(), key=lambda item: item[1], reverse=True)
        found = [(self.find(display_name(key)), until) for key, until in ordered]
        return [(model, until) for model, until in found if model is not None]

    def unload(self, model: FakeModel) -> None:
        """keep_alive 0 with nothing to do (Scheduler.expireRunner): unload now, or when its requests end."""
        key = canonical(model.name)
        if self.refs[key] > 0:
            self.unload_when_idle.add(key)
        else:
            self._drop(key)

    def _load(self, model: FakeModel, keep_alive: float) -> bool:
        """Load a model, evicting the soonest-expiring others past the limit; True when it was loaded already."""
        self.expire()
        key = canonical(model.name)
        warm = key in self.loaded
        self.loaded[key] = expiry(keep_alive if keep_alive > 0 else self.default_keep_alive)
        if not warm:
            self._changed("load", key)
        while len(self.loaded) > max(1, self.max_loaded_models):
            self._drop(min((k for k in self.loaded if k != key), key=lambda k: self.loaded[k]))
        return warm

    def _release(self, model: FakeModel, keep_alive: float) -> None:
        """A request ended: once the model's last request is done, restart its keep_alive timer, or unload."""
        key = canonical(model.name)
        if self.refs[key] > 0:
            return
        if keep_alive == 0 or key in self.unload_when_idle:
            self._drop(key)
        elif key in self.loaded:
            self.loaded[key] = expiry(keep_alive)

    @contextlib.asynccontextmanager
    async def admit(self, model: FakeModel, keep_alive: float) -> AsyncIterator[bool]:
        """Schedule a model request: 503 past the queue limit, hold while paused; yields whether it was warm."""
        if self.in_flight >= self.queue_limit:
            raise ApiError(503, QUEUE_BUSY)
        self.in_flight += 1
        try:
            if self._resume is not None:
                await self._resume.wait()
            warm = self._load(model, keep_alive)
            key = canonical(model.name)
            self.refs[key] += 1
            try:
                yield warm
            finally:
                self.refs[key] -= 1
                self._release(model, keep_alive)
        finally:
            self.in_flight -= 1

    # --- replies --------------------------------------------------------------------------------------------------

    def script(self, model: str, replies: list[Any]) -> None:
        """Queue replies for a model, under any spelling of its name."""
        with self.lock:
            self.scripts.setdefault(canonical(model), deque()).extend(replies)

    def thinking(self, model: FakeModel, name: str, body: dict[str, Any]) -> bool:
        """Whether the reply thinks: by default on thinking models; `think` on any other model is a 400."""
        think = think_value(body.get("think"))
        if "thinking" in model.capabilities:
            return think is not False
        if think:
            raise ApiError(400, f"{quoted(name)} does not support thinking")
        return False

    def next_reply(self, model: FakeModel, prompt: str, images: list[str], fmt: Any, thinking: bool) -> Reply:
        """The next scripted reply, else the default: a caption for images on a vision model, or an echo."""
        with self.lock:
            queue = self.scripts.get(canonical(model.name))
            has_script = bool(queue)
            scripted = queue.popleft() if queue else None
        if has_script:
            reply = copy.deepcopy(as_reply(scripted))
        else:
            text = caption(images[-1]) if images and "vision" in model.capabilities else f"You said: {prompt}"
            reply = Reply(content=json_reply(fmt, text) if fmt else text)
        if not thinking:
            reply.thinking = ""
        elif not reply.thinking:
            reply.thinking = f"The user wrote: {prompt}"
        return reply

    def snapshot(self) -> dict[str, Any]:
        """Models, loaded models, queued replies, pause and queue, for /__fake__/state."""
        with self.lock:
            scripts = {key: len(queue) for key, queue in self.scripts.items() if queue}
            models = [m.tag for m in self.models]
        return {"models": models, "loaded": [m.tag for m, _ in self.loaded_models()], "scripts": scripts,
                "paused": self.paused, "queue_limit": self.queue_limit, "in_flight": self.in_flight}
