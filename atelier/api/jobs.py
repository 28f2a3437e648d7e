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

import psycopg
from fastapi import Depends, FastAPI, Path, Query, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from atelier.api.auth import add_auth_routes, auth_error_response, caller_of, socket_caller
from atelier.api.common import (
    ApiError,
    ErrorResponse,
    ValidationIssue,
    check_storable,
    confine,
    error_responses,
    owner_for,
)
from atelier.api.events import JOB_ID_PATTERN, add_event_routes
from atelier.api.guard import RequestGuard
from atelier.api.inputs import add_input_routes
from atelier.api.memory import add_memory_routes
from atelier.api.memory_indexing import memory_with_indexer
from atelier.api.outage import away_response, bound_wait, database_away
from atelier.api.showcases import add_showcase_routes
from atelier.tools.accounts.models import LOCAL, Principal
from atelier.tools.accounts.quotas import QuotaExceededError
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.catalog import CatalogEntry, task_of
from atelier.tools.errors import AtelierError, WorkflowError
from atelier.tools.exposure import own_origins
from atelier.tools.ledger.models import MAX_KEY_CHARS, MAX_OWNER_CHARS, PRIORITY_RANGE, Job, JobRequest, JobStatus
from atelier.tools.ledger.service import ImageGoneError, ImageNotFoundError, LedgerService
from atelier.tools.ledger.store import IdempotencyKeyTakenError, JobNotFoundError
from atelier.tools.memory.store import MemoryUnavailableError
from atelier.tools.prompts.abtests import ABTestNotFoundError
from atelier.tools.prompts.library import PromptNotFoundError
from atelier.tools.prompts.templating import PromptTemplateError
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.showcase.models import ShowcaseGoneError, ShowcaseNotFoundError, ShowcaseNotReadyError
from atelier.tools.workflow_library import load_library

__all__ = ["JOB_ID_PATTERN", "ApiError", "BatchBody", "BatchEntryError", "BatchView", "ErrorResponse", "HealthView",
           "JobBody", "JobView", "ValidationIssue", "WorkflowView", "app", "build_job_api", "error_responses"]

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, examples=["3f2a9c1e-7b4d-4e8f-9a6b-2c1d0e9f8a7b", "3f2a9c1e"],
                            description="The job's UUID, or a unique prefix of it (at least 4 hex digits).")]


# OpenAPI links from a created job to what a client does next (documentation, and schemathesis' stateful runs).
_JOB_LINKS = {
    "GetJob": {"operationRef": "#/paths/~1jobs~1{job_id}/get", "parameters": {"job_id": "$response.body#/id"},
               "description": "Poll the job until its status is succeeded, failed or cancelled."},
    "CancelJob": {"operationRef": "#/paths/~1jobs~1{job_id}/delete", "parameters": {"job_id": "$response.body#/id"},
                  "description": "Cancel the job."},
}


class JobBody(BaseModel):
    """POST /jobs: what to generate, and how the job is handled.

    An over-long `idempotency_key` is refused when `request` builds the ledger request (JobRequestError, a 422)
    rather than by this model's validation, so that in a batch only its own entry is refused."""

    params: GenerationParams
    workflow: str | None = Field(None, description="A name from GET /workflows (default: ATELIER_DEFAULT_WORKFLOW).")
    priority: int = Field(0, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1], description="Higher runs first.")
    owner: str = Field("api", min_length=1, max_length=MAX_OWNER_CHARS,
                       description="Who asked (filter GET /jobs by it).")
    idempotency_key: str | None = Field(None, min_length=1, json_schema_extra={"maxLength": MAX_KEY_CHARS},
                                        description="The same key twice returns the same job.")
    use_cache: bool = True

    @field_validator("params", mode="before")
    @classmethod
    def _params_storable(cls, value: Any) -> Any:
        """The values go into a jsonb column: no NUL characters or lone surrogates in them."""
        check_storable(value, "params")
        return value

    @field_validator("workflow", "owner", "idempotency_key")
    @classmethod
    def _text_storable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """These go into text columns and file lookups: no NUL characters or lone surrogates."""
        check_storable(value, str(info.field_name))
        return value

    def request(self, settings: Settings, principal: Principal = LOCAL) -> JobRequest:
        """As a ledger request for `principal`, confined to what a remote caller may name (see `confine`)."""
        params = confine(self.params, self.workflow, settings)
        owner = owner_for(principal, self.owner if "owner" in self.model_fields_set else None, default=self.owner)
        return JobRequest(params=params, workflow=self.workflow, priority=self.priority, owner=owner,
                          idempotency_key=self.idempotency_key, use_cache=self.use_cache)


class BatchBody(BaseModel):
    """POST /batches: many jobs at once (one transaction)."""

    jobs: list[JobBody] = Field(..., min_length=1, max_length=1000)


