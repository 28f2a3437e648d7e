"""The bridge from agent frameworks' threads to the event loop that owns Atelier's connections.

A ToolContext's pools (the ledger's psycopg pool, its event listener) belong to the loop that opened them, but
CrewAI and ag2 call tools from their own threads, or from coroutines on other loops. `LoopBridge` runs every
call on the owning loop: `call` waits for it from a thread (polling, so that a loop that stops ends the wait with
an error instead of a hang), `acall` awaits it from any loop (directly when already on the owner). A synchronous
wait on the owning loop's own thread would wait for itself forever: it is refused with `LoopBlockedError`,
whose message ends with the front end's own advice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from atelier.tools.errors import AtelierError

__all__ = ["LoopBlockedError", "LoopBridge", "LoopBridgeError", "LoopStoppedError", "running_loop"]

T = TypeVar("T")
# How often a caller waiting for a call checks that the owning loop still runs.
CHECK_SECONDS = 0.5


class LoopBridgeError(AtelierError):
    """A tool call could not be handed to the loop that owns Atelier's connections."""


class LoopBlockedError(LoopBridgeError):
    """The caller would block the very loop the call needs."""


class LoopStoppedError(LoopBridgeError):
    """The owning loop is not running (the studio was closed), or stopped while a call waited."""


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopBridge:
    """Runs coroutines on the loop that owns a ToolContext, for callers on any thread or loop.

    `blocked_advice` ends the refusal of a blocking call (say, how this framework starts a chat off the loop).
    The owning loop's thread is known when the bridge is made on that loop (then a wait from that thread is
    refused even between the loop's runs).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, blocked_advice: str) -> None:
        self.loop = loop
        self.blocked_advice = blocked_advice
        self.thread = threading.get_ident() if running_loop() is loop else None

    @classmethod
    def here(cls, *, blocked_advice: str, elsewhere: str) -> LoopBridge:
        """A bridge to the loop running this code; AtelierError(`elsewhere`) when no loop runs here."""
        loop = running_loop()
        if loop is None:
            raise AtelierError(elsewhere)
        return cls(loop, blocked_advice=blocked_advice)

    def on_owner(self) -> bool:
        """Whether this code runs on the owning loop (a call can simply be awaited)."""
        return running_loop() is self.loop

    def would_block(self) -> bool:
        """Whether a synchronous wait from here would block the owning loop (and so wait forever)."""
        here = running_loop()
        if here is not None:
            return here is self.loop
        return self.thread is not None and threading.get_ident() == self.thread

    def blocked(self) -> LoopBlockedError:
        """The refusal of a call that would block the owning loop."""
        return LoopBlockedError("the tool cannot run: it was called on the thread of the event loop that owns "
                                f"Atelier's connections, and waiting for it there would block that loop forever. "
                                f"{self.blocked_advice}")

    def _check_running(self) -> None:
        """LoopStoppedError unless the owning loop runs."""
        if self.loop.is_closed() or not self.loop.is_running():
            raise LoopStoppedError("Atelier's event loop is not running (the studio was closed): the tools cannot "
                                   "reach its services")

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `make()` on the owning loop and wait for its result from this thread."""
        if self.would_block():
            raise self.blocked()
        self._check_running()
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        while True:
            try:
                return future.result(timeout=CHECK_SECONDS)
            except concurrent.futures.TimeoutError:
                if not self.loop.is_running():
                    future.cancel()
                    raise LoopStoppedError("Atelier's event loop stopped while a tool was running") from None

    async def acall(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Await `make()` on the owning loop, from any loop (directly when already on it)."""
        if self.on_owner():
            return await make()
        self._check_running()
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        waited = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waited}, timeout=CHECK_SECONDS)
                if done:
                    return waited.result()
                if not self.loop.is_running():
                    raise LoopStoppedError("Atelier's event loop stopped while a tool was running")
        finally:
            if not waited.done():
                waited.cancel()  # cancels the call on the owning loop too
