"""The ledger as front ends use it: open it from settings, submit requests, read, wait for and cancel jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Self

from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvents
from atelier.tools.ledger.models import Job, JobRequest, SubmitOutcome
from atelier.tools.ledger.planning import PlannedJob, plan_job
from atelier.tools.ledger.store import JobLedger
from atelier.tools.ledger.timings import WorkflowTimings
from atelier.tools.outputs.store import OutputStore, build_output_store
from atelier.tools.prompts.abtests import ABTests
from atelier.tools.prompts.library import PromptLibrary
from atelier.tools.settings import Settings

__all__ = ["LedgerService", "database_url"]


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set; otherwise the embedded PostgreSQL in the data folder (started if needed)."""
    from atelier.tools.ledger.database import resolve_database

    return resolve_database(settings).url


class LedgerService:
    """Jobs for front ends (CLI, chat, API, agents): planning, the output store and the SQL in one place."""

    def __init__(self, ledger: JobLedger, settings: Settings, store: OutputStore) -> None:
        self.ledger = ledger
        self.settings = settings
        self.store = store
        self.events = JobEvents(ledger.pool, ledger.conninfo, ledger.notifications)
        self.timings = WorkflowTimings(ledger.pool)
        self.prompts = PromptLibrary(ledger.pool)
        self.abtests = ABTests(ledger.pool)
        self.accounts = UserDirectory(ledger.pool)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, conninfo: str | None = None, store: OutputStore | None = None
    ) -> AsyncIterator[Self]:
        """Connect (migrating the schema when needed) and close on exit."""
        # Resolving the database may start the embedded server, and plans read workflow files: both block,
        # so they run in threads (the LangGraph server rejects blocking calls on its event loop).
        url: str = conninfo if conninfo else await asyncio.to_thread(database_url, settings)
        outputs: OutputStore = store if store is not None else await asyncio.to_thread(build_output_store, settings)
        async with JobLedger.open(url) as ledger:
            yield cls(ledger, settings, outputs)

    async def submit(self, request: JobRequest, *, template: WorkflowTemplate | None = None) -> SubmitOutcome:
        """Plan and record one job (WorkflowError for a bad workflow or values, before anything is stored)."""
        planned = await asyncio.to_thread(plan_job, request, self.settings, template)
        return await self.ledger.submit(
            request, planned, max_attempts=self.settings.max_attempts, output_exists=self.store.exists
        )

    async def submit_many(
        self, requests: Sequence[JobRequest], *, templates: dict[str, WorkflowTemplate] | None = None
    ) -> list[SubmitOutcome | AtelierError]:
        """Plan and record many jobs at once (a batch file): per request its outcome, or the error that stopped it."""
        results, planned = await asyncio.to_thread(self._plan_all, requests, templates)
        if not planned:  # every request was refused at planning: nothing to record
            return results
        outcomes = await self.ledger.submit_many(
            [(request, plan) for _, request, plan in planned],
            max_attempts=self.settings.max_attempts, output_exists=self.store.exists,
        )
        for (index, _, _), outcome in zip(planned, outcomes, strict=True):
            results[index] = outcome
        return results

    def _plan_all(
        self, requests: Sequence[JobRequest], templates: dict[str, WorkflowTemplate] | None
    ) -> tuple[list[SubmitOutcome | AtelierError], list[tuple[int, JobRequest, PlannedJob]]]:
        """Plan every request (reading each workflow once); errors stand in for the requests that fail."""
        cache = templates if templates is not None else {}
        results: list[SubmitOutcome | AtelierError] = []
        planned: list[tuple[int, JobRequest, PlannedJob]] = []
        for index, request in enumerate(requests):
            ref = request.workflow or self.settings.default_workflow
            try:
                require_workflow_name(request.workflow)  # before any file is looked for under that name
                if ref not in cache:
                    cache[ref] = resolve_workflow(ref, self.settings)
                planned.append((index, request, plan_job(request, self.settings, cache[ref])))
            except AtelierError as exc:
                results.append(exc)
                continue
            results.append(AtelierError("not recorded"))  # replaced by the outcome once recorded
        return results, planned

    async def get(self, job_id: str | uuid.UUID, *, owner: str | None = None) -> Job:
        """One job (JobNotFoundError when unknown, or not `owner`'s when an owner is given)."""
        return await self.ledger.get(job_id, owner=owner)

    async def list_jobs(self, *, status: str | None = None, owner: str | None = None, batch: str | None = None,
                   limit: int = 50) -> list[Job]:
        """Newest jobs first, filtered."""
        return await self.ledger.list_jobs(status=status, owner=owner, batch=batch, limit=limit)

    async def cancel(self, job_id: str | uuid.UUID) -> Job:
        """Cancel a job (queued: at once; submitted or running: its worker removes or interrupts it)."""
        return await self.ledger.cancel(job_id)

    async def wait(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> list[Job]:
        """Wait until the jobs finish."""
        return await self.ledger.wait(job_ids, timeout)

    def watch(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> AsyncIterator[Job]:
        """Yield each job as it finishes."""
        return self.ledger.watch(job_ids, timeout)

    def link(self, uri: str) -> str:
        """A path or presigned URL for one output."""
        return self.store.link(uri)
