"""The ledger's one LISTEN connection on real PostgreSQL: shared by every waiter, survives a lost connection, ends
waits when the ledger closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.notifications import NotificationsClosedError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database (no worker: the tests move the jobs themselves)."""
    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9")
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


async def _job(svc: LedgerService, n: int = 0) -> Job:
    return (await svc.submit(JobRequest(params=GenerationParams(prompt=f"a gull {n}", seed=n), use_cache=False))).job


async def _end(svc: LedgerService, job: Job) -> None:
    """Finish a job as a cancel of a queued one does (the trigger notifies `atelier_status`)."""
    await svc.cancel(job.id)


async def _listeners(svc: LedgerService) -> list[int]:
    """Backends of this database that LISTEN (see pg_listening_channels: their last statement was a LISTEN)."""
    async with svc.ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'")
        return [int(row["pid"]) for row in await cur.fetchall()]


async def test_a_hundred_waiters_share_one_listen_connection(svc: LedgerService) -> None:
    jobs = [await _job(svc, n) for n in range(50)]
    hub = svc.ledger.notifications
    followed: list[list[JobEvent]] = [[] for _ in jobs]

    async def follow(n: int) -> None:
        async for event in svc.events.follow([jobs[n].id], recheck_seconds=600):
            followed[n].append(event)

    tasks = [asyncio.create_task(follow(n)) for n in range(50)]
    waits = [asyncio.create_task(svc.wait([job.id], timeout=60)) for job in jobs]
    await hub.listening()
    for n, job in enumerate(jobs):
        await svc.events.publish(job.id, 0, "progress", {"step": n})
        await _end(svc, job)
    await asyncio.wait_for(asyncio.gather(*tasks, *waits), 30)
    assert hub.connects == 1 and len(await _listeners(svc)) == 1
    for n, events in enumerate(followed):
        assert [e.kind for e in events] == ["progress", "cancelled"] and events[0].data["step"] == n
    assert [w.result()[0].status for w in waits] == ["cancelled"] * 50
    assert hub.subscriptions == 0


async def test_a_lost_listen_connection_is_replaced_and_no_event_is_lost(svc: LedgerService) -> None:
    job = await _job(svc)
    hub = svc.ledger.notifications
    seen: list[JobEvent] = []
    got_first = asyncio.Event()

    async def follow() -> None:
        async for event in svc.events.follow([job.id], recheck_seconds=600):  # no recheck within the test
            seen.append(event)
            got_first.set()

    task = asyncio.create_task(follow())
    await hub.listening()
    await svc.events.publish(job.id, 0, "progress", {"step": 1})
    await asyncio.wait_for(got_first.wait(), 10)
    [listener] = await _listeners(svc)
    assert listener == hub.backend_pid
    async with svc.ledger.pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (listener,))
    # Published while the hub is down or reconnecting: the notification may be lost, the event must not be.
    await svc.events.publish(job.id, 0, "progress", {"step": 2})
    await _end(svc, job)
    await asyncio.wait_for(task, 20)
    assert [(e.kind, e.data.get("step")) for e in seen] == [("progress", 1), ("progress", 2), ("cancelled", None)]
    # The follower may have read its events again before the hub noticed the drop (it notices on its next read, then
    # reconnects after a short pause): wait for the new LISTEN, then check there is exactly one, a new one.
    for _ in range(400):
        if hub.connects == 2 and hub.backend_pid is not None and await _listeners(svc) == [hub.backend_pid]:
            break
        await asyncio.sleep(0.05)
    assert hub.connects == 2
    assert await _listeners(svc) == [hub.backend_pid] != [listener]


async def test_closing_the_ledger_ends_waits_with_a_clear_error(machine_pg_url: str, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9")
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(tmp_path / "out")) as service:
        job = await _job(service)
        waiter = asyncio.create_task(service.wait([job.id]))
        await service.ledger.notifications.listening()
        while service.ledger.notifications.subscriptions < 1:  # the waiter reached its wait
            await asyncio.sleep(0.01)
    with pytest.raises(NotificationsClosedError, match="closed while waiting"):
        await waiter
