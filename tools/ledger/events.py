"""Job progress events: workers publish them to PostgreSQL; the API and the chat replay and follow them.

Each event is a row of `job_events` (a global `seq`, so one cursor covers many jobs) and a NOTIFY on
`atelier_events`; a reader that reconnects with the last `seq` it saw gets exactly the events after it. Followers
sleep on the ledger's one LISTEN connection (tools/ledger/notifications.py), however many there are, and followers
of one job woken together share their re-reads (`SharedReads`): a notification costs a query, not one per follower.
Only the newest preview frame of a job is kept (older ones are deleted as a new one arrives, the last one
when the job ends), so previews never pile up. The end of a job is not an event row: `follow` reads it from
the job itself and yields a final event of kind "done", "failed" or "cancelled".

A follower rides out a database restart: its reads are sent again while PostgreSQL is away, for up to
`FOLLOW_PATIENCE_SECONDS` (tools/ledger/outages.py), and the hub re-LISTENs and wakes it; only a longer outage ends
the follow with the database's error (servers answer it as "unavailable, retry").
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atelier.tools.ledger.models import Job
from atelier.tools.ledger.notifications import NotificationHub
from atelier.tools.ledger.outages import outlast_outage

__all__ = ["FOLLOW_PATIENCE_SECONDS", "EventPublisher", "JobEvent", "JobEvents", "SharedReads"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a follower waits for a database that went away before the follow ends with its error.
FOLLOW_PATIENCE_SECONDS = 30.0

_INSERT = """
INSERT INTO job_events (job_id, attempt, kind, data, preview, preview_type)
VALUES (%(job)s, %(attempt)s, %(kind)s, %(data)s, %(preview)s, %(preview_type)s)
RETURNING seq
"""
_DROP_OLDER_PREVIEWS = "DELETE FROM job_events WHERE job_id = %s AND kind = 'preview' AND seq < %s"


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job; `seq` is None for the final event (read from the job row)."""

    job_id: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    attempt: int = 0
    preview: bytes | None = None
    preview_type: str | None = None
    created_at: datetime | None = None
    job: Job | None = None

    @property
    def final(self) -> bool:
        """Whether this is the job's last event (done, failed or cancelled)."""
        return self.job is not None

    def as_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (without the preview bytes)."""
        body: dict[str, Any] = {"type": self.kind, "job": self.job_id, "seq": self.seq, "attempt": self.attempt,
                                **self.data}
        if self.created_at is not None:
            body["at"] = self.created_at.isoformat()
        return body


def _event(row: DictRow) -> JobEvent:
    """A `job_events` row as an event."""
    return JobEvent(job_id=str(row["job_id"]), kind=str(row["kind"]), data=dict(row["data"] or {}),
                    seq=int(row["seq"]), attempt=int(row["attempt"]),
                    preview=bytes(row["preview"]) if row["preview"] is not None else None,
                    preview_type=row["preview_type"], created_at=row["created_at"])


def final_event(job: Job) -> JobEvent:
    """The last event of a finished job, from its row."""
    kind = "done" if job.status == "succeeded" else str(job.status)
    data: dict[str, Any] = {"status": job.status, "images": len(job.outputs)}
    if job.error:
        data["error"] = job.error
    return JobEvent(job_id=str(job.id), kind=kind, data=data, attempt=job.attempts, job=job,
                    created_at=job.finished_at)


class SharedReads(Generic[T]):
    """Identical reads asked for at the same time run as one query.

    A caller joins a query that has not started yet, never one already running (that one may have started before
    what the caller was told about was committed): it waits for the next one, which starts when the running one
    ends. So at most two queries per key follow each other however many callers ask, and each caller's answer is
    read after it asked.
    """

    def __init__(self) -> None:
        self._next: dict[Hashable, tuple[asyncio.Future[T], Callable[[], Awaitable[T]]]] = {}
        self._running: dict[Hashable, asyncio.Task[None]] = {}

    async def read(self, key: Hashable, query: Callable[[], Awaitable[T]]) -> T:
        """The answer of the next `query` for `key` to start (callers with the same key share it)."""
        waiting = self._next.get(key)
        if waiting is not None:
            future = waiting[0]
        else:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no caller left to hear it: fine
            self._next[key] = (future, query)
            if key not in self._running:
                self._launch(key)
        return await asyncio.shield(future)  # one caller giving up does not cancel the others' query

    def _launch(self, key: Hashable) -> None:
        """Run the waiting query of `key` (callers join it until it starts); then the next one, if callers came."""

        async def run() -> None:
            future, query = self._next.pop(key)  # from here on, callers wait for the next query
            try:
                future.set_result(await query())
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:  # every caller gets the query's error
                future.set_exception(exc)
            finally:
                del self._running[key]
                if key in self._next:
                    self._launch(key)

        self._running[key] = asyncio.get_running_loop().create_task(run())


class JobEvents:
    """Publish, read and follow job events through the ledger's pool; followers share its NotificationHub."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]], conninfo: str,
                 notifications: NotificationHub | None = None) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.notifications = notifications
        self._shared_events: SharedReads[list[JobEvent]] = SharedReads()
        self._shared_jobs: SharedReads[list[Job]] = SharedReads()

    async def publish(self, job_id: str | uuid.UUID, attempt: int, kind: str, data: dict[str, Any] | None = None,
                      *, preview: bytes | None = None, preview_type: str | None = None) -> int:
        """Record one event (a preview replaces the job's earlier preview); returns its seq."""
        params = {"job": uuid.UUID(str(job_id)), "attempt": attempt, "kind": kind,
                  "data": Jsonb(data or {}), "preview": preview, "preview_type": preview_type}
        async with self.pool.connection() as conn:
            cur = await conn.execute(_INSERT, params)
            row = await cur.fetchone()
            assert row is not None
            seq = int(row["seq"])
            if kind == "preview":
                await conn.execute(_DROP_OLDER_PREVIEWS, (params["job"], seq))
        return seq

    async def drop_previews(self, job_id: str | uuid.UUID) -> None:
        """Forget a finished job's preview frames (its images replace them)."""
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM job_events WHERE job_id = %s AND kind = 'preview'",
                               (uuid.UUID(str(job_id)),))

    async def read(self, job_ids: Sequence[str | uuid.UUID], after: int = 0) -> list[JobEvent]:
        """The stored events of these jobs after `after`, oldest first."""
        ids = [uuid.UUID(str(j)) for j in job_ids]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM job_events WHERE job_id = ANY(%s) AND seq > %s ORDER BY seq", (ids, after))
            return [_event(row) for row in await cur.fetchall()]

    async def preview(self, job_id: str | uuid.UUID, seq: int) -> JobEvent | None:
        """One stored preview event (None once it was replaced or the job ended)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM job_events WHERE job_id = %s AND seq = %s AND kind = 'preview'",
                                     (uuid.UUID(str(job_id)), seq))
            row = await cur.fetchone()
        return None if row is None else _event(row)

    async def _jobs(self, ids: list[uuid.UUID]) -> list[Job]:
        """The current rows of these jobs."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM jobs WHERE id = ANY(%s)", (ids,))
            return [Job.model_validate(row) for row in await cur.fetchall()]

    async def follow(self, job_ids: Sequence[str | uuid.UUID], after: int = 0,
                     *, recheck_seconds: float = 30.0) -> AsyncIterator[JobEvent]:
        """Every event of these jobs after `after` as it happens, then each job's final event; ends when all end.

        No polling: it sleeps on the ledger's LISTEN connection (atelier_events, atelier_status: the shared
        NotificationHub) and rereads from its cursor only when woken (or every `recheck_seconds`, in case a
        notification was lost with a connection). Without a hub (a JobEvents made only to publish) it listens on
        a connection of its own for this one call.
        """
        if self.notifications is None:
            hub = NotificationHub(self.conninfo)
            try:
                async for event in self._follow(hub, job_ids, after, recheck_seconds):
                    yield event
            finally:
                await hub.close()
            return
        async for event in self._follow(self.notifications, job_ids, after, recheck_seconds):
            yield event

    async def _follow(self, hub: NotificationHub, job_ids: Sequence[str | uuid.UUID], after: int,
                      recheck_seconds: float) -> AsyncIterator[JobEvent]:
        """`follow` on this hub."""
        wanted = {uuid.UUID(str(j)) for j in job_ids}
        with hub.subscribe(wanted) as woken:  # before the first read: nothing can slip between read and wait
            while wanted:
                for event in await self._read_shared(wanted, after):
                    after = max(after, event.seq or after)
                    yield event
                finished = [job for job in await self._jobs_shared(wanted) if job.done]
                if finished:
                    for event in await self._read_shared({job.id for job in finished}, after):
                        after = max(after, event.seq or after)
                        yield event
                    for job in finished:
                        wanted.discard(job.id)
                        yield final_event(job)
                    continue
                await woken.wait(recheck_seconds)

    async def _read_shared(self, ids: set[uuid.UUID], after: int) -> list[JobEvent]:
        """`read`, shared with the followers asking the same at the same time (sent again while the database is
        away)."""
        key = (tuple(sorted(ids)), after)
        events = await outlast_outage(lambda: self._shared_events.read(key, lambda: self.read(list(ids), after)),
                                      what="following jobs", patience_seconds=FOLLOW_PATIENCE_SECONDS)
        return list(events)

    async def _jobs_shared(self, ids: set[uuid.UUID]) -> list[Job]:
        """`_jobs`, shared with the followers asking the same at the same time (sent again while the database is
        away)."""
        jobs = await outlast_outage(lambda: self._shared_jobs.read(tuple(sorted(ids)), lambda: self._jobs(list(ids))),
                                    what="following jobs", patience_seconds=FOLLOW_PATIENCE_SECONDS)
        return list(jobs)