class BatchEntryError(BaseModel):
    """One entry of a batch that was not queued, by its index in `jobs`."""

    index: int
    detail: str


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
    rating: int | None = Field(None, description="Stars 1–5 given to the image (POST /jobs/{id}/rating).")
    thumb: int | None = Field(None, description="1 (thumb up), -1 (down) or null.")

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
            rating=job.rating, thumb=job.thumb,
        )


class BatchView(BaseModel):
    """POST /batches: the queued jobs, and the entries that were refused."""

    batch: str = Field(..., description="An id for this call (the jobs are independent of each other).")
    jobs: list[JobView]
    errors: list[BatchEntryError]


class WorkflowView(BaseModel):
    """One workflow of the catalog: its name, the values it accepts and its catalog entry."""

    name: str
    accepts: list[str]
    catalog: CatalogEntry | None
    task: str = Field(..., description="The catalog's task, else the one read off the graph (txt2img, img2img).")
    model: str | None = Field(None, description="The models_config.json model this workflow runs, if any.")


class HealthView(BaseModel):
    """GET /health: the API is up and its database answered."""

    status: str = Field(..., examples=["ok"])
    jobs: dict[str, int] = Field(..., description="How many jobs are in each status.")


def build_job_api(settings: Settings, *, service: LedgerService | None = None) -> FastAPI:
    """The job API; opens the ledger at start-up unless a service is given (tests)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            api.state.ledger = service
            yield
            return
        async with LedgerService.open(settings) as opened, memory_with_indexer(opened, api.state):
            api.state.ledger = opened
            yield

    api = FastAPI(title="Atelier jobs", version="1", lifespan=lifespan,
                  description="Generate images through Atelier's job ledger (ComfyUI workers behind it).")

    def ledger(request: Request | WebSocket) -> LedgerService:
        """The ledger of this app (however it was given: opened here, by the chat, or by a test), whose pool waits
        at most outage.WAIT_SECONDS for a connection."""
        svc: LedgerService = request.app.state.ledger
        bound_wait(svc)
        return svc

    def base(request: Request) -> str:
        """Where this API is reachable, for image links."""
        return str(request.base_url).rstrip("/")

    caller = caller_of(settings, ledger)
    Caller = Annotated[Principal, Depends(caller)]

    async def visible(request: Request, job_id: str, principal: Principal) -> Job:
        """A job the caller may see (another user's is answered as unknown)."""
        return await ledger(request).get(job_id, owner=principal.sees_only)

    @api.exception_handler(psycopg.OperationalError)
    async def database_error(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        """The database is away (restarting, unreachable, no pooled connection in time): 503 with Retry-After."""
        return away_response(exc)

    @api.exception_handler(AtelierError)
    async def atelier_error(request: Request, exc: AtelierError) -> JSONResponse:
        """Our errors as 4xx with the message that names the fix (the database away: 503, see outage.py)."""
        if database_away(exc):
            return away_response(exc)
        status = (404 if isinstance(exc, JobNotFoundError | ImageNotFoundError | PromptNotFoundError
                                    | ABTestNotFoundError | ShowcaseNotFoundError)
                  else 410 if isinstance(exc, ImageGoneError | ShowcaseGoneError)
                  else 429 if isinstance(exc, QuotaExceededError)
                  else 409 if isinstance(exc, IdempotencyKeyTakenError | ShowcaseNotReadyError)
                  else 422 if isinstance(exc, WorkflowError | PromptTemplateError)
                  else 503 if isinstance(exc, MemoryUnavailableError) else 400)
        return ErrorResponse({"detail": str(exc)}, status_code=status)

    @api.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        """Refused credentials: 401 (with WWW-Authenticate) or 403, with the reason."""
        return auth_error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 body, rendered so that any input it echoes back (even a lone surrogate) can be sent."""
        return ErrorResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @api.post("/jobs", status_code=201, response_model=JobView, summary="Queue one image job",
              responses={201: {"links": _JOB_LINKS}, **error_responses(400, 401, 403, 409, 422, 429)})
    async def submit(body: JobBody, request: Request, principal: Caller) -> JobView:
        """Record the job (or return the one with the same idempotency key)."""
        outcome = await ledger(request).submit(body.request(settings, principal))
        return JobView.of(outcome.job, base(request))

    @api.get("/jobs/{job_id}", response_model=JobView, summary="One job", responses=error_responses(401, 403, 404, 422))
    async def get_job(job_id: JobId, request: Request, principal: Caller) -> JobView:
        """Status, timings, cost and image links."""
        return JobView.of(await visible(request, job_id, principal), base(request))

    @api.get("/jobs", response_model=list[JobView], summary="Jobs, newest first",
             responses=error_responses(401, 403, 422))
    async def list_jobs(
        request: Request,
        principal: Caller,
        status: Annotated[JobStatus | None, Query()] = None,
        owner: Annotated[str | None, Query(pattern=r"^[^\x00]*$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[JobView]:
        """Filter by status and owner (a user sees only their own jobs; an admin anyone's)."""
        if not principal.is_admin:
            owner = owner_for(principal, owner, default=principal.user_id)
        jobs = await ledger(request).list_jobs(status=status, owner=owner, limit=limit)
        return [JobView.of(job, base(request)) for job in jobs]

    @api.delete("/jobs/{job_id}", response_model=JobView, summary="Cancel a job",
                responses=error_responses(401, 403, 404, 422))
    async def cancel(job_id: JobId, request: Request, principal: Caller) -> JobView:
        """Queued: cancelled at once; submitted or running: its worker removes or interrupts it."""
        return JobView.of(await ledger(request).cancel(job_id, owner=principal.sees_only), base(request))

    @api.get("/jobs/{job_id}/images/{n}", summary="An image of a finished job", response_class=Response,
             responses={200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The image (PNG unless the workflow saves another format)"},
                        **error_responses(401, 403, 404, 410, 422)})
    async def image(job_id: JobId, n: Annotated[int, Path(ge=0, description="Index in the job's `images`.")],
                    request: Request, principal: Caller) -> Response:
        """The bytes, from Atelier's output store."""
        found = await ledger(request).image(job_id, n, owner=principal.sees_only)
        return Response(found.data, media_type=found.content_type)

    @api.post("/batches", status_code=201, response_model=BatchView, summary="Queue many jobs at once",
              responses=error_responses(400, 401, 403, 422))
    async def batch(body: BatchBody, request: Request, principal: Caller) -> BatchView:
        """One job per entry; a bad entry is reported by index and the others still go in."""
        svc = ledger(request)
        prepared: list[JobRequest | AtelierError] = []
        for entry in body.jobs:
            try:
                prepared.append(entry.request(settings, principal))
            except AtelierError as exc:
                prepared.append(exc)
        submitted = iter(await svc.submit_many([p for p in prepared if isinstance(p, JobRequest)]))
        results = [next(submitted) if isinstance(p, JobRequest) else p for p in prepared]
        jobs, errors = [], []
        for index, result in enumerate(results):
            if isinstance(result, AtelierError):
                errors.append(BatchEntryError(index=index, detail=str(result)))
            else:
                jobs.append(JobView.of(result.job, base(request)))
        return BatchView(batch=str(uuid.uuid4()), jobs=jobs, errors=errors)

    @api.get("/workflows", response_model=list[WorkflowView], summary="The workflow catalog")
    async def workflows() -> list[WorkflowView]:
        """Every workflow (yours included) with its catalog entry (ATELIER_MODELS_CONFIG's figures), task and values."""
        library = await asyncio.to_thread(load_library, settings)
        return [WorkflowView(name=t.name, accepts=sorted(t.bindings), catalog=t.catalog, task=task_of(t),
                             model=library.model_of(t.name)) for t in library.templates]

    @api.get("/health", response_model=HealthView, summary="Is the API up and its database reachable?",
             responses=error_responses(503))
    async def health(request: Request) -> HealthView:
        """Job counts by status (reading them proves the database answers)."""
        return HealthView(status="ok", jobs=await ledger(request).counts())

    add_event_routes(api, ledger, error_responses, caller,
                     lambda socket: socket_caller(ledger(socket), socket),
                     max_sockets_per_user=settings.max_event_sockets_per_user)
    add_auth_routes(api, ledger, caller, error_responses)
    from atelier.api.prompts import add_prompt_routes  # here: that module reads this one's helpers

    add_prompt_routes(api, ledger, settings, error_responses, JobView,
                      lambda job, request: JobView.of(job, base(request)), caller)
    from atelier.api.metrics import add_metrics_route

    add_metrics_route(api, settings)
    add_input_routes(api, settings, caller, error_responses)
    add_memory_routes(api, settings, ledger, caller, error_responses)
    add_showcase_routes(api, ledger, caller, error_responses)
    # Served by the LangGraph server (langgraph.json `http.app`), these two wrap its routes too: its own CORS is
    # off (`http.cors` allows no origin), so only Atelier's pages and ATELIER_ALLOWED_ORIGINS get CORS answers.
    api.add_middleware(CORSMiddleware, allow_origins=sorted(own_origins(settings)), allow_methods=["*"],
                       allow_headers=["*"], allow_credentials=True,
                       expose_headers=["x-pagination-total", "x-pagination-next", "content-location"])
    api.add_middleware(RequestGuard, settings=settings)  # outermost: refused requests reach nothing else
    return api


app = build_job_api(load_settings())
