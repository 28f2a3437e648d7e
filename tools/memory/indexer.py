"""Catch the memory up with the ledger: every succeeded job's images, indexed once each.

Workers never touch the memory; the processes that run an indexer (the chat, the job API and the LangGraph server
that mounts it, or `atelier memory index --follow`) index what the ledger says succeeded; several may run at
once on the shared memory (writes are upserts by image id), on start and whenever a job succeeds
(LISTEN atelier_status). Ratings given anywhere (chat, job API, MCP) follow the same way: the ledger stamps each
rating and notifies `atelier_ratings`, and the indexer copies it onto the image's points, so style profiles and
rating-filtered searches see ratings from every front end.

One bad job never stops the others, and nothing stops the indexer:

- an image it cannot read (a missing output, a damaged file, a decompression bomb) is indexed without its pixels
  (a neutral colour layout; the prompt still finds it) and the job keeps the reason;
- a job the memory does not take (the memory unreachable, a write refused) is retried after a back-off
  (ATELIER_MEMORY_INDEX_BACKOFF_SECONDS, doubling up to ATELIER_MEMORY_INDEX_BACKOFF_MAX_SECONDS) and skipped
  with its reason after ATELIER_MEMORY_INDEX_ATTEMPTS failures; two failures in a row end a round and pause the
  next ones with the same back-off (the memory is likely down: it is not hammered), and jobs never tried go before
  retries, so one job that always fails delays nobody;
- with a vision model (ATELIER_VISION_MODEL), each readable image is captioned (tools/vision.py); the caption joins
  its record's search text and is kept with the job (`caption` events, tools/ledger/indexing.py). A caption that
  cannot be made (the model missing or blind, Ollama down or slower than the timeout) never fails a job or its
  indexing: the record and the job say why it was skipped, and after Ollama was down or slow no image is sent for
  the same back-off;
- a rating the memory does not take stays pending and is copied again after the same back-off;
- `follow` logs any fault with its reason, waits (1 s doubling to 60 s) and starts again; between notifications it
  wakes when a retry is due, and every 30 s in case a notification was lost.

`atelier memory status` shows the jobs waiting, retrying and skipped, and the latest reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from atelier.tools.errors import AtelierError
from atelier.tools.ledger.indexing import MEMORY_INDEX, IndexBackoff, IndexBook
from atelier.tools.ledger.models import Job
from atelier.tools.ledger.outages import database_unavailable
from atelier.tools.ledger.store import JobLedger
from atelier.tools.memory.images import colour_layout, records_for_job
from atelier.tools.memory.records import image_point_id
from atelier.tools.memory.store import PIXEL_DIM, MemoryStore
from atelier.tools.outputs.store import OutputStore
from atelier.tools.settings import Settings
from atelier.tools.vision import CaptionAttempt, caption_or_skip

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["MemoryIndexer", "backoff_seconds", "fault_reason"]

log = logging.getLogger(__name__)
_SETTLE_STEP = 2000  # rows folded per step: a stop request waits for one step at most

# The follow loop's own waits after a fault (the database lost, anything unexpected): first, longest.
_LOOP_BACKOFF = (1.0, 60.0)
# Follow rereads what is due at least this often (a notification lost with a connection).
_RECHECK_SECONDS = 30.0
# This many store failures in a row end a round: the memory is likely down, the other jobs wait for the back-off.
_IN_A_ROW = 2
# A neutral colour layout: what an image whose pixels cannot be read is indexed with.
_NEUTRAL = [1.0 / math.sqrt(PIXEL_DIM)] * PIXEL_DIM


def backoff_seconds(failures: int, first: float, longest: float) -> float:
    """The wait after `failures` failures in a row: `first`, doubling each time, at most `longest`."""
    return min(first * 2.0 ** min(max(failures - 1, 0), 60), longest)


def fault_reason(exc: BaseException) -> str:
    """One line saying what went wrong: Atelier's own message, or the exception's type and first line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, AtelierError) and text:
        return text[:500]
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


