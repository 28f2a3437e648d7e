"""Ledger-wide series read from PostgreSQL at scrape time: jobs by status and owner, queue depth and age, cache
hits, per-owner GPU seconds and cost, workers.

Every scrape borrows one connection of the process's ledger pool (no connection of its own) and runs a few bounded
queries under a statement timeout. Prometheus collects in a thread (a scrape server's, or the API route's
`asyncio.to_thread`), while the pool belongs to an event loop: the queries run on that loop and the thread waits.
Per-owner series are limited to the owners with the most GPU time (the rest are summed as owner `_other`), and
worker series to workers that are not stopped and beat recently, so the label sets stay small. A database that
cannot be read never fails the scrape: `atelier_ledger_up` says 0 and the other series are left out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["OTHER_OWNERS", "STATUSES", "LedgerPool", "UsageCollector", "UsageSnapshot", "read_usage"]

log = logging.getLogger(__name__)

# The owner label of everyone beyond the `max_owners` with the most GPU time.
OTHER_OWNERS = "_other"
# Every job status, so `atelier_jobs` shows each (0 when none).
STATUSES = ("queued", "submitted", "running", "succeeded", "failed", "cancelled")

_OWNERS_SQL = """
WITH per AS (
    SELECT owner, status, count(*) AS jobs, coalesce(sum(gpu_seconds), 0) AS gpu, coalesce(sum(actual_cost), 0) AS cost
    FROM jobs GROUP BY owner, status
), top AS (
    SELECT owner FROM per GROUP BY owner ORDER BY sum(gpu) DESC, sum(jobs) DESC, owner LIMIT %(max_owners)s
)
SELECT CASE WHEN top.owner IS NULL THEN %(other)s ELSE per.owner END, per.status,
       sum(per.jobs), sum(per.gpu), sum(per.cost)
FROM per LEFT JOIN top ON top.owner = per.owner
GROUP BY 1, 2
"""

# Waiting since it became claimable: a job held back for a retry (`not_before` ahead) is not waiting yet.
_OLDEST_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(greatest(created_at, not_before))), 0)
FROM jobs WHERE status = 'queued' AND not_before <= now()
"""

_CACHE_HITS_SQL = "SELECT count(*) FROM jobs WHERE cached_from IS NOT NULL"

_ALIVE_SQL = """
SELECT count(*) FILTER (WHERE last_seen > now() - make_interval(secs => %(alive)s)),
       count(*) FILTER (WHERE last_seen > now() - make_interval(secs => %(forget)s))
FROM workers WHERE stopped_at IS NULL
"""

_WORKERS_SQL = """
SELECT id, host, extract(epoch FROM now() - last_seen)
FROM workers WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => %(forget)s)
ORDER BY last_seen DESC LIMIT %(max_workers)s
"""


@dataclass
class UsageSnapshot:
    """What one scrape read from the ledger."""

    owner_jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    owner_gpu_seconds: dict[str, float] = field(default_factory=dict)
    owner_cost: dict[str, float] = field(default_factory=dict)
    oldest_queued_seconds: float = 0.0
    cache_hits: int = 0
    workers_alive: int = 0
    workers_recent: int = 0
    heartbeat_age: dict[tuple[str, str], float] = field(default_factory=dict)

    def jobs_by_status(self) -> dict[str, int]:
        """Jobs per status, summed over owners (the `_other` row included, so the totals are exact)."""
        totals = dict.fromkeys(STATUSES, 0)
        for (_owner, status), count in self.owner_jobs.items():
            totals[status] = totals.get(status, 0) + count
        return totals


@dataclass(frozen=True)
class LedgerPool:
    """A ledger's connection pool and the event loop it belongs to (scrapes come from other threads)."""

    pool: AsyncConnectionPool[Any]
    loop: asyncio.AbstractEventLoop

    @classmethod
    def for_service(cls, service: LedgerService, loop: asyncio.AbstractEventLoop) -> LedgerPool:
        """The pool of a LedgerService's ledger, on `loop` (the event loop the service was opened on)."""
        return cls(service.ledger.pool, loop)


async def read_usage(
    conn: psycopg.AsyncConnection[Any], *, alive_seconds: float, forget_seconds: float, max_owners: int,
    max_workers: int,
) -> UsageSnapshot:
    """Run the usage queries on an open connection."""
    snap = UsageSnapshot()
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(_OWNERS_SQL, {"max_owners": max_owners, "other": OTHER_OWNERS})
    for owner, status, jobs, gpu, cost in await cur.fetchall():
        snap.owner_jobs[(str(owner), str(status))] = int(jobs)
        snap.owner_gpu_seconds[str(owner)] = snap.owner_gpu_seconds.get(str(owner), 0.0) + float(gpu)
        snap.owner_cost[str(owner)] = snap.owner_cost.get(str(owner), 0.0) + float(cost)
    oldest = await (await cur.execute(_OLDEST_SQL)).fetchone()
    snap.oldest_queued_seconds = max(0.0, float(oldest[0])) if oldest else 0.0
    hits = await (await cur.execute(_CACHE_HITS_SQL)).fetchone()
    snap.cache_hits = int(hits[0]) if hits else 0
    alive = await (await cur.execute(_ALIVE_SQL, {"alive": alive_seconds, "forget": forget_seconds})).fetchone()
    if alive:
        snap.workers_alive, snap.workers_recent = int(alive[0]), int(alive[1])
    await cur.execute(_WORKERS_SQL, {"forget": forget_seconds, "max_workers": max_workers})
    for worker, host, age in await cur.fetchall():
        snap.heartbeat_age[(str(worker), str(host))] = max(0.0, float(age))
    return snap


