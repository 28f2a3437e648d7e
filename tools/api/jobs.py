"""The job REST API: submit, read, list, cancel and fetch images of ledger jobs; batches; workflows; health.

A thin FastAPI layer over LedgerService (the same functions the CLI uses). Images are always served by
Atelier itself (`GET /jobs/{id}/images/{n}`), never as a link into a ComfyUI the caller cannot reach.
`build_job_api(settings)` makes the app; `app` is the default for `langgraph.json`'s `http.app`.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime, and the
# LangGraph server imports this file under another module name, where string annotations cannot resolve.
import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from tools.api.events import add_event_routes
from tools.catalog import list_templates
from tools.errors import AtelierError, WorkflowError
from tools.ledger.models import Job, JobRequest, JobStatus
from tools.ledger.output_store import OutputStoreError
from tools.ledger.service import LedgerService
from tools.ledger.store import JobNotFoundError
from tools.schemas import GenerationParams
from tools.settings import Settings, load_settings

__all__ = ["BatchBody", "JobBody", "JobView", "app", "build_job_api"]


class JobBody(BaseModel):
    """POST /jobs: what to generate, and how the job is handled."""

    params: GenerationParams
    workflow: str | None = Field(None, description="Workflow name (default: ATELIER_DEFAULT_WORKFLOW).")
    priority: int = 0
    owner: str = Field("api", min_length=1)
    idempotency_key: str | None = Field(None, min_length=1, description="The same key twice returns the same job.")
    use_cache: bool = True

    def request(self) -> JobRequest:
        """As a ledger request."""
        return JobRequest(params=self.params, workflow=self.workflow, priority=self.priority, owner=self.owner,
                          idempotency_key=self.idempotency_key, use_cache=self.use_cache)


class BatchBody(BaseModel):
    """POST /batches: many jobs at once (one transaction)."""

    jobs: list[JobBody] = Field(..., min_length=1, max_length=1000)


class JobView(BaseModel):
    """A job as the API shows it: ledger fields plus Atelier-served image URLs."""

    id: str
    status: JobStatus
    workflow: str
    params: dict[str, Any]
    owner: str
    priority: int
    attempts: int
    error: str | None
    cached: bool
    estimated_cost: float | None
    actual_cost: float | None
    created_at: str
    finished_at: str | None
    images: list[str]

    @classmethod
    def of(cls, job: Job, base_url: str) -> "JobView":
        """Build from a ledger row."""
        return cls(
            id=str(job.id), status=job.status, workflow=job.workflow.rsplit("/", 1)[-1], params=job.params,
            owner=job.owner, priority=job.priority, attempts=job.attempts, error=job.error,
            cached=job.cached_from is not None, estimated_cost=job.estimated_cost, actual_cost=job.actual_cost,
            created_at=job.created_at.isoformat(),
            finished_at=job.finished_at.isoformat() if job.finished_at else None,
            images=[f"{base_url}/jobs/{job.id}/images/{n}" for n in range(len(job.outputs))],
        )


def build_job_api(settings: Settings, *, service: LedgerService | None = None) -> FastAPI:
    """The job API; opens the ledger at start-up unless a service is given (tests)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            api.state.ledger = service
            yield
            return
        async with LedgerService.open(settings) as opened:
            api.state.ledger = opened
            yield

    api = FastAPI(title="Atelier jobs", version="1", lifespan=lifespan,
                  description="Generate images through Atelier's job ledger (ComfyUI workers behind it).")

    def ledger(request: Request | WebSocket) -> LedgerService:
        """The ledger of this app."""
        svc: LedgerService = request.app.state.ledger
        return svc

    def base(request: Request) -> str:
        """Where this API is reachable, for image links."""
        return str(request.base_url).rstrip("/")

    @api.exception_handler(AtelierError)
    async def atelier_error(request: Request, exc: AtelierError) -> JSONResponse:
        """Our errors as 4xx with the message that names the fix."""
        status = 404 if isinstance(exc, JobNotFoundError) else 422 if isinstance(exc, WorkflowError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @api.post("/jobs", status_code=201, response_model=JobView, summary="Queue one image job")
    async def submit(body: JobBody, request: Request) -> JobView:
        """Record the job (or return the one with the same idempotency key)."""
        outcome = await ledger(request).submit(body.request())
        return JobView.of(outcome.job, base(request))

    @api.get("/jobs/{job_id}", response_model=JobView, summary="One job")
    async def get_job(job_id: str, request: Request) -> JobView:
        """Status, timings, cost and image links."""
        return JobView.of(await ledger(request).get(job_id), base(request))

    @api.get("/jobs", response_model=list[JobView], summary="Jobs, newest first")
    async def list_jobs(
        request: Request,
        status: Annotated[JobStatus | None, Query()] = None,
        owner: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[JobView]:
        """Filter by status and owner."""
        jobs = await ledger(request).list_jobs(status=status, owner=owner, limit=limit)
        return [JobView.of(job, base(request)) for job in jobs]

    @api.delete("/jobs/{job_id}", response_model=JobView, summary="Cancel a job")
    async def cancel(job_id: str, request: Request) -> JobView:
        """Queued: cancelled at once; submitted or running: its worker removes or interrupts it."""
        return JobView.of(await ledger(request).cancel(job_id), base(request))

    @api.get("/jobs/{job_id}/images/{n}", summary="An image of a finished job",
             responses={200: {"content": {"image/png": {}}}})
    async def image(job_id: str, n: int, request: Request) -> Response:
        """The bytes, from Atelier's output store."""
        svc = ledger(request)
        job = await svc.get(job_id)
        if not 0 <= n < len(job.outputs):
            raise HTTPException(404, f"job {job.id} has {len(job.outputs)} image(s) (status {job.status}); "
                                     f"ask for 0..{max(0, len(job.outputs) - 1)}")
        output = job.outputs[n]
        try:
            data = await asyncio.to_thread(svc.store.read, output.uri)
        except OutputStoreError as exc:
            raise HTTPException(410, str(exc)) from exc
        return Response(data, media_type=output.content_type)

    @api.post("/batches", status_code=201, summary="Queue many jobs at once")
    async def batch(body: BatchBody, request: Request) -> dict[str, Any]:
        """One job per entry; a bad entry is reported by index and the others still go in."""
        results = await ledger(request).submit_many([j.request() for j in body.jobs])
        jobs, errors = [], []
        for index, result in enumerate(results):
            if isinstance(result, AtelierError):
                errors.append({"index": index, "detail": str(result)})
            else:
                jobs.append(JobView.of(result.job, base(request)).model_dump())
        return {"batch": str(uuid.uuid4()), "jobs": jobs, "errors": errors}

    @api.get("/workflows", summary="The workflow catalog")
    async def workflows() -> list[dict[str, Any]]:
        """Every workflow with its catalog entry and the values it accepts."""
        dirs = [settings.workflows_dir] if settings.workflows_dir else []
        listing = await asyncio.to_thread(list_templates, dirs)
        return [{"name": t.name, "accepts": sorted(t.bindings),
                 "catalog": t.catalog.model_dump() if t.catalog else None} for t in listing.templates]

    @api.get("/health", summary="Is the API up and its database reachable?")
    async def health(request: Request) -> dict[str, Any]:
        """Job counts by status (reading them proves the database answers)."""
        return {"status": "ok", "jobs": await ledger(request).ledger.counts()}

    add_event_routes(api, ledger)
    return api


app = build_job_api(load_settings())
