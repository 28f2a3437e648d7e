"""SharedReads: followers woken together share a query, and nobody is answered by a query started before they asked."""

from __future__ import annotations

import asyncio

import pytest

from atelier.tools.ledger.events import SharedReads

pytestmark = pytest.mark.asyncio


class Source:
    """A query whose answers are numbered, and which runs until released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.running = asyncio.Event()

    async def query(self) -> int:
        self.started += 1
        number = self.started
        self.running.set()
        await self.release.wait()
        return number


async def test_callers_asking_together_share_one_query() -> None:
    reads: SharedReads[int] = SharedReads()
    source = Source()
    callers = [asyncio.create_task(reads.read("job", source.query)) for _ in range(300)]
    await source.running.wait()
    source.release.set()
    assert await asyncio.gather(*callers) == [1] * 300
    assert source.started == 1


async def test_a_caller_never_gets_the_answer_of_a_query_started_before_it_asked() -> None:
    reads: SharedReads[int] = SharedReads()
    source = Source()
    early = asyncio.create_task(reads.read("job", source.query))
    await source.running.wait()  # query 1 runs: it may not see what the late callers were told about
    late = [asyncio.create_task(reads.read("job", source.query)) for _ in range(10)]
    other = asyncio.create_task(reads.read("another job", source.query))  # another key: query 2, at once
    await asyncio.sleep(0)  # let them all ask
    source.release.set()
    assert await early == 1
    assert await other == 2
    assert await asyncio.gather(*late) == [3] * 10  # one more query, started after query 1 ended, for all of them
    assert source.started == 3


async def test_one_caller_giving_up_does_not_cancel_the_others() -> None:
    reads: SharedReads[int] = SharedReads()
    source = Source()
    leaving = asyncio.create_task(reads.read("job", source.query))
    staying = asyncio.create_task(reads.read("job", source.query))
    await source.running.wait()
    leaving.cancel()
    source.release.set()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_failed_query_fails_every_caller_and_the_next_ask_queries_again() -> None:
    reads: SharedReads[int] = SharedReads()
    calls = 0

    async def broken() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise OSError("connection lost")

    callers = [asyncio.create_task(reads.read("job", broken)) for _ in range(3)]
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results) and calls == 1
    with pytest.raises(OSError):
        await reads.read("job", broken)
    assert calls == 2
