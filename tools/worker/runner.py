"""Run one claimed job on ComfyUI: attach to its prompt or submit it, follow it, store its images, record it.

Recovery rules (a job's id is its ComfyUI prompt id):
- The server of an earlier attempt is asked first (`/queue`, then `/history/{id}`): a prompt still there is
  followed, not sent again. Only a ComfyUI that forgot it (a restart) gets it once more.
- Output keys are fixed per job and image index, so an attempt that repeats the upload overwrites the same
  object: one job, one set of outputs.
- Every write to the ledger is fenced by the attempt number (see store.py).
- The database may restart or blink at any moment: a write of the attempt's result (its outputs, a failure, a
  retry) is sent again with the same attempt number — the same fencing token — until the database is back, for up
  to `patience_seconds` (tools/ledger/outages.py). A retried write whose first try had committed (its answer lost
  with the connection) finds the row already recorded by this attempt and takes it. So a stored output is never
  recorded as a failure, and a database error never ends a worker's slot.

Time limit: a prompt that has run (from its first execution event) longer than `time_limit` allows — the
settings' job_time_factor × the job's estimate, at least job_time_floor_seconds, or job_max_seconds for a job
without an estimate — is interrupted in ComfyUI and the job failed (`time_limit`) with a message saying how to
raise the limit. Failed and cancelled attempts record the GPU seconds and cost they used, which quotas charge.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from atelier.tools.comfyui.client import ComfyClient, RunOutcome
from atelier.tools.comfyui.direct import chosen_refs, prepare_graph
from atelier.tools.comfyui.events import (
    TERMINAL,
    ComfyEvent,
    NodeExecuting,
    NodeOutput,
    Preview,
    Queued,
    Started,
    StepProgress,
)
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import (
    AtelierError,
    ComfyExecutionError,
    ComfyHTTPError,
    ComfyInterruptedError,
    ComfyLostError,
    ComfyNoOutputsError,
    ComfyUnreachableError,
    ComfyValidationError,
    WorkflowError,
)
from atelier.tools.gpu.room import GpuRoom
from atelier.tools.ledger.events import EventPublisher, JobEvents
from atelier.tools.ledger.models import Job, JobOutput
from atelier.tools.ledger.outages import DEFAULT_PATIENCE_SECONDS, database_unavailable, outage_reason, outlast_outage
from atelier.tools.ledger.store import Claim, ClaimSpec, JobLedger, LeaseLostError
from atelier.tools.outputs.store import OutputStore, OutputStoreError, output_key
from atelier.tools.schemas import ImageRef
from atelier.tools.settings import Settings
from atelier.tools.worker.failpoints import Failpoints
from atelier.tools.worker.hotswap import job_models, make_room_for
from atelier.tools.worker.metrics import WorkerMetrics
from atelier.tools.workflow_library import resolve_effective

__all__ = ["JobRunner", "JobTimeLimitError", "backoff_seconds", "classify", "time_limit"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors a retry cannot fix fail the job at once.
PERMANENT = (ComfyValidationError, WorkflowError, ComfyNoOutputsError)
# Errors worth another attempt later (the server may come back, the prompt was forgotten).
TRANSIENT = (ComfyUnreachableError, ComfyLostError, OutputStoreError)
# A lapsed lease more often than this means the job itself kills workers: stop trying.
MAX_TAKEOVERS = 8
# How long a prompt interrupted for its time limit may take to stop before its job is failed anyway.
INTERRUPT_GRACE_SECONDS = 30.0


class JobTimeLimitError(AtelierError):
    """A job's prompt ran longer than its time limit and was interrupted."""

    def __init__(self, limit: float, why: str) -> None:
        self.limit = limit
        super().__init__(
            f"it ran longer than its time limit of {limit:g} s ({why}) and was interrupted in ComfyUI. Ask for fewer "
            "steps, a smaller size or a smaller batch; if such jobs truly need longer, the server's admin raises "
            "ATELIER_JOB_TIME_FACTOR, ATELIER_JOB_TIME_FLOOR_SECONDS or ATELIER_JOB_MAX_SECONDS"
        )