class UsageCollector(Collector):
    """Per-owner usage, queue age and worker heartbeats from the ledger, read through its pool on each scrape.

    `source` is the ledger's pool and loop, or a function giving them (None while no ledger is open). `collect`
    must run off that loop (it waits for the loop to answer); on the loop itself it reports `atelier_ledger_up 0`.
    """

    def __init__(
        self,
        source: LedgerPool | Callable[[], LedgerPool | None],
        *,
        alive_seconds: float = 90.0,
        forget_seconds: float = 900.0,
        max_owners: int = 50,
        max_workers: int = 200,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.source = source
        self.alive_seconds = alive_seconds
        self.forget_seconds = forget_seconds
        self.max_owners = max_owners
        self.max_workers = max_workers
        self.timeout_seconds = timeout_seconds

    async def read_async(self, pool: AsyncConnectionPool[Any]) -> UsageSnapshot:
        """One pooled connection (waited for at most the timeout), the queries under a statement timeout."""
        async with pool.connection(timeout=self.timeout_seconds) as conn, conn.transaction():
            await conn.execute("SELECT set_config('statement_timeout', %s, true)",
                               (str(int(self.timeout_seconds * 1000)),))
            return await read_usage(conn, alive_seconds=self.alive_seconds, forget_seconds=self.forget_seconds,
                                    max_owners=self.max_owners, max_workers=self.max_workers)

    def read(self) -> UsageSnapshot:
        """Read on the pool's loop from this (other) thread, waiting at most about the timeout."""
        target = self.source if isinstance(self.source, LedgerPool) else self.source()
        if target is None:
            raise LookupError("no ledger is open in this process")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is target.loop:
            raise RuntimeError("ledger metrics collected on the ledger's own event loop would block it; "
                               "collect from another thread (asyncio.to_thread)")
        future = asyncio.run_coroutine_threadsafe(self.read_async(target.pool), target.loop)
        try:
            return future.result(timeout=self.timeout_seconds + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def collect(self) -> Iterator[Metric]:
        """Yield the usage series, or only `atelier_ledger_up 0` when the ledger cannot be read."""
        started = time.monotonic()
        try:
            snap = self.read()
        except Exception as exc:  # a scrape must never fail because of the database
            log.warning("metrics: cannot read ledger usage: %s", exc)
            snap = None
        yield GaugeMetricFamily("atelier_ledger_up", "1 when the last scrape could read the ledger, else 0.",
                                value=0 if snap is None else 1)
        yield GaugeMetricFamily("atelier_ledger_scrape_seconds", "Time the usage queries of this scrape took.",
                                value=time.monotonic() - started)
        if snap is not None:
            yield from _families(snap)


def _families(snap: UsageSnapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    by_status = snap.jobs_by_status()
    totals = GaugeMetricFamily("atelier_jobs", "Jobs in the ledger by status.", labels=["status"])
    for status, count in by_status.items():
        totals.add_metric([status], count)
    yield totals
    yield GaugeMetricFamily("atelier_queue_depth", "Jobs waiting for a worker.", value=by_status["queued"])
    yield CounterMetricFamily("atelier_cache_hits", "Jobs answered from the result cache.", value=snap.cache_hits)
    jobs = GaugeMetricFamily("atelier_owner_jobs", "Jobs in the ledger by owner and status.",
                             labels=["owner", "status"])
    for (owner, status), count in sorted(snap.owner_jobs.items()):
        jobs.add_metric([owner, status], count)
    yield jobs
    gpu = CounterMetricFamily("atelier_owner_gpu_seconds", "ComfyUI execution seconds of each owner's jobs.",
                              labels=["owner"])
    for owner, seconds in sorted(snap.owner_gpu_seconds.items()):
        gpu.add_metric([owner], seconds)
    yield gpu
    cost = CounterMetricFamily("atelier_owner_cost", "Actual cost of each owner's jobs (catalog cost units).",
                               labels=["owner"])
    for owner, value in sorted(snap.owner_cost.items()):
        cost.add_metric([owner], value)
    yield cost
    yield GaugeMetricFamily("atelier_queue_oldest_seconds", "How long the oldest claimable queued job has waited.",
                            value=snap.oldest_queued_seconds)
    yield GaugeMetricFamily("atelier_workers_alive", "Running workers whose heartbeat is recent.",
                            value=snap.workers_alive)
    yield GaugeMetricFamily("atelier_workers_registered",
                            "Workers not stopped cleanly that beat within the forget window (alive or silent).",
                            value=snap.workers_recent)
    age = GaugeMetricFamily("atelier_worker_heartbeat_age_seconds",
                            "Seconds since each running worker's last heartbeat.", labels=["worker", "host"])
    for (worker, host), seconds in sorted(snap.heartbeat_age.items()):
        age.add_metric([worker, host], seconds)
    yield age
