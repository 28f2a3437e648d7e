"""Catch the memory up with the ledger: every succeeded job's images, indexed by the process owning the memory.

Workers never touch the memory (local Qdrant allows one process); whichever process owns it (the chat,
the API server, or `atelier memory index --follow`) indexes what the ledger says succeeded, on start and
whenever a job succeeds (LISTEN atelier_status). Ratings given anywhere (chat, job API, MCP) follow the same way:
the ledger stamps each rating and notifies `atelier_ratings`, and the indexer copies it onto the image's points,
so style profiles and rating-filtered searches see ratings from every front end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import psycopg

from atelier.tools.errors import AtelierError
from atelier.tools.ledger.models import Job
from atelier.tools.ledger.store import JobLedger
from atelier.tools.memory.images import caption_image, colour_layout, records_for_job
from atelier.tools.memory.records import image_point_id
from atelier.tools.memory.store import PIXEL_DIM, MemoryStore
from atelier.tools.outputs.store import OutputStore
from atelier.tools.settings import Settings

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["MemoryIndexer"]

log = logging.getLogger(__name__)


class MemoryIndexer:
    """Indexes succeeded jobs into the memory, once each."""

    def __init__(self, ledger: JobLedger, memory: MemoryStore, outputs: OutputStore, settings: Settings) -> None:
        self.ledger = ledger
        self.memory = memory
        self.outputs = outputs
        self.settings = settings

    @classmethod
    def for_service(cls, service: LedgerService, memory: MemoryStore) -> MemoryIndexer:
        """An indexer of a LedgerService's jobs and output store into `memory` (what front ends start)."""
        return cls(service.ledger, memory, service.store, service.settings)

    def _prepare(self, job: Job) -> tuple[list[str | None], list[list[float]]]:
        """Captions and colour layouts of a job's outputs (a missing file indexes with a neutral layout)."""
        captions: list[str | None] = []
        layouts: list[list[float]] = []
        for output in job.outputs:
            try:
                data = self.outputs.read(output.uri)
            except AtelierError as exc:
                log.warning("job %s: %s; indexed without its pixels", job.id, exc)
                captions.append(None)
                layouts.append([1.0 / PIXEL_DIM**0.5] * PIXEL_DIM)
                continue
            captions.append(caption_image(self.settings, data))
            layouts.append(colour_layout(data))
        return captions, layouts

    def index_jobs(self, jobs: list[Job]) -> int:
        """Index these jobs' images now (blocking); how many images were stored."""
        stored = 0
        for job in jobs:
            captions, layouts = self._prepare(job)
            stored += self.memory.add_images(records_for_job(job, captions), layouts)
        return stored

    async def catch_up(self) -> int:
        """Index every succeeded job not indexed yet; how many images were stored."""
        total = 0
        while True:
            jobs = await self.ledger.unindexed()
            if not jobs:
                return total
            total += await asyncio.to_thread(self.index_jobs, jobs)
            await self.ledger.mark_indexed([j.id for j in jobs])

    async def sync_ratings(self) -> int:
        """Copy ratings the memory does not hold yet onto the images' points; how many jobs were updated."""
        total = 0
        while True:
            pending = await self.ledger.ratings_to_sync()
            if not pending:
                return total
            for item in pending:
                points = [image_point_id(str(item.job_id), i) for i in range(item.images)]
                await asyncio.to_thread(self.memory.set_rating, points, rating=item.rating, thumb=item.thumb)
            await self.ledger.mark_ratings_synced(pending)
            total += len(pending)

    async def follow(self, stop: asyncio.Event) -> None:
        """Catch up, then again each time a job succeeds or is rated, until `stop` is set."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.ledger.conninfo, autocommit=True) as listen:
                    await listen.execute("LISTEN atelier_status")
                    await listen.execute("LISTEN atelier_ratings")
                    await self.catch_up()
                    await self.sync_ratings()
                    while not stop.is_set():
                        succeeded = rated = False
                        async with contextlib.aclosing(listen.notifies(timeout=1.0)) as notes:
                            async for note in notes:
                                succeeded = note.channel == "atelier_status" and note.payload.endswith(" succeeded")
                                rated = note.channel == "atelier_ratings"
                                if succeeded or rated:
                                    break
                        if succeeded:
                            await self.catch_up()
                        if succeeded or rated:
                            await self.sync_ratings()
            except psycopg.Error as exc:
                log.warning("memory indexer lost the database (%s); retrying", exc)
                await asyncio.sleep(1.0)
