"""Runs a fake's aiohttp app on 127.0.0.1 from its own thread and event loop, and dispatches its /__fake__ controls."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

Control = Callable[[dict[str, Any]], Any]
"""A /__fake__ control: takes the request's parameters; a coroutine it returns is awaited."""


class LoopbackServer:
    """`with Server() as s:` serves `_app()` on `s.url` (port 0 = a free port) until the block ends."""

    thread_name = "fake-server"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.down = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._comeback: asyncio.Task[None] | None = None

    def _app(self) -> web.Application:
        """The application to serve (a fresh one each time the server comes up)."""
        raise NotImplementedError

    def _setup_loop(self) -> None:
        """Called on the server's loop before it first listens (create asyncio objects here)."""

    def _on_down(self) -> None:
        """Called when the server goes down (the 'process' ends: forget its memory here)."""

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    async def _come_up(self) -> None:
        """Listen on the port (the same one again after going down)."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app(), handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server: Any = site._server
            self.port = int(server.sockets[0].getsockname()[1])
        self._runner, self.down = runner, False

    async def _go_down(self) -> None:
        """Close the port and every open connection."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.down = True
        self._on_down()

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the server's loop from another thread and wait for its result."""
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def _run_on_loop(self, action: Callable[[], T]) -> T:
        """Run a plain function on the server's loop (directly when not running) and return its result."""
        if self._loop is None:
            return action()

        async def run() -> T:
            return action()

        return self._call(run)

    def start(self) -> Self:
        """Start serving from a background thread; returns once the port listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                self._setup_loop()
                loop.run_until_complete(self._come_up())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                self._loop = None
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.thread_name}-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and end the thread."""
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._comeback is not None:
                self._comeback.cancel()
            await self._go_down()

        self._call(shutdown)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def serve_forever(self, describe: Callable[[Self], str]) -> None:
        """Serve in the foreground, printing `describe(self)` once listening, until Ctrl-C."""
        self.start()
        print(describe(self), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        """Start on entry."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on exit."""
        self.stop()


def after_answer(make: Callable[[], Awaitable[Any]]) -> None:
    """Run a coroutine on the running loop shortly after the current answer has gone out."""
    asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(make()))


async def dispatch_control(request: web.Request, *, queries: Mapping[str, Control], actions: Mapping[str, Control],
                           respond: Callable[[Any], web.Response] = web.json_response) -> web.Response:
    """/__fake__/{action}: parameters from the query and a JSON body; a query's result or {"ok": true}; else 404."""
    action = request.match_info["action"]
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        with contextlib.suppress(ValueError):
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
    if action in queries:
        return respond(queries[action](params))
    if action not in actions:
        return web.Response(status=404, text=f"unknown control {action!r}")
    done = actions[action](params)
    if inspect.isawaitable(done):
        await done
    return respond({"ok": True})
