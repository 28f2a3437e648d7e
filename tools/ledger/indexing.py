"""The memory indexer's bookkeeping in the ledger: faults with their reasons, retries with back-off, skipped jobs.

`JobLedger.unindexed` hands out the jobs to index (never tried first, then due retries; skipped ones never) and
`JobLedger.mark_indexed` records them, with a note when an image went in without its pixels. `IndexBook` records a
job the memory did not take — retried after `first_seconds`, doubling up to `max_seconds`, and skipped after
`attempts` failures — tells the indexer when the next retry is due, gives skipped jobs another try, and says how
indexing stands (`atelier memory status`). The columns come from migration 10 (tools/ledger/migrations.py).

With a vision model (ATELIER_VISION_MODEL), `IndexBook.record_captions` keeps each image's caption — or why it has
none — with its job, as `caption` events in `job_events` (a JSON column that already exists: replayed by the job
API's event socket, read back with `IndexBook.captions`); recording a job's captions again replaces them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atelier.tools.ledger.models import Job

__all__ = ["CAPTION_EVENT", "MEMORY_INDEX", "TO_INDEX", "IndexBackoff", "IndexBook", "IndexFailure", "IndexProblem",
           "IndexStatus"]

# The kind of the `job_events` rows that hold an image's caption (or why it has none).
CAPTION_EVENT = "caption"

# Wakes the memory's indexer when skipped jobs are given another try.
MEMORY_INDEX = "atelier_memory_index"
# Succeeded jobs the memory has not indexed and has not given up on (the `jobs_to_index` partial index).
TO_INDEX = "status = 'succeeded' AND memory_indexed_at IS NULL AND memory_index_skipped_at IS NULL"

_PENDING = "memory_indexed_at IS NULL AND memory_index_skipped_at IS NULL"
_COUNTS = f"""SELECT
    count(*) FILTER (WHERE memory_indexed_at IS NOT NULL) AS indexed,
    count(*) FILTER (WHERE memory_indexed_at IS NOT NULL AND memory_index_error IS NOT NULL) AS partial,
    count(*) FILTER (WHERE {_PENDING} AND memory_index_attempts = 0) AS waiting,
    count(*) FILTER (WHERE {_PENDING} AND memory_index_attempts > 0) AS retrying,
    count(*) FILTER (WHERE memory_indexed_at IS NULL AND memory_index_skipped_at IS NOT NULL) AS skipped,
    count(*) FILTER (WHERE memory_indexed_at IS NOT NULL AND rated_at IS NOT NULL
                     AND (memory_rated_at IS NULL OR memory_rated_at < rated_at)) AS ratings_pending,
    min(memory_index_retry_at) FILTER (WHERE {_PENDING}) AS next_retry_at
FROM jobs WHERE status = 'succeeded'"""

# One more failure: the next try after the back-off (the old attempt count picks the wait), or skipped when out.
_FAILED = """UPDATE jobs SET memory_index_attempts = memory_index_attempts + 1,
    memory_index_error = %(reason)s, memory_index_failed_at = now(),
    memory_index_retry_at = CASE WHEN memory_index_attempts + 1 >= %(max)s THEN NULL
        ELSE now() + make_interval(secs => least(%(first)s * power(2, least(memory_index_attempts, 40)), %(cap)s)) END,
    memory_index_skipped_at = CASE WHEN memory_index_attempts + 1 >= %(max)s THEN now() END
