"""The worker: claims jobs for its ComfyUI servers and keeps each GPU busy.

Per ComfyUI server the worker runs `slots` job loops (2 by default) sharing one client and socket: while
one prompt executes, the next is already queued inside ComfyUI, so the GPU never waits for the worker to
download, store and record. Idle loops sleep on PostgreSQL `LISTEN atelier_jobs` (new or re-queued jobs,
released leases) with a timer for the next delayed job or lease lapse — never a polling loop. Cancel
requests arrive the same way (`atelier_cancel`). Heartbeats run in their own thread (see heartbeat.py).

Supervision: each slot and the listener run under a supervisor; one that dies of an unexpected error is logged
and started again after a growing pause (`atelier_worker_slot_restarts`), and the heartbeat marks the worker alive
only while at least one slot runs, so a worker whose loops are all gone stops looking alive.

VRAM (see tools/gpu/): a slot claims jobs that fit in what its server can offer — free VRAM plus what
hot-swap can reclaim (ComfyUI's cached models, idle Ollama models on the same GPU) — preferring jobs for
the models the server last loaded; just before a job's prompt is queued, hot-swap makes the room it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from atelier.tools.comfyui.client import ComfyClient
from atelier.tools.comfyui.probe import probe_stats
from atelier.tools.errors import ComfyHTTPError, ComfyUnreachableError
from atelier.tools.gpu.room import GpuRoom
from atelier.tools.ledger.models import Job
from atelier.tools.ledger.outages import outlast_outage
from atelier.tools.ledger.store import Claim, ClaimSpec, JobLedger
from atelier.tools.outputs.store import OutputStore
from atelier.tools.settings import Settings
from atelier.tools.worker.failpoints import Failpoints
from atelier.tools.worker.heartbeat import Heartbeat, HeldJobs
from atelier.tools.worker.metrics import WorkerMetrics
from atelier.tools.worker.runner import JobRunner

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    """How a worker behaves; the defaults suit one GPU per ComfyUI server."""

    servers: list[str] = field(default_factory=list)
    slots_per_server: int = 2
    lease_seconds: float = 30.0
    idle_wake_seconds: float = 30.0
    vram_cache_seconds: float = 2.0
    worker_id: str = ""

    def __post_init__(self) -> None:
        """Give the worker a readable unique id: host:pid:random."""
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        if self.slots_per_server < 1:
            raise ValueError("slots_per_server must be at least 1")


@dataclass
class _ServerState:
    """Health and claimable VRAM of one ComfyUI, as last seen."""

    url: str
    claimable_gb: float = 0.0
    checked_at: float = -1e9
    healthy: bool = False
    down_delay: float = 0.5
    reconnects: int = 0


class Worker:
    """Runs jobs from the ledger on ComfyUI until `stop` is set; see the module docstring."""

    def __init__(
        self,
        ledger: JobLedger,
        settings: Settings,
        store: OutputStore,
        options: WorkerOptions | None = None,
        *,
        metrics: WorkerMetrics | None = None,
        failpoints: Failpoints | None = None,
        gpu: GpuRoom | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.store = store
        self.options = options or WorkerOptions(lease_seconds=settings.lease_seconds)
        if not self.options.servers:
            self.options.servers = list(settings.comfyui_urls)
        self.id = self.options.worker_id
        self.metrics = metrics or WorkerMetrics()
        self.held = HeldJobs()
        self._clients: dict[str, ComfyClient] = {}
        self._servers = {url: _ServerState(url) for url in self.options.servers}
        self._wakers: list[asyncio.Event] = []
        self._running: dict[uuid.UUID, tuple[Job, str]] = {}
        self.gpu = gpu or GpuRoom(settings, cache_seconds=self.options.vram_cache_seconds)
        self.runner = JobRunner(
            ledger, settings, store, client_for=self.client_for, metrics=self.metrics,
            failpoints=failpoints or Failpoints.from_env(), gpu=self.gpu,
        )
        self.processed = 0
        self.slots_live = 0
        self.slot_restarts = 0

    @classmethod
    def for_service(cls, service: LedgerService, options: WorkerOptions | None = None, *,
                    metrics: WorkerMetrics | None = None) -> Worker:
        """A worker on a LedgerService's queue, settings and output store (what front ends start)."""
        return cls(service.ledger, service.settings, service.store, options, metrics=metrics)

    async def client_for(self, url: str) -> ComfyClient:
        """The worker's client for a ComfyUI (one socket per server, opened on first use)."""
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = ComfyClient(
                url,
                timeout=self.settings.http_timeout_seconds,
                silence_seconds=self.settings.comfyui_silence_seconds,
                down_seconds=self.settings.comfyui_down_seconds,
            )
        return client

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then release held jobs so other workers take them over at once."""
        await self._register()
        self._set_live(len(self.options.servers) * self.options.slots_per_server)
        heartbeat = Heartbeat(
            self.ledger.conninfo, self.id, self.held, self.options.lease_seconds,
            on_beat=lambda _n: self.metrics.heartbeats.inc(), live_slots=lambda: self.slots_live,
        )
        heartbeat.start()
        tasks = [asyncio.create_task(self._supervise("listener", functools.partial(self._listen, stop), stop),
                                     name="listen")]
        for url in self.options.servers:
            for slot in range(self.options.slots_per_server):
                waker = asyncio.Event()
                self._wakers.append(waker)
                name = f"slot {slot} of {url}"
                tasks.append(asyncio.create_task(
                    self._supervise(name, functools.partial(self._slot, url, waker, stop), stop, slot=True),
                    name=f"slot-{url}-{slot}"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(heartbeat.stop)  # it joins the thread: not on the event loop
            with contextlib.suppress(psycopg.Error):
                released = await self.ledger.release(self.id)
                if released:
                    log.info("released %d job(s) for other workers", released)
                await self._unregister()
            for client in self._clients.values():
                await client.aclose()
            await self.gpu.aclose()

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                         slot: bool = False) -> None:
        """Run `loop` until `stop`; when it dies of an error, log it and start it again after a growing pause."""
        restarts = 0
        counted = slot  # run() counts every slot live before the first heartbeat
        try:
            while not stop.is_set():
                if slot and not counted:
                    self._set_live(self.slots_live + 1)
                    counted = True
                try:
                    await loop()
                    return
                except Exception:
                    restarts += 1
                    self.slot_restarts += 1
                    self.metrics.slot_restarts.inc()
                    if counted:
                        self._set_live(self.slots_live - 1)
                        counted = False
                    log.exception("%s died; restarting it (restart %d)", name, restarts)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(10.0, 0.5 * 2 ** min(restarts - 1, 5))):
                        await stop.wait()
        finally:
            if counted:
                self._set_live(self.slots_live - 1)

    def _set_live(self, count: int) -> None:
        """How many job loops run now (the heartbeat reads it from its thread)."""
        self.slots_live = max(0, count)
        self.metrics.slots_live.set(self.slots_live)

    async def _register(self) -> None:
        """Record this worker in the `workers` table (waiting for a database that is away)."""
        await outlast_outage(self._insert_worker, what=f"worker {self.id}: register")

    async def _insert_worker(self) -> None:
        """The `workers` row of this worker, (re)started."""
        async with self.ledger.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO workers (id, host, pid, servers) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = now(), stopped_at = NULL",
                (self.id, socket.gethostname(), os.getpid(), self.options.servers),
            )

    async def _unregister(self) -> None:
        """Mark this worker stopped."""
        async with self.ledger.pool.connection() as conn:
            await conn.execute("UPDATE workers SET stopped_at = now() WHERE id = %s", (self.id,))

    def _wake_all(self) -> None:
        """Wake every idle slot to look for work."""
        for waker in self._wakers:
            waker.set()

    # --- notifications -----------------------------------------------------------------------------------

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN for new work and cancel requests; reconnect after a database error."""
        delay = 0.5
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.ledger.conninfo, autocommit=True) as conn:
                    await conn.execute("LISTEN atelier_jobs")
                    await conn.execute("LISTEN atelier_cancel")
                    delay = 0.5
                    self._wake_all()  # anything queued while we were not listening
                    async for note in conn.notifies():
                        if note.channel == "atelier_cancel":
                            await self._cancel(note.payload)
                        else:
                            self._wake_all()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _cancel(self, payload: str) -> None:
        """Someone asked to cancel a job: if this worker runs it, remove or interrupt its prompt."""
        with contextlib.suppress(ValueError):
            job_id = uuid.UUID(payload)
            running = self._running.get(job_id)
            if running is None:
                return
            job, server = running
            client = await self.client_for(server)
            try:
                await client.cancel(job.prompt_id)
            except (ComfyUnreachableError, ComfyHTTPError) as exc:
                log.warning("cancel of job %s on %s failed: %s", job_id, server, exc)

    # --- claiming and running --------------------------------------------------------------------------

    async def _check_server(self, state: _ServerState) -> bool:
        """Refresh what VRAM a server can offer (cached briefly); False while it is unreachable."""
        now = time.monotonic()
        if state.healthy and now - state.checked_at < self.options.vram_cache_seconds:
            return True
        client = await self.client_for(state.url)
        status = await probe_stats(client, state.url)
        stats = status.stats
        if stats is None:
            if state.healthy:
                log.warning("ComfyUI %s is unreachable: %s", state.url, status.error)
            state.healthy = False
            self.gpu.forget(state.url)
            return False
        if client.reconnects != state.reconnects:  # its socket dropped: it may have restarted, models gone
            state.reconnects = client.reconnects
            self.gpu.forget(state.url)
        state.claimable_gb = await self.gpu.claimable_gb(state.url, stats)
        state.checked_at, state.healthy, state.down_delay = now, True, 0.5
        self.metrics.vram_free.labels(state.url).set(stats.vram_free_gb * 2**30)
        self.metrics.vram_claimable.labels(state.url).set(state.claimable_gb * 2**30)
        return True

    def _spec(self, state: _ServerState) -> ClaimSpec:
        """This worker's claim for one server: its claimable VRAM and the models it has loaded."""
        return ClaimSpec(self.id, state.url, state.claimable_gb, tuple(self.options.servers),
                         self.options.lease_seconds, models=self.gpu.loaded(state.url),
                         affinity_seconds=self.settings.affinity_seconds)

    async def _slot(self, url: str, waker: asyncio.Event, stop: asyncio.Event) -> None:
        """One job at a time for `url`: claim, run, repeat; sleep on notifications when there is nothing."""
        state = self._servers[url]
        claim: Claim | None = None
        while not stop.is_set():
            if claim is None:
                if not await self._check_server(state):
                    if stop.is_set():
                        break
                    await asyncio.sleep(state.down_delay)
                    state.down_delay = min(state.down_delay * 2, 10.0)
                    continue
                waker.clear()
                try:
                    claim = await self.ledger.claim_spec(self._spec(state))
                except psycopg.Error as exc:
                    log.warning("claim failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if claim is None:
                    timeout = await self._idle_timeout()
                    # A stop's cancel can be swallowed by the database driver mid-query; the stop flag cannot.
                    if stop.is_set():
                        break
                    # asyncio.timeout, not wait_for: on Python 3.11 a stop's cancel that lands as the timeout fires
                    # can be taken for the timeout by wait_for, and the slot would not notice it was cancelled.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await waker.wait()
                    continue
            claim = await self._run_claimed(claim, url, state, stop)

    async def _run_claimed(self, claim: Claim, url: str, state: _ServerState, stop: asyncio.Event) -> Claim | None:
        """Run one claimed job; return the next job claimed together with its result (if any)."""
        job = claim.job
        self.held.add(job.id, job.attempts)
        self._running[job.id] = (job, job.server or url)
        self.metrics.held.set(len(self._running))
        next_spec = None if stop.is_set() or not state.healthy else functools.partial(self._spec, state)
        try:
            _result, following = await self.runner.run(claim, url, next_spec)
            self.processed += 1
        finally:
            self._running.pop(job.id, None)
            self.held.discard(job.id)
            self.metrics.held.set(len(self._running))
        if following is not None and stop.is_set():
            await self.ledger.release(self.id, following.job)
            return None
        return following

    async def _idle_timeout(self) -> float:
        """How long an idle slot may sleep: until the next delayed job or lease lapse, at most the cap."""
        try:
            due = await self.ledger.seconds_until_due(self.options.idle_wake_seconds)
        except psycopg.Error:
            return 1.0
        return max(0.05, due + 0.05)