def time_limit(job: Job, settings: Settings) -> tuple[float, str]:
    """How long a job's prompt may run, in seconds, and why that long."""
    if not job.estimated_seconds:
        return settings.job_max_seconds, "ATELIER_JOB_MAX_SECONDS, for a job without an estimate"
    scaled = settings.job_time_factor * job.estimated_seconds
    if scaled < settings.job_time_floor_seconds:
        return settings.job_time_floor_seconds, "ATELIER_JOB_TIME_FLOOR_SECONDS, the shortest limit"
    return scaled, f"ATELIER_JOB_TIME_FACTOR {settings.job_time_factor:g} × its estimate of {job.estimated_seconds:g} s"


def classify(exc: BaseException) -> str | None:
    """'permanent', 'transient', or None for errors this module does not handle."""
    if isinstance(exc, PERMANENT):
        return "permanent"
    if isinstance(exc, TRANSIENT):
        return "transient"
    if database_unavailable(exc):  # PostgreSQL restarting or away: the job itself is fine
        return "transient"
    if isinstance(exc, ComfyHTTPError):
        return "transient" if exc.status >= 500 or exc.status == 429 else "permanent"
    if isinstance(exc, ComfyExecutionError):
        return "transient" if "OutOfMemory" in exc.exception_type else "permanent"
    return None


