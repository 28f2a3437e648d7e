"""Rendering prompt templates with a time, output and memory budget, off the caller's thread.

Every render runs in a small worker process (tools/prompts/render_worker.py): Python started with -I, importing
only jinja2 and the templating modules, its address space limited to MEMORY_LIMIT. Workers are kept warm and
reused; one whose template runs past its time budget (settings.template_seconds) is killed and replaced, and the
caller gets a PromptTemplateError (the job API's 422) right then. A thread cannot be stopped, a process can.

Requests and replies are JSON lines over the worker's pipes. (multiprocessing's spawn and forkserver contexts
would re-run the server's `__main__`, app.py and all it imports, in each worker, and they speak pickle: a worker
could then hand the server objects, where here it can only hand back text.)

`render_template` is the sync API (the CLI, threads); `render_template_async` waits on the pool's own threads,
so an event loop is never blocked and the default executor is never filled.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from atelier.tools.errors import AtelierError
from atelier.tools.prompts.templating import MAX_OUTPUT, PromptTemplateError, merged_values

__all__ = ["DEFAULT_SECONDS", "MEMORY_LIMIT", "RenderPool", "RendererError", "render_template",
           "render_template_async"]

DEFAULT_SECONDS = 1.0  # settings.template_seconds' default
MEMORY_LIMIT = 256 * 1024 * 1024  # a worker's address space; an idle one uses about 25 MB
_WORKERS = max(2, min(4, os.cpu_count() or 2))
_START_SECONDS = 30.0  # a fresh worker's start-up, on a busy machine (not counted in any render's budget)
_MAX_REQUEST = 1 << 20  # the template and its values, as JSON
_MAX_REPLY = 1 << 20
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); import importlib; importlib.import_module(sys.argv[2]).main(" \
        "int(sys.argv[3]))"


class RendererError(AtelierError):
    """The rendering worker could not be started or answered nonsense (the server's problem, not the template's)."""


def _command() -> list[str]:
    """How to start a worker: this interpreter, isolated, importing the worker module from where this one is."""
    package = __name__.rpartition(".")[0]  # tools.prompts
    root = Path(__file__).resolve().parents[package.count(".") + 1]
    return [sys.executable, "-I", "-c", _BOOT, str(root), f"{package}.render_worker", str(MEMORY_LIMIT)]


class _Worker:
    """One worker process and the unread part of its replies."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.ready = False
        self._pending = b""

    def _line(self, deadline: float) -> bytes | None:
        """The worker's next line; None when `deadline` passes first; b"" when it ended or said too much."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk or len(self._pending) + len(chunk) > _MAX_REPLY:
                    return b""
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def ask(self, request: bytes, seconds: float) -> dict[str, Any] | None:
        """The worker's reply to `request` within `seconds` (None: it ran out of time); RendererError if it died."""
        if not self.ready:
            if self._line(time.monotonic() + _START_SECONDS) != b'{"ready": true}':
                raise RendererError("the prompt renderer (a Python worker process) did not start; check that this "
                                    f"interpreter ({sys.executable}) can import jinja2")
            self.ready = True
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
        except OSError as exc:
            raise RendererError("the prompt renderer stopped; try again") from exc
        line = self._line(time.monotonic() + seconds)
        if line is None:
            return None
        try:
            reply = json.loads(line) if line else None
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise PromptTemplateError("the prompt template stopped its renderer (it used more memory or CPU than a "
                                      "prompt may); keep loops and repeats small")
        return reply

    def kill(self) -> None:
        """End the process now and reap it."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _request(template: str, values: Mapping[str, Any], seconds: float) -> bytes:
    """One request line (PromptTemplateError when the values are not JSON data or are too large)."""
    try:
        line = json.dumps({"template": template, "values": dict(values), "seconds": seconds}).encode() + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        raise PromptTemplateError(f"the prompt values must be JSON data (text, numbers, lists, objects): "
                                  f"{str(exc)[:200]}") from exc
    if len(line) > _MAX_REQUEST:
        raise PromptTemplateError(f"the prompt values are too large ({len(line)} bytes as JSON); a prompt's "
                                  f"values fit in {_MAX_REQUEST}")
    return line


class RenderPool:
    """Warm worker processes, at most `size` rendering at once; a render waits for a free one."""

    def __init__(self, size: int = _WORKERS) -> None:
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="prompt-render")

    def _take(self) -> _Worker:
        """An idle worker that is still alive, or a new one."""
        with self._lock:
            while self._idle:
                idle = self._idle.pop()
                if idle.proc.poll() is None:
                    return idle
                self._all.discard(idle)
                idle.kill()
            worker = _Worker()
            self._all.add(worker)
            return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        """Keep a healthy worker warm; kill any other and start its replacement (it starts while nobody waits)."""
        if not healthy:
            worker.kill()
            fresh = _Worker()
        with self._lock:
            if not healthy:
                self._all.discard(worker)
                self._all.add(fresh)
                worker = fresh
            self._idle.append(worker)

    def render(self, template: str, values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None,
               seconds: float = DEFAULT_SECONDS) -> str:
        """The prompt text, rendered in a worker within `seconds` (blocks this thread; PromptTemplateError else)."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        request = _request(template, merged_values(template, values, defaults), seconds)
        with self._slots:
            worker = self._take()
            try:
                reply = worker.ask(request, seconds)
            except BaseException:
                self._give_back(worker, healthy=False)
                raise
            self._give_back(worker, healthy=reply is not None and not reply.get("restart"))
        if reply is None:
            raise PromptTemplateError(f"the prompt template did not finish within {seconds:g} s and was stopped; "
                                      "it loops too much or builds something huge: loop over short lists, keep it "
                                      "simple")
        if "error" in reply:
            raise PromptTemplateError(str(reply["error"])[:2000])
        text = reply.get("text")
        if not isinstance(text, str) or len(text) > MAX_OUTPUT:
            raise RendererError("the prompt renderer answered something that is not a prompt; try again")
        return text

    async def render_async(self, template: str, values: Mapping[str, Any], *,
                           defaults: Mapping[str, Any] | None = None, seconds: float = DEFAULT_SECONDS) -> str:
        """`render`, awaited on the pool's own threads (the event loop keeps running meanwhile)."""
        work = functools.partial(self.render, template, values, defaults=defaults, seconds=seconds)
        return await asyncio.get_running_loop().run_in_executor(self._threads, work)

    def worker_pids(self) -> list[int]:
        """The process ids of this pool's workers (idle or busy)."""
        with self._lock:
            return sorted(worker.proc.pid for worker in self._all)

    def close(self) -> None:
        """Kill every worker (the pool starts new ones if it is used again)."""
        with self._lock:
            workers, self._all, self._idle = self._all, set(), []
        for worker in workers:
            worker.kill()


_pool: RenderPool | None = None
_pool_lock = threading.Lock()


def _shared() -> RenderPool:
    """This process's pool (made on first use; closed at exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = RenderPool()
            atexit.register(_pool.close)
        return _pool


def _forget_after_fork() -> None:
    """A forked child starts its own pool: the parent's workers and locks are not the child's."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def render_template(template: str, values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None,
                    seconds: float | None = None) -> str:
    """The prompt text for `values` over `defaults`, within `seconds` (default 1): blocks the calling thread."""
    return _shared().render(template, values, defaults=defaults, seconds=seconds or DEFAULT_SECONDS)


async def render_template_async(template: str, values: Mapping[str, Any], *,
                                defaults: Mapping[str, Any] | None = None, seconds: float | None = None) -> str:
    """The prompt text for `values` over `defaults`, within `seconds` (default 1), without blocking the loop."""
    return await _shared().render_async(template, values, defaults=defaults, seconds=seconds or DEFAULT_SECONDS)