class EventPublisher:
    """A job attempt's event source for the worker: throttles progress and previews; never fails the job."""

    def __init__(self, events: JobEvents | None, job: Job, *, progress_every: float = 0.2,
                 preview_every: float = 0.5) -> None:
        self.events = events
        self.job_id = str(job.id)
        self.attempt = job.attempts
        self.progress_every = progress_every
        self.preview_every = preview_every
        self._last: dict[str, float] = {}

    def _due(self, kind: str, every: float, *, force: bool = False) -> bool:
        """Whether enough time passed since the last event of this kind."""
        now = time.monotonic()
        if not force and now - self._last.get(kind, -1e9) < every:
            return False
        self._last[kind] = now
        return True

    async def emit(self, kind: str, data: dict[str, Any] | None = None, *, preview: bytes | None = None,
                   preview_type: str | None = None) -> None:
        """Publish one event; a database hiccup is logged, not raised (progress is not worth a job)."""
        if self.events is None:
            return
        try:
            await self.events.publish(self.job_id, self.attempt, kind, data, preview=preview,
                                      preview_type=preview_type)
        except (psycopg.Error, OSError) as exc:
            log.warning("job %s: progress event not recorded: %s", self.job_id, exc)

    async def progress(self, step: int, total: int, node: str | None) -> None:
        """A sampler step (throttled; the first and last step always go out)."""
        if self._due("progress", self.progress_every, force=step in (1, total)):
            await self.emit("progress", {"step": step, "max": total, "node": node})

    async def preview(self, image: bytes, image_type: str) -> None:
        """A live preview frame (throttled)."""
        if self._due("preview", self.preview_every):
            await self.emit("preview", {"bytes": len(image)}, preview=image, preview_type=image_type)

    async def finish(self) -> None:
        """The attempt ended: drop the preview frames."""
        if self.events is None:
            return
        try:
            await self.events.drop_previews(self.job_id)
        except (psycopg.Error, OSError) as exc:
            log.warning("job %s: previews not dropped: %s", self.job_id, exc)