def backoff_seconds(failures: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter: up to base·2^failures seconds, at most `cap`."""
    return float(random.uniform(0.5, 1.0) * min(cap, base * 2 ** max(0, failures)))


@dataclass
class _Progress:
    """What the event stream told us about one attempt."""

    started_at: float | None = None
    finished_at: float | None = None
    marked_running: bool = False
    mid_run_checked: bool = False
    publisher: EventPublisher | None = None
    in_comfyui: bool = False
    server: str | None = None
    running: asyncio.Event = field(default_factory=asyncio.Event)
    timed_out: bool = False

    def gpu_seconds(self) -> float | None:
        """How long the prompt ran on the GPU (None when it never started): to its end, or until now."""
        if self.started_at is None:
            return None
        return max(0.0, (self.finished_at or time.monotonic()) - self.started_at)


class JobRunner:
    """Carries one claimed job through ComfyUI to a recorded result."""

    def __init__(
        self,
        ledger: JobLedger,
        settings: Settings,
        store: OutputStore,
        *,
        client_for: Callable[[str], Awaitable[ComfyClient]],
        metrics: WorkerMetrics,
        failpoints: Failpoints,
        gpu: GpuRoom | None = None,
        patience_seconds: float = DEFAULT_PATIENCE_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.patience_seconds = patience_seconds
        self.gpu = gpu
        self.settings = settings
        self.store = store
        self.client_for = client_for
        self.metrics = metrics
        self.failpoints = failpoints
        self.events = JobEvents(ledger.pool, ledger.conninfo)
        self._templates: dict[str, WorkflowTemplate] = {}

    def template(self, ref: str) -> WorkflowTemplate:
        """A job's workflow, loaded once per worker."""
        if ref not in self._templates:
            self._templates[ref] = resolve_effective(ref, self.settings)
        return self._templates[ref]

    async def run(
        self, claim: Claim, server: str, next_spec: Callable[[], ClaimSpec] | None = None
    ) -> tuple[Job | None, Claim | None]:
        """Process a claimed job to its end: (its recorded state or None if the lease was lost, the next claim).

        With `next_spec`, a success is recorded and the next job claimed in one round trip; the spec is asked
        for at that moment (so it names the models the server holds by then).
        """
        job = claim.job
        started = time.monotonic()
        handoff: list[Claim | None] = [None]
        progress = _Progress()
        try:
            result = await self._attempt(claim, server, next_spec, handoff, progress)
        except LeaseLostError as exc:
            log.warning("%s", exc)
            return None, handoff[0]
        except Exception as exc:
            try:
                settled = await self._settle(job, exc, progress)
            except Exception as unrecorded:  # the database stayed away past our patience, or worse: not the slot's end
                log.error("job %s: its outcome (%s) could not be recorded: %s; its lease will lapse and another "
                          "attempt take it over", job.id, outage_reason(exc), outage_reason(unrecorded),
                          exc_info=not database_unavailable(unrecorded))
                return None, handoff[0]
            if settled is None:
                return None, handoff[0]
            result = settled
        self.metrics.job_seconds.observe(time.monotonic() - started)
        self.metrics.finished.labels(result.status).inc()
        return result, handoff[0]

    async def _settle(self, job: Job, exc: Exception, progress: _Progress) -> Job | None:
        """Turn an error into a recorded failure, cancellation or retry (a failure or cancellation with the GPU time
        and cost the attempt used)."""
        kind = classify(exc)
        used = self._used(job, progress)
        try:
            if isinstance(exc, JobTimeLimitError):
                return await self._record(job, "record its failure", lambda: self.ledger.fail(
                    job, str(exc), "time_limit", **used))
            if isinstance(exc, ComfyInterruptedError) and await self._patiently(
                    job, "read its cancel request", lambda: self.ledger.is_cancel_requested(job)):
                return await self._record(job, "record its cancellation", lambda: self.ledger.record_cancelled(
                    job, **used))
            if isinstance(exc, ComfyInterruptedError):
                return await self._record(job, "record its failure", lambda: self.ledger.fail(
                    job, f"{exc} (interrupted outside Atelier)", "interrupted", **used))
            if kind == "transient":
                self.metrics.retries.inc()
                delay = backoff_seconds(job.failures)
                outage = database_unavailable(exc)
                log.info("job %s: %s; retrying in %.1f s", job.id, exc, delay)
                await EventPublisher(self.events, job).emit(
                    "retrying", {"error": str(exc), "in_seconds": round(delay, 1)})
                return await self._record(job, "send it back to the queue", lambda: self.ledger.retry_later(
                    job, str(exc), type(exc).__name__, delay_seconds=delay, count_failure=not outage))
            if kind is None:
                log.exception("job %s: unexpected error", job.id, exc_info=exc)
            return await self._record(job, "record its failure", lambda: self.ledger.fail(
                job, str(exc), type(exc).__name__, **used))
        except LeaseLostError as lost:
            log.warning("%s", lost)
            return None

    async def _patiently(self, job: Job, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a ledger statement of this job, sending it again while the database is away (up to our patience)."""
        def counted(_exc: BaseException) -> None:
            self.metrics.database_retries.inc()

        return await outlast_outage(operation, what=f"job {job.id}: {what}", patience_seconds=self.patience_seconds,
                                    on_retry=counted)

    async def _record(self, job: Job, what: str, write: Callable[[], Awaitable[Job]], *, resent: bool = False) -> Job:
        """A fenced write of this attempt, sent again with the same attempt number while the database is away.

        A retry that no longer matches (LeaseLostError) may mean the first try committed and only its answer was
        lost with the connection: if the row shows this attempt and a state the write sets (not submitted or
        running any more), that row is the write's result. Otherwise another worker owns the job: LeaseLostError.
        `resent`: the write was tried once already.
        """
        retried = resent

        def counted(_exc: BaseException) -> None:
            nonlocal retried
            retried = True
            self.metrics.database_retries.inc()

        try:
            return await outlast_outage(write, what=f"job {job.id}: {what}", patience_seconds=self.patience_seconds,
                                        on_retry=counted)
        except LeaseLostError:
            if not retried:
                raise
            current = await self._patiently(job, "read it back", lambda: self.ledger.get(job.id))
            if current.attempts != job.attempts or current.status in ("submitted", "running"):
                raise
            log.info("job %s: attempt %d had already recorded %s before the connection dropped",
                     job.id, job.attempts, current.status)
            return current

    def _used(self, job: Job, progress: _Progress) -> dict[str, Any]:
        """The GPU seconds and cost of an attempt that did not succeed (none when its prompt never ran)."""
        gpu = progress.gpu_seconds()
        if gpu is None:
            return {}
        if progress.server is not None:
            self.metrics.gpu_seconds.labels(progress.server).inc(gpu)
        return {"gpu_seconds": gpu, "actual_cost": self._cost(job, gpu)}

    async def _attempt(
        self, claim: Claim, server: str, next_spec: Callable[[], ClaimSpec] | None, handoff: list[Claim | None],
        progress: _Progress,
    ) -> Job:
        """One attempt: recover or submit, follow, store, record."""
        job = claim.job
        if claim.recovered and job.attempts > MAX_TAKEOVERS:
            return await self._record(job, "record its failure", lambda: self.ledger.fail(
                job, f"its worker died {job.attempts - 1} times while running it; check the workers' logs",
                "worker_crashes",
            ))
        if job.attempts == 1:
            self.metrics.queue_wait.observe(max(0.0, (job.claimed_at or job.created_at).timestamp()
                                                - job.created_at.timestamp()))
        target = job.server or server
        comfy = await self.client_for(target)
        if claim.previous_server and claim.previous_server != target:
            found = await _locate_quietly(await self.client_for(claim.previous_server), job.prompt_id)
            if found:
                target, comfy = claim.previous_server, await self.client_for(claim.previous_server)
                moved = job
                job = await self._record(job, "record its server", lambda: self.ledger.set_server(moved, target))
        if job.cancel_requested:
            await _cancel_quietly(comfy, job.prompt_id)
            cancelled = job
            return await self._record(job, "record its cancellation", lambda: self.ledger.record_cancelled(cancelled))
        template = self.template(job.workflow)
        graph = await prepare_graph(comfy, template, job.generation, self.settings)
        publisher = EventPublisher(self.events, job)
        models = job_models(job, template)
        if self.gpu is not None and (job.attempts == 1 or not await _locate_quietly(comfy, job.prompt_id)):
            await make_room_for(self.gpu, job, target, comfy, models, publisher, self.metrics)
        self.failpoints.hit("before_submit")
        progress.publisher, progress.server = publisher, target
        job_ref = [job]

        async def on_event(event: ComfyEvent) -> None:
            await self._on_event(job_ref, event, progress, target)
            if self.gpu is not None and not progress.in_comfyui and isinstance(event, Queued | Started):
                progress.in_comfyui = True  # ComfyUI loads these models when the prompt runs
                self.gpu.ran(target, models)

        try:
            outcome = await self._run_limited(comfy, graph, job, template, on_event, progress)
        finally:
            await publisher.finish()
        job = job_ref[0]
        self.failpoints.hit("after_finish")
        outputs = await self._store_outputs(comfy, job, chosen_refs(outcome.images))
        self.failpoints.hit("after_store")
        gpu = progress.gpu_seconds()
        if gpu is not None:
            self.metrics.gpu_seconds.labels(target).inc(gpu)
        cost = self._cost(job, gpu)
        finished = job

        async def complete() -> Job:
            return await self.ledger.complete(finished, outputs, gpu_seconds=gpu, actual_cost=cost)

        if next_spec is None:
            return await self._record(job, "record its outputs", complete)
        try:
            done, handoff[0] = await self.ledger.complete_and_claim(
                job, outputs, gpu_seconds=gpu, actual_cost=cost, spec=next_spec()
            )
        except Exception as exc:  # the outputs are stored: record them, whatever it takes (the slot claims later)
            if not database_unavailable(exc):
                raise
            self.metrics.database_retries.inc()
            log.warning("job %s: recording its outputs failed, the database is unavailable (%s); trying again",
                        job.id, outage_reason(exc))
            # Had the first try committed, _record finds the success recorded; a job it claimed in the same round
            # trip is nobody's: its lease lapses and a worker takes it over.
            return await self._record(job, "record its outputs", lambda: _after_pause(complete), resent=True)
        if done is None:
            raise LeaseLostError(job.prompt_id, job.attempts)
        return done

    async def _run_limited(self, comfy: ComfyClient, graph: dict[str, Any], job: Job, template: WorkflowTemplate,
                           on_event: Callable[[ComfyEvent], Awaitable[None]], progress: _Progress) -> RunOutcome:
        """Run the prompt to its end, interrupting it once it has run past the job's time limit (JobTimeLimitError)."""
        limit, why = time_limit(job, self.settings)
        run = asyncio.create_task(comfy.run(graph, prompt_id=job.prompt_id, ui_workflow=template.ui_workflow,
                                            on_event=on_event), name=f"run-{job.id}")
        watchdog = asyncio.create_task(self._watch_time(comfy, job, progress, limit), name=f"time-limit-{job.id}")
        try:
            await asyncio.wait({run, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():  # interrupted, yet still running after the grace period: give up on it
                raise JobTimeLimitError(limit, why)
            try:
                return run.result()
            except ComfyInterruptedError as exc:
                if progress.timed_out:
                    raise JobTimeLimitError(limit, why) from exc
                raise
        finally:
            for task in (run, watchdog):
                task.cancel()
            await asyncio.gather(run, watchdog, return_exceptions=True)

    async def _watch_time(self, comfy: ComfyClient, job: Job, progress: _Progress, limit: float) -> None:
        """Once the prompt runs, wait out its time limit, then interrupt it; return after a grace period."""
        await progress.running.wait()
        assert progress.started_at is not None
        await asyncio.sleep(max(0.0, limit - (time.monotonic() - progress.started_at)))
        progress.timed_out = True
        log.warning("job %s ran past its time limit of %g s; interrupting it", job.id, limit)
        await _cancel_quietly(comfy, job.prompt_id)
        await asyncio.sleep(INTERRUPT_GRACE_SECONDS)

    async def _on_event(self, job_ref: list[Job], event: ComfyEvent, progress: _Progress, server: str) -> None:
        """Mark the job running when ComfyUI starts it; time it; publish progress; honour the mid-run failpoint."""
        publisher = progress.publisher
        assert publisher is not None
        if isinstance(event, Queued):
            self.failpoints.hit("after_submit")
            await publisher.emit("submitted", {"server": server, "number": event.number})
        if isinstance(event, StepProgress) and event.max:
            await publisher.progress(event.value, event.max, event.node)
        if isinstance(event, Preview):
            await publisher.preview(event.data, _content_type("." + event.image_format.lower()))
        if isinstance(event, Started | NodeExecuting | StepProgress | NodeOutput) and not progress.marked_running:
            progress.marked_running = True
            progress.started_at = progress.started_at or time.monotonic()
            progress.running.set()
            try:
                job_ref[0] = await self.ledger.mark_running(job_ref[0], server=server)
            except Exception as exc:  # the prompt runs on: its result records the start too (see store.complete)
                if not database_unavailable(exc):
                    raise
                log.warning("job %s: not marked running, the database is unavailable (%s)", job_ref[0].id,
                            outage_reason(exc))
            await publisher.emit("started", {"server": server})
        if isinstance(event, StepProgress | NodeOutput) and not progress.mid_run_checked:
            progress.mid_run_checked = True
            self.failpoints.hit("mid_run")
        if isinstance(event, TERMINAL):
            progress.finished_at = time.monotonic()

    async def _store_outputs(self, comfy: ComfyClient, job: Job, refs: list[tuple[str, ImageRef]]) -> list[JobOutput]:
        """Download each image from ComfyUI and put it in the output store under the job's fixed keys."""
        outputs = []
        for index, (node, ref) in enumerate(refs):
            data = await comfy.download(ref)
            suffix = Path(ref.filename).suffix or ".png"
            key = output_key(job.prompt_id, index, suffix, when=job.created_at)
            stored = await asyncio.to_thread(self.store.put, key, data, _content_type(suffix))
            outputs.append(JobOutput(
                uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256,
                content_type=stored.content_type, node_id=node, comfy_filename=ref.filename,
            ))
        return outputs

    def _cost(self, job: Job, gpu_seconds: float | None) -> float | None:
        """Actual cost: the catalog's cost per image scaled by how long the GPU really worked."""
        if job.estimated_cost is None:
            return None
        if gpu_seconds is None or not job.estimated_seconds:
            return job.estimated_cost
        return round(job.estimated_cost * gpu_seconds / job.estimated_seconds, 6)


async def _after_pause(operation: Callable[[], Awaitable[T]], pause: float = 0.2) -> T:
    """Run `operation` after a short pause (a first retry right after a dropped connection would hit the same
    restart)."""
    await asyncio.sleep(pause)
    return await operation()


def _content_type(suffix: str) -> str:
    """MIME type of an image file suffix."""
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".gif": "image/gif"}.get(suffix.lower(), "application/octet-stream")


async def _locate_quietly(comfy: ComfyClient, prompt_id: str) -> bool:
    """Whether that ComfyUI knows the prompt; False when it cannot be asked."""
    try:
        return await comfy.locate(prompt_id) is not None
    except (ComfyUnreachableError, ComfyHTTPError):
        return False


async def _cancel_quietly(comfy: ComfyClient, prompt_id: str) -> None:
    """Remove or interrupt a prompt; a server that is gone has nothing left to cancel."""
    try:
        await comfy.cancel(prompt_id)
    except (ComfyUnreachableError, ComfyHTTPError) as exc:
        log.info("cancel of %s: %s", prompt_id, exc)