@dataclass
class _Prepared:
    """What the memory stores of one job: a caption (or why none) and a colour layout per output, and what could
    not be read."""

    captions: list[CaptionAttempt] = field(default_factory=list)
    layouts: list[list[float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def note(self) -> str | None:
        """The problems as one line, None when every image was read."""
        return "; ".join(self.problems) or None


class _Pause:
    """A pause after failing rounds: `first` seconds, doubling with each failing round up to `longest`; a round that
    succeeds clears it."""

    def __init__(self, clock: Callable[[], float], first: float, longest: float) -> None:
        self.clock = clock
        self.first = first
        self.longest = longest
        self.failures = 0
        self.until = -math.inf

    def active(self) -> bool:
        """Whether the pause still runs."""
        return self.clock() < self.until

    def remaining(self) -> float:
        """Seconds until the pause ends (infinite when there is none)."""
        return max(0.0, self.until - self.clock()) if self.failures else math.inf

    def failed(self) -> None:
        """A round failed: pause for longer than last time."""
        self.failures += 1
        self.until = self.clock() + backoff_seconds(self.failures, self.first, self.longest)

    def succeeded(self) -> None:
        """A round went through: no pause."""
        self.failures = 0
        self.until = -math.inf


class MemoryIndexer:
    """Indexes succeeded jobs into the memory, once each; copies ratings; survives every fault it meets."""

    def __init__(self, ledger: JobLedger, memory: MemoryStore, outputs: OutputStore, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.memory = memory
        self.outputs = outputs
        self.settings = settings
        self.clock = clock
        self.book = IndexBook(ledger.pool)
        self.backoff = IndexBackoff(settings.memory_index_attempts, settings.memory_index_backoff_seconds,
                                    settings.memory_index_backoff_max_seconds)
        # After failures in a row (the memory is likely down), job rounds and rating copies wait.
        self._outage = _Pause(clock, self.backoff.first_seconds, self.backoff.max_seconds)
        self._ratings = _Pause(clock, self.backoff.first_seconds, self.backoff.max_seconds)
        # After Ollama failed to caption (down, or slower than the timeout), images are not sent for a while.
        self._vision = _Pause(clock, self.backoff.first_seconds, self.backoff.max_seconds)
        self._vision_reason = ""

    @classmethod
    def for_service(cls, service: LedgerService, memory: MemoryStore) -> MemoryIndexer:
        """An indexer of a LedgerService's jobs and output store into `memory` (what front ends start)."""
        return cls(service.ledger, memory, service.store, service.settings)

    # --- one job -------------------------------------------------------------------------------------------

    def _prepare(self, job: Job) -> _Prepared:
        """Captions and colour layouts of a job's outputs; an image that cannot be read gets a neutral layout."""
        prepared = _Prepared()
        for index, output in enumerate(job.outputs):
            try:
                data = self.outputs.read(output.uri)
                layout = colour_layout(data, max_pixels=self.settings.max_image_pixels)
            except Exception as exc:  # whatever the file holds, the job is indexed without its pixels
                reason = f"image {index}: {fault_reason(exc)}"
                log.warning("job %s: %s; indexed without its pixels", job.id, reason)
                prepared.problems.append(reason)
                prepared.captions.append(CaptionAttempt(skipped=f"its pixels could not be read ({reason})"))
                prepared.layouts.append(_NEUTRAL)
                continue
            prepared.captions.append(self._caption(job, index, data))
            prepared.layouts.append(layout)
        return prepared

    def _caption(self, job: Job, index: int, data: bytes) -> CaptionAttempt:
        """The vision model's caption of an image that decoded, or why there is none (the prompt stands alone)."""
        if self.settings.vision_model and self._vision.active():
            return CaptionAttempt(skipped=f"not sent: {self._vision_reason}", unavailable=True)
        try:
            attempt = caption_or_skip(data, self.settings)
        except Exception as exc:  # a caption is optional: nothing about it may stop the job's indexing
            attempt = CaptionAttempt(skipped=f"captioning failed: {fault_reason(exc)}")
        if attempt.unavailable:
            self._vision.failed()
            self._vision_reason = attempt.skipped or ""
        elif attempt.caption is not None:
            self._vision.succeeded()
        if attempt.caption is None and self.settings.vision_model:
            log.warning("job %s image %d: no caption (%s); the prompt stands for the image", job.id, index,
                        attempt.skipped)
        return attempt

    def _store(self, job: Job) -> tuple[int, str | None, list[CaptionAttempt]]:
        """Prepare and store one job's images (blocking): how many were stored, what could not be read, and each
        image's caption or why it has none."""
        prepared = self._prepare(job)
        stored = self.memory.add_images(records_for_job(job, prepared.captions), prepared.layouts)
        return stored, prepared.note(), prepared.captions

    async def _failed(self, job: Job, exc: Exception) -> None:
        """Record that the memory did not take a job: retried after the back-off, or skipped when out of attempts."""
        reason = fault_reason(exc)
        failure = await self.book.failed(job.id, reason, self.backoff)
        if failure is None:
            return
        if failure.skipped:
            log.warning("job %s: the memory did not take its images (%s); skipped after %d attempts "
                        "(`atelier memory status --retry-skipped` tries again)", job.id, reason, failure.attempts)
        else:
            log.warning("job %s: the memory did not take its images (%s); attempt %d of %d, next at %s", job.id,
                        reason, failure.attempts, self.backoff.attempts, failure.retry_at)

    # --- rounds --------------------------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Index every succeeded job that is due (never tried, or its retry time passed); how many images were stored.

        A job the memory does not take is recorded for a retry (or skipped); two such failures in a row end the
        round and pause the next ones (the same back-off as a job's). Faults of the ledger itself, and a database that
        is away while the memory stores (pgvector on a restarting PostgreSQL), propagate without costing the job an
        attempt (`follow` waits and starts again).
        """
        if self._outage.active():
            return 0
        total = 0
        while True:
            jobs = await self.ledger.unindexed()
            if not jobs:
                return total
            done: list[Job] = []
            notes: list[str | None] = []
            captions: list[list[CaptionAttempt]] = []
            in_a_row = 0
            for job in jobs:
                try:
                    stored, note, described = await asyncio.to_thread(self._store, job)
                except Exception as exc:  # any store fault: this job retries, the others go on
                    if database_unavailable(exc):  # PostgreSQL (pgvector's) restarting: not the job's fault
                        raise
                    await self._failed(job, exc)
                    in_a_row += 1
                    if in_a_row >= _IN_A_ROW:
                        break
                    continue
                in_a_row = 0
                total += stored
                done.append(job)
                notes.append(note)
                captions.append(described)
            if done:
                self._outage.succeeded()
                if self.settings.vision_model:  # without one, jobs are recorded as before
                    await self.book.record_captions(done, [[a.record() for a in each] for each in captions])
                await self.ledger.mark_indexed([j.id for j in done], notes)
            if in_a_row >= _IN_A_ROW:
                self._outage.failed()
                return total

    async def sync_ratings(self) -> int:
        """Copy ratings the memory does not hold yet onto the images' points; how many jobs were updated.

        A rating the memory does not take stays pending: after a failure nothing is copied until the back-off
        has passed; two failures in a row end the round.
        """
        if self._ratings.active():
            return 0
        total = 0
        while True:
            pending = await self.ledger.ratings_to_sync()
            if not pending:
                self._ratings.succeeded()
                return total
            synced = []
            failed = in_a_row = 0
            for item in pending:
                points = [image_point_id(str(item.job_id), i) for i in range(item.images)]
                try:
                    await asyncio.to_thread(self.memory.set_rating, points, rating=item.rating, thumb=item.thumb)
                except Exception as exc:  # the rating stays pending and is copied later
                    log.warning("job %s: the memory did not take its rating (%s); it stays pending", item.job_id,
                                fault_reason(exc))
                    failed += 1
                    in_a_row += 1
                    if in_a_row >= _IN_A_ROW:
                        break
                    continue
                in_a_row = 0
                synced.append(item)
            if synced:
                await self.ledger.mark_ratings_synced(synced)
                total += len(synced)
            if failed:
                self._ratings.failed()
                return total

    async def _seconds_until_due(self) -> float:
        """Seconds until a job's retry or a paused rating copy is due (at most the recheck interval)."""
        if self._outage.active():  # the round at the pause's end takes every job due by then
            jobs = self._outage.remaining()
        else:
            jobs = await self.book.seconds_until_retry(_RECHECK_SECONDS)
        return max(0.0, min(jobs, self._ratings.remaining(), _RECHECK_SECONDS))

    # --- following the ledger ------------------------------------------------------------------------------

    async def settle(self, stop: asyncio.Event | None = None) -> int:
        """Fold what was stored into the memory's search index, a batch at a time, until done or `stop` is set."""
        total = 0
        while stop is None or not stop.is_set():
            folded = await asyncio.to_thread(self.memory.settle, _SETTLE_STEP)
            total += folded
            if folded < _SETTLE_STEP:
                break
        return total

    async def follow(self, stop: asyncio.Event) -> None:
        """Catch up, then again each time a job succeeds or is rated and whenever a retry is due, until `stop` is set.

        It never gives up: any fault (the database lost, anything unexpected) is logged with its reason, and it
        starts again after a back-off (1 s, doubling up to 60 s). Only cancellation ends it early.
        """
        faults = 0
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.ledger.conninfo, autocommit=True) as listen:
                    for channel in ("atelier_status", "atelier_ratings", MEMORY_INDEX):
                        await listen.execute(f"LISTEN {channel}".encode())
                    await self.catch_up()
                    await self.sync_ratings()
                    await self.settle(stop)
                    faults = 0
                    await self._listen(listen, stop)
            except Exception as exc:  # the indexer outlives every fault
                faults += 1
                delay = backoff_seconds(faults, *_LOOP_BACKOFF)
                log.warning("memory indexer: %s; starting again in %.0f s", fault_reason(exc), delay,
                            exc_info=not isinstance(exc, psycopg.Error | AtelierError))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _listen(self, listen: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event) -> None:
        """Index and copy ratings on each notification, and when a retry is due, until `stop` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            deadline = loop.time() + await self._seconds_until_due()
            index = rated = False
            while not (index or rated or stop.is_set()) and loop.time() < deadline:
                window = min(1.0, max(deadline - loop.time(), 0.01))  # `stop` is checked at least every second
                async with contextlib.aclosing(listen.notifies(timeout=window)) as notes:
                    async for note in notes:
                        index = note.channel == MEMORY_INDEX or (
                            note.channel == "atelier_status" and note.payload.endswith(" succeeded"))
                        rated = note.channel == "atelier_ratings"
                        if index or rated:
                            break
            if stop.is_set():
                return
            if index or loop.time() >= deadline:
                await self.catch_up()
            await self.sync_ratings()
            await self.settle(stop)