WHERE id = %(id)s AND memory_indexed_at IS NULL
RETURNING memory_index_attempts, memory_index_retry_at, memory_index_skipped_at"""


@dataclass(frozen=True)
class IndexBackoff:
    """How the memory's indexer retries a job it could not store: waits of `first_seconds`, doubling up to
    `max_seconds`, and gives up after `attempts` failures."""

    attempts: int
    first_seconds: float
    max_seconds: float


@dataclass(frozen=True)
class IndexFailure:
    """What `IndexBook.failed` recorded: the failures so far, and when the job is retried (or that it is skipped)."""

    attempts: int
    retry_at: datetime | None
    skipped: bool


@dataclass(frozen=True)
class IndexProblem:
    """A job the indexer had trouble with, its state ("indexed" without some pixels, "retrying", "skipped") and why."""

    job_id: uuid.UUID
    state: str
    reason: str
    attempts: int
    at: datetime | None
    retry_at: datetime | None


@dataclass(frozen=True)
class IndexStatus:
    """Succeeded jobs by where they stand with the memory, ratings still to copy, and the latest problems."""

    indexed: int
    partial: int
    waiting: int
    retrying: int
    skipped: int
    ratings_pending: int
    next_retry_at: datetime | None
    recent: list[IndexProblem]


def _problem(row: DictRow) -> IndexProblem:
    """A row of a job with a recorded reason as an IndexProblem."""
    state = "indexed" if row["memory_indexed_at"] else "skipped" if row["memory_index_skipped_at"] else "retrying"
    return IndexProblem(job_id=row["id"], state=state, reason=row["memory_index_error"],
                        attempts=row["memory_index_attempts"], at=row["memory_index_failed_at"],
                        retry_at=row["memory_index_retry_at"])


class IndexBook:
    """The indexer's faults, retries and skipped jobs, on the ledger's pool."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    async def failed(self, job_id: uuid.UUID, reason: str, backoff: IndexBackoff) -> IndexFailure | None:
        """Record that the memory did not take a job: retried after the back-off, or skipped once out of attempts
        (None when the job is indexed already or gone)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_FAILED.encode(), {
                "id": job_id, "reason": reason[:2000], "max": backoff.attempts, "first": backoff.first_seconds,
                "cap": backoff.max_seconds})
            row = await cur.fetchone()
        if row is None:
            return None
        return IndexFailure(attempts=row["memory_index_attempts"], retry_at=row["memory_index_retry_at"],
                            skipped=row["memory_index_skipped_at"] is not None)

    async def record_captions(self, jobs: Sequence[Job], captions: Sequence[Sequence[dict[str, Any]]]) -> None:
        """Keep each job's image captions (`{"caption", "model", …}` or `{"skipped": why}`, one per output) with the
        job, replacing any recorded before (an indexer that retried or ran twice records one set)."""
        async with self.pool.connection() as conn, conn.transaction():
            for job, described in zip(jobs, captions, strict=True):
                await conn.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
                await conn.execute("DELETE FROM job_events WHERE job_id = %s AND kind = %s", (job.id, CAPTION_EVENT))
                for index, record in enumerate(described):
                    await conn.execute(
                        "INSERT INTO job_events (job_id, attempt, kind, data) VALUES (%s, %s, %s, %s)",
                        (job.id, job.attempts, CAPTION_EVENT, Jsonb({"image": index, **record})))

    async def captions(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        """The captions recorded with a job, by image (`{"image": 0, "caption": …}` or `{"image": 0, "skipped": …}`)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT data FROM job_events WHERE job_id = %s AND kind = %s ORDER BY seq",
                                     (job_id, CAPTION_EVENT))
            rows = await cur.fetchall()
        return sorted((dict(row["data"]) for row in rows), key=lambda data: int(data.get("image", 0)))

    async def seconds_until_retry(self, default: float) -> float:
        """Seconds until the next job waiting for a retry is due (`default` when none waits, at most `default`)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT extract(epoch FROM min(memory_index_retry_at) - now()) AS wait FROM jobs WHERE {TO_INDEX}"
                .encode())
            row = await cur.fetchone()
        wait = row["wait"] if row else None
        return default if wait is None else max(0.0, min(float(wait), default))

    async def retry_skipped(self) -> int:
        """Give every skipped job a fresh set of attempts now (and wake the memory's indexer); how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET memory_index_skipped_at = NULL, memory_index_retry_at = NULL, "
                "memory_index_attempts = 0 "
                "WHERE status = 'succeeded' AND memory_indexed_at IS NULL AND memory_index_skipped_at IS NOT NULL"
            )
            await conn.execute("SELECT pg_notify(%s, '')", (MEMORY_INDEX,))
            return cur.rowcount

    async def status(self, recent: int = 5) -> IndexStatus:
        """How indexing stands: jobs indexed, waiting, retrying and skipped, and the `recent` latest problems."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_COUNTS.encode())
            counts = await cur.fetchone()
            cur = await conn.execute(
                "SELECT id, memory_index_error, memory_index_attempts, memory_index_failed_at, "
                "memory_index_retry_at, memory_index_skipped_at, memory_indexed_at FROM jobs "
                "WHERE memory_index_error IS NOT NULL ORDER BY memory_index_failed_at DESC NULLS LAST, id LIMIT %s",
                (recent,),
            )
            rows = await cur.fetchall()
        assert counts is not None, "an aggregate always returns a row"
        return IndexStatus(indexed=counts["indexed"], partial=counts["partial"], waiting=counts["waiting"],
                           retrying=counts["retrying"], skipped=counts["skipped"],
                           ratings_pending=counts["ratings_pending"], next_retry_at=counts["next_retry_at"],
                           recent=[_problem(row) for row in rows])
