"""The one bridge from frameworks' threads to the loop that owns Atelier's connections (CrewAI and AutoGen use it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from atelier.adapters.bridge import LoopBlockedError, LoopBridge, LoopStoppedError
from atelier.tools.errors import AtelierError

ADVICE = "Start the chat in a worker thread."


async def _where() -> tuple[asyncio.AbstractEventLoop, int]:
    """The loop and thread this coroutine runs on."""
    return asyncio.get_running_loop(), threading.get_ident()


@pytest.fixture
def owner() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in its own thread (the studio's), stopped and closed at the end."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    loop.call_soon(started.set)
    thread = threading.Thread(target=loop.run_forever, name="owner-loop")
    thread.start()
    started.wait(5)
    yield loop
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    pending = asyncio.all_tasks(loop)  # calls cancelled while the loop was stopped: let them finish
    for task in pending:
        task.cancel()

    async def drain() -> None:
        await asyncio.gather(*pending, return_exceptions=True)

    loop.run_until_complete(drain())
    loop.close()


def _stopping(loop: asyncio.AbstractEventLoop) -> Coroutine[Any, Any, None]:
    """A call that stops its loop and then never finishes (the studio goes away while a tool waits)."""

    async def stall() -> None:
        loop.call_soon(loop.stop)
        await asyncio.Event().wait()

    return stall()


def test_a_thread_waits_for_the_call_on_the_owning_loop(owner: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(owner, blocked_advice=ADVICE)
    ran_on, thread = bridge.call(_where)
    assert ran_on is owner and thread != threading.get_ident()


@pytest.mark.asyncio
async def test_a_call_on_the_owning_thread_is_refused_with_the_front_ends_advice() -> None:
    bridge = LoopBridge.here(blocked_advice=ADVICE, elsewhere="no loop")
    with pytest.raises(LoopBlockedError) as refused:
        bridge.call(_where)  # would wait for this very loop
    assert str(refused.value).startswith("the tool cannot run") and str(refused.value).endswith(ADVICE)
    assert (await bridge.acall(_where))[0] is asyncio.get_running_loop()  # awaited here: simply run
    ran_on, _ = await asyncio.to_thread(bridge.call, _where)  # from a worker thread: handed over
    assert ran_on is asyncio.get_running_loop()


def test_a_bridge_to_here_needs_a_running_loop() -> None:
    with pytest.raises(AtelierError, match="call it from async code"):
        LoopBridge.here(blocked_advice=ADVICE, elsewhere="call it from async code")


def test_another_loop_awaits_the_call_on_the_owning_loop(owner: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(owner, blocked_advice=ADVICE)
    ran_on, _ = asyncio.run(bridge.acall(_where))
    assert ran_on is owner


def test_a_loop_that_is_not_running_refuses_at_once() -> None:
    loop = asyncio.new_event_loop()
    try:
        bridge = LoopBridge(loop, blocked_advice=ADVICE)
        with pytest.raises(LoopStoppedError, match="not running"):
            bridge.call(_where)
        with pytest.raises(LoopStoppedError, match="not running"):
            asyncio.run(bridge.acall(_where))
    finally:
        loop.close()


def test_a_loop_that_stops_while_a_thread_waits_ends_the_wait(owner: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(owner, blocked_advice=ADVICE)
    with pytest.raises(LoopStoppedError, match="stopped while a tool was running"):
        bridge.call(lambda: _stopping(owner))


def test_a_loop_that_stops_while_another_loop_awaits_ends_the_wait(owner: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(owner, blocked_advice=ADVICE)
    with pytest.raises(LoopStoppedError, match="stopped while a tool was running"):
        asyncio.run(bridge.acall(lambda: _stopping(owner)))


def test_cancelling_the_awaiting_task_cancels_the_call_on_the_owning_loop(owner: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(owner, blocked_advice=ADVICE)
    entered, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def caller() -> None:
        task = asyncio.create_task(bridge.acall(forever))
        await asyncio.to_thread(entered.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert cancelled.wait(5), "the call on the owning loop was cancelled too"
