"""What the fake Ollama keeps in memory: installed and loaded models, the request queue, and the tests' scripts."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import threading
from collections import deque
from collections.abc import AsyncIterator
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
            self.loaded.pop(key, None)

    # --- loading --------------------------------------------------------------------------------------------------

    def expire(self) -> None:
        """Unload the models whose keep_alive ran out."""
        moment = datetime.now(UTC)
        for key in [k for k, until in self.loaded.items() if until <= moment]:
            self.loaded.pop(key, None)

    def loaded_models(self) -> list[tuple[FakeModel, datetime]]:
        """The loaded models with their expiry, longest time left first (what /api/ps lists)."""
        self.expire()
        ordered = sorted(self.loaded.items(), key=lambda item: item[1], reverse=True)
        found = [(self.find(display_name(key)), until) for key, until in ordered]
        return [(model, until) for model, until in found if model is not None]

    def unload(self, model: FakeModel) -> None:
        """Unload now (keep_alive 0 with nothing to do)."""
        self.loaded.pop(canonical(model.name), None)

    def _load(self, model: FakeModel, keep_alive: float) -> bool:
        """Load a model, evicting the soonest-expiring others past the limit; True when it was loaded already."""
        self.expire()
        key = canonical(model.name)
        warm = key in self.loaded
        self.loaded[key] = expiry(keep_alive if keep_alive > 0 else self.default_keep_alive)
        while len(self.loaded) > max(1, self.max_loaded_models):
            self.loaded.pop(min((k for k in self.loaded if k != key), key=lambda k: self.loaded[k]))
        return warm

    def _release(self, model: FakeModel, keep_alive: float) -> None:
        """A request ended: restart its keep_alive timer, or unload for 0."""
        key = canonical(model.name)
        if keep_alive == 0:
            self.loaded.pop(key, None)
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
            try:
                yield warm
            finally:
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
