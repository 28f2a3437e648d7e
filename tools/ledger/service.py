"""The ledger as front ends use it: open it from settings; submit, read, wait for, cancel, retry and rate jobs; read
their images; the accounts and the Authenticator on the same database. Front ends ask these methods, never the
pool, the JobLedger or the output store underneath."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple, Self

from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvents
from atelier.tools.ledger.indexing import IndexBook, IndexStatus
from atelier.tools.ledger.models import Job, JobRequest, SubmitOutcome
from atelier.tools.ledger.planning import PlannedJob, plan_job
from atelier.tools.ledger.store import JobLedger
from atelier.tools.ledger.timings import WorkflowTimings
from atelier.tools.outputs.store import OutputStore, OutputStoreError, build_output_store
from atelier.tools.prompts.abtests import ABTests
from atelier.tools.prompts.library import PromptLibrary
from atelier.tools.settings import Settings
from atelier.tools.workflow_library import resolve_effective

__all__ = ["ImageGoneError", "ImageNotFoundError", "JobImage", "LedgerService", "database_url"]


class ImageNotFoundError(AtelierError):
    """The job has no image at that index (not finished, failed, or fewer images); the message names the range."""


class ImageGoneError(AtelierError):
    """The job's image is recorded but the output store cannot give it back (deleted, or the store is unreachable)."""


class JobImage(NamedTuple):
    """One image of a job: its bytes and their content type."""

    data: bytes
    content_type: str


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
        self.abtests = ABTests(ledger.pool, settings.workflow_dirs)
        self.accounts = UserDirectory(ledger.pool)
        self.indexing = IndexBook(ledger.pool)
        self.authenticator = Authenticator(settings, self.accounts)

    @property
    def conninfo(self) -> str:
        """The database's connection string (for a LangGraph checkpointer on the same database)."""
        return self.ledger.conninfo

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
        """Plan and record one job (WorkflowError for a bad workflow or values, before anything is stored).

        Planning reads files (the workflow, an input image) in a thread; with the template given and no input image
        there is nothing to read, and it runs inline (the thread hop cost ~4× its CPU, bench/ledger_throughput.py).
        """
        if template is not None and request.params.input_image is None:
            planned = plan_job(request, self.settings, template)
        else:
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
                    cache[ref] = resolve_effective(ref, self.settings)
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

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        return await self.ledger.counts()

    async def cancel(self, job_id: str | uuid.UUID, *, owner: str | None = None) -> Job:
        """Cancel a job (queued: at once; submitted or running: its worker removes or interrupts it).

        With `owner`, only that owner's job (another's is JobNotFoundError, as if it did not exist).
        """
        if owner is not None:
            job_id = (await self.ledger.get(job_id, owner=owner)).id
        return await self.ledger.cancel(job_id)

    async def retry(self, job_id: str | uuid.UUID, *, owner: str | None) -> tuple[Job, Job]:
        """Queue a job again with its values, workflow, owner and priority (never from the cache); the job and its
        new copy. `owner`: whose job it must be (None: anyone's, for an admin)."""
        old = await self.ledger.get(job_id, owner=owner)
        outcome = await self.submit(JobRequest(params=old.generation, workflow=old.workflow, owner=old.owner,
                                               priority=old.priority, use_cache=False))
        return old, outcome.job

    async def rate(self, job_id: str | uuid.UUID, *, owner: str | None, stars: int | None = None,
                   thumb: int | None = None) -> Job:
        """Store 1–5 stars and/or a thumb (+1/-1) on a job; `owner`: whose job it must be (None: anyone's, for an
        admin). The memory indexer copies the rating onto the job's images (tools/memory/indexer.py)."""
        if owner is None:
            job = await self.ledger.get(job_id)
            job_id, owner = job.id, job.owner
        return await self.ledger.rate(job_id, owner, rating=stars, thumb=thumb)

    async def memory_index_status(self, recent: int = 5) -> IndexStatus:
        """How the memory's indexing of succeeded jobs stands (waiting, retrying, skipped) with the latest reasons."""
        return await self.indexing.status(recent)

    async def retry_skipped_indexing(self) -> int:
        """Give the jobs the memory's indexer skipped another set of attempts, now; how many."""
        return await self.indexing.retry_skipped()

    async def image(self, job_id: str | uuid.UUID, index: int = 0, *, owner: str | None) -> JobImage:
        """Image `index` of a job, from the output store; `owner`: whose job it must be (None: anyone's).

        JobNotFoundError for an unknown (or another owner's) job, ImageNotFoundError for an index it lacks,
        ImageGoneError when the store cannot give the image back.
        """
        return await self.output(await self.ledger.get(job_id, owner=owner), index)

    async def output(self, job: Job, index: int = 0) -> JobImage:
        """Image `index` of a job already read (ImageNotFoundError, ImageGoneError as for `image`)."""
        if not 0 <= index < len(job.outputs):
            raise ImageNotFoundError(f"job {job.id} has {len(job.outputs)} image(s) (status {job.status}); "
                                     f"ask for 0..{max(0, len(job.outputs) - 1)}")
        output = job.outputs[index]
        try:
            data = await asyncio.to_thread(self.store.read, output.uri)
        except OutputStoreError as exc:
            raise ImageGoneError(str(exc)) from exc
        return JobImage(data, output.content_type)

    async def wait(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> list[Job]:
        """Wait until the jobs finish."""
        return await self.ledger.wait(job_ids, timeout)

    def watch(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> AsyncIterator[Job]:
        """Yield each job as it finishes."""
        return self.ledger.watch(job_ids, timeout)

    def outputs_description(self) -> str:
        """Where finished images are kept, in words (a folder or a bucket)."""
        return self.store.describe()

    def link(self, uri: str) -> str:
        """A path or presigned URL for one output."""
        return self.store.link(uri)
