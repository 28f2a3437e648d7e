"""Job API routes for the prompt library and A/B tests: read, save, fork, render, generate from a prompt, rate, report.

Mounted by `build_job_api` beside the job routes; generating from a prompt or an A/B test records which
version (and arm) made the job, and `POST /jobs/{id}/rating` collects the ratings the reports count.
Templates render in a worker process within settings.template_seconds (tools/prompts/rendering.py): the
event loop never runs one. A prompt or a test changes only by its author (the caller who made it) or an
admin; anyone else gets a 403 that says how to fork.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see atelier/api/jobs.py).
import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator

from atelier.api.common import ErrorResponse, check_storable, confine, owner_for
from atelier.tools.accounts.models import Principal
from atelier.tools.errors import AtelierError, WorkflowError
from atelier.tools.ledger.models import JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.prompts.library import NotTheAuthorError, PromptNameTakenError
from atelier.tools.prompts.models import (
    NAME_PATTERN,
    ABReport,
    ABTest,
    ChosenPrompt,
    Prompt,
    PromptDraft,
    PromptVersion,
    SaveResult,
    VariantSpec,
    VersionStats,
)
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings

__all__ = ["ABJobBody", "ABJobView", "ABTestBody", "ForkBody", "PromptJobBody", "RatingBody", "RenderBody",
           "RenderView", "SaveBody", "VersionView", "add_prompt_routes"]

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="A library name: lower-case letters, digits, . _ -")]
Text = Annotated[str, Query(pattern=r"^[^\x00]*$", max_length=200)]


class _Storable(BaseModel):
    """A body whose text goes into PostgreSQL: no NUL characters or lone surrogates anywhere."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:

        check_storable(value, "body")
        return value


class SaveBody(_Storable):
    """POST /prompts/{name}/versions: a template (a new version when it changed) and optional metadata.

    The author is the caller (in local mode: "local"); an existing prompt takes saves from its author or an admin.
    """

    template: str = Field(min_length=1, max_length=20_000, description="Jinja2 text, e.g. '{{ subject }}, {{ look }}'.")
    negative: str | None = Field(None, max_length=4_000, description="Omitted: the newest version's is kept.")
    defaults: dict[str, Any] | None = Field(None, description="Default values of the template's variables (omitted: "
                                                             "the newest version's are kept).")
    note: str = Field("", max_length=2_000, description="What changed in this version.")
    category: str | None = Field(None, max_length=64)
    purpose: str | None = Field(None, max_length=64, description="The designer uses it for this purpose (hero, …).")
    tags: list[str] | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=2_000)


class ForkBody(_Storable):
    """POST /prompts/{name}/fork: a new prompt of the caller's own from the prompt's newest version."""

    name: str = Field(pattern=NAME_PATTERN, description="The new prompt's name (not in the library yet).")
    note: str = Field("", max_length=2_000, description="Default: 'forked from NAME@VERSION'.")


class VersionView(PromptVersion):
    """A version with the variables it reads and how it did."""

    variables: list[str]
    stats: VersionStats | None = None


class RenderBody(_Storable):
    """POST /prompts/{name}/render: the values (the version's defaults fill the rest)."""

    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Default: the newest.")
    values: dict[str, Any] = Field(default_factory=dict)


class RenderView(BaseModel):
    """The rendered prompt and the version it came from."""

    ref: str
    text: str
    negative: str


class PromptJobBody(RenderBody):
    """POST /prompts/{name}/jobs: render the prompt and queue a job with it (usage is recorded per version)."""

    workflow: str | None = Field(None, description="A name from GET /workflows (default: ATELIER_DEFAULT_WORKFLOW).")
    params: dict[str, Any] = Field(default_factory=dict, description="Other generation values: width, seed, steps …")
    owner: str = Field("api", min_length=1, max_length=200)
    idempotency_key: str | None = Field(None, min_length=1, max_length=500)


class RatingBody(_Storable):
    """POST /jobs/{id}/rating: stars and/or a thumb (what A/B reports and prompt stats count)."""

    stars: int | None = Field(None, ge=1, le=5)
    thumb: int | None = Field(None, description="1 (up) or -1 (down).")

    @model_validator(mode="after")
    def _something(self) -> "RatingBody":
        if self.stars is None and self.thumb is None:
            raise ValueError("give stars (1–5) and/or thumb (1 or -1)")
        if self.thumb not in (None, 1, -1):
            raise ValueError("thumb is 1 (up) or -1 (down)")
        return self


class ABTestBody(_Storable):
    """POST /ab-tests: a running test over two or more variants."""

    name: str = Field(pattern=NAME_PATTERN)
    variants: list[VariantSpec] = Field(min_length=2, max_length=20)
    purpose: str | None = Field(None, max_length=64, description="Apply it to the designer's images of this purpose.")
    min_ratings: int = Field(20, ge=1, le=100_000, description="Ratings each variant needs before a verdict.")
    description: str = Field("", max_length=2_000)


class ABJobBody(_Storable):
    """POST /ab-tests/{name}/jobs: one request; its key decides the variant (the same key, the same variant)."""

    key: str = Field(min_length=1, max_length=500, description="The request's identity, e.g. an order or a session.")
    values: dict[str, Any] = Field(default_factory=dict, description="Values for a variant's prompt template.")
    prompt: str | None = Field(None, max_length=8_000, description="The prompt for variants that set no prompt.")
    params: dict[str, Any] = Field(default_factory=dict, description="Other generation values: width, seed, steps …")
    owner: str = Field("api", min_length=1, max_length=200)


class ABJobView(BaseModel):
    """The variant a request got and its job's id and status."""

    test: str
    variant: str
    arm: str
    job_id: str
    status: str
    cached: bool


def _params(prompt: str, negative: str, extra: dict[str, Any]) -> GenerationParams:
    """Generation values: the rendered prompt and negative over the caller's other values (422 when invalid)."""
    try:
        return GenerationParams.model_validate({**extra, "prompt": prompt,
                                                **({"negative": negative} if negative else {})})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise WorkflowError(f"the generation values are not valid ({problems}); see GenerationParams in the "
                            "OpenAPI schema") from exc


def add_prompt_routes(api: FastAPI, ledger: Callable[[Any], LedgerService], settings: Settings,
                      errors: Callable[..., dict[int | str, dict[str, Any]]], job_model: type[BaseModel],
                      job_view: Callable[[Any, Request], BaseModel], caller: Callable[..., Any]) -> None:
    """Add the prompt-library, rating and A/B routes; jobs are answered as `job_model`, made by `job_view`.

    Every route needs a caller (`caller`, the auth dependency): everyone reads the library and the tests; a prompt
    or a test changes only by its author or an admin (others fork); jobs and ratings are the caller's own (an
    admin's: anyone's).
    """
    Caller = Annotated[Principal, Depends(caller)]

    def owned(*codes: int) -> dict[int | str, dict[str, Any]]:
        """`errors(*codes)` for a route that changes an owned prompt or test: what its 403 and 409 also mean."""
        described = errors(*codes)
        if 403 in described:
            described[403] = {**described[403], "description": "The credentials are valid but may not do this: a "
                              "disabled account, or a change to another user's prompt or A/B test (fork it)"}
        if 409 in described:
            described[409] = {**described[409], "description": "A prompt by that name exists: choose another name"}
        return described

    def owner(principal: Principal, body: BaseModel, default: str) -> str:
        """Whose job a body makes (see owner_for)."""
        return owner_for(principal, default if "owner" in body.model_fields_set else None, default=default)

    async def rendered(version: PromptVersion, values: dict[str, Any]) -> str:
        """The version's text for `values`, from a rendering worker within the template budget."""
        return await version.render_async(values, seconds=settings.template_seconds)

    @api.exception_handler(NotTheAuthorError)
    async def not_the_author(request: Request, exc: NotTheAuthorError) -> JSONResponse:
        """Changing someone else's prompt or test: 403, saying how to fork."""
        return ErrorResponse({"detail": str(exc)}, status_code=403)

    @api.exception_handler(PromptNameTakenError)
    async def name_taken(request: Request, exc: PromptNameTakenError) -> JSONResponse:
        """A fork under a name the library has: 409."""
        return ErrorResponse({"detail": str(exc)}, status_code=409)

    @api.get("/prompts", response_model=list[Prompt], summary="The prompt library", tags=["prompts"],
             responses=errors(401, 403, 422))
    async def list_prompts(request: Request, principal: Caller, category: Text | None = None,
                           purpose: Text | None = None, tag: Text | None = None,
                           search: Text | None = None) -> list[Prompt]:
        """Filter by category, purpose, tag or a word in the name or description."""
        return await ledger(request).prompts.search(category=category, purpose=purpose, tag=tag, query=search)

    @api.get("/prompts/{name}", response_model=Prompt, summary="One prompt", tags=["prompts"],
             responses=errors(401, 403, 404, 422))
    async def get_prompt(name: Name, request: Request, principal: Caller) -> Prompt:
        """Its category, purpose, tags and newest version number."""
        return await ledger(request).prompts.get(name)

    @api.post("/prompts/{name}/versions", response_model=SaveResult, status_code=201, tags=["prompts"],
              summary="Save a prompt (a changed template is a new version)",
              responses={200: {"model": SaveResult, "description": "Nothing changed: the newest version is returned"},
                         **owned(400, 401, 403, 422)})
    async def save_prompt(name: Name, body: SaveBody, request: Request, response: Response,
                          principal: Caller) -> SaveResult:
        """201 with the new version; 200 when the template, negative and defaults equal the newest version's.

        The caller is the author of what they save; someone else's prompt answers 403 (fork it instead).
        """
        # Reading the template (parse, variables) takes a few milliseconds, up to ~0.5 s at 20 000 characters.
        draft = await asyncio.to_thread(lambda: PromptDraft(name=name, **body.model_dump()))
        result = await ledger(request).prompts.save(draft, author=principal.user_id, admin=principal.is_admin)
        response.status_code = 201 if result.created else 200
        return result

    @api.post("/prompts/{name}/fork", response_model=SaveResult, status_code=201, tags=["prompts"],
              summary="Fork a prompt: a new prompt of your own from its newest version",
              responses=owned(400, 401, 403, 404, 409, 422))
    async def fork(name: Name, body: ForkBody, request: Request, principal: Caller) -> SaveResult:
        """Copies the template, negative prompt, defaults, category, tags and description (not the purpose)."""
        return await ledger(request).prompts.fork(name, body.name, author=principal.user_id, note=body.note)

    @api.get("/prompts/{name}/versions", response_model=list[VersionView], tags=["prompts"],
             summary="Every version with its usage and ratings", responses=errors(401, 403, 404, 422))
    async def versions(name: Name, request: Request, principal: Caller) -> list[VersionView]:
        """Oldest first; `stats.score` is (liked + 1) / (rated + 2)."""
        library = ledger(request).prompts
        stats = {s.version: s for s in await library.stats(name)}
        history = await library.history(name)
        return await asyncio.to_thread(lambda: [VersionView(**v.model_dump(), variables=v.variable_names(),
                                                            stats=stats.get(v.version)) for v in history])

    @api.get("/prompts/{name}/versions/{version}", response_model=VersionView, tags=["prompts"],
             summary="One version", responses=errors(401, 403, 404, 422))
    async def version(name: Name, version: Annotated[int, Path(ge=1, le=2**31 - 1)], request: Request,
                      principal: Caller) -> VersionView:
        """The template, negative prompt, defaults and variables."""
        found = await ledger(request).prompts.version(name, version)
        return VersionView(**found.model_dump(), variables=await asyncio.to_thread(found.variable_names))

    @api.post("/prompts/{name}/render", response_model=RenderView, tags=["prompts"],
              summary="Render a prompt with values", responses=errors(400, 401, 403, 404, 422))
    async def render(name: Name, body: RenderBody, request: Request, principal: Caller) -> RenderView:
        """The text the template gives for these values (a missing variable is a 422 naming it)."""
        found = await ledger(request).prompts.version(name, body.version)
        return RenderView(ref=found.ref, text=await rendered(found, body.values), negative=found.negative)

    @api.post("/prompts/{name}/jobs", status_code=201, response_model=job_model, tags=["prompts"],
              summary="Queue a job from a prompt", responses=errors(400, 401, 403, 404, 422))
    async def prompt_job(name: Name, body: PromptJobBody, request: Request, principal: Caller) -> Any:
        """Render the prompt, queue the job and count it as a use of that version."""
        svc = ledger(request)
        found = await svc.prompts.version(name, body.version)
        params = confine(_params(await rendered(found, body.values), found.negative, body.params), body.workflow,
                          settings)
        outcome = await svc.submit(JobRequest(params=params, workflow=body.workflow,
                                              owner=owner(principal, body, body.owner),
                                              idempotency_key=body.idempotency_key))
        await svc.prompts.record_use(outcome.job.id, ChosenPrompt(version=found), body.idempotency_key)
        return job_view(outcome.job, request)

    @api.post("/jobs/{job_id}/rating", response_model=job_model, tags=["jobs"], summary="Rate a job's image",
              responses=errors(400, 401, 403, 404, 422))
    async def rate(job_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{4,36}$")], body: RatingBody,
                   request: Request, principal: Caller) -> Any:
        """Stars and/or a thumb on the job; prompt statistics and A/B reports count them."""
        rated = await ledger(request).rate(job_id, owner=principal.sees_only, stars=body.stars, thumb=body.thumb)
        return job_view(rated, request)

    @api.get("/ab-tests", response_model=list[ABTest], tags=["ab-tests"], summary="A/B tests, newest first",
             responses=errors(401, 403, 422))
    async def list_tests(request: Request, principal: Caller,
                         status: Annotated[str | None, Query(pattern="^(running|stopped)$")] = None) -> list[ABTest]:
        """Every test, or those running or stopped."""
        return await ledger(request).abtests.all(status=status)

    @api.post("/ab-tests", response_model=ABTest, status_code=201, tags=["ab-tests"], summary="Start an A/B test",
              responses=errors(400, 401, 403, 404, 422))
    async def create_test(body: ABTestBody, request: Request, principal: Caller) -> ABTest:
        """Variants are prompt versions and/or workflows; each request is assigned by a hash of its key.

        The caller is the test's author: only they or an admin may stop it.
        """
        return await ledger(request).abtests.create(body.name, body.variants, principal.user_id,
                                                    purpose=body.purpose, min_ratings=body.min_ratings,
                                                    description=body.description)

    @api.get("/ab-tests/{name}", response_model=ABTest, tags=["ab-tests"], summary="One A/B test",
             responses=errors(401, 403, 404, 422))
    async def get_test(name: Name, request: Request, principal: Caller) -> ABTest:
        """Its variants and state."""
        return await ledger(request).abtests.get(name)

    @api.get("/ab-tests/{name}/report", response_model=ABReport, tags=["ab-tests"], summary="An A/B test's report",
             responses=errors(401, 403, 404, 422))
    async def report(name: Name, request: Request, principal: Caller) -> ABReport:
        """Each variant's rating, sample size and P(best); significance; a recommendation."""
        return await ledger(request).abtests.report(name)

    @api.post("/ab-tests/{name}/stop", response_model=ABTest, tags=["ab-tests"], summary="Stop an A/B test",
              responses=owned(401, 403, 404, 422))
    async def stop(name: Name, request: Request, principal: Caller) -> ABTest:
        """No more assignments; the data and the report stay. Only the test's author or an admin (else 403)."""
        return await ledger(request).abtests.stop(name, principal.user_id, admin=principal.is_admin)

    @api.post("/ab-tests/{name}/jobs", response_model=ABJobView, status_code=201, tags=["ab-tests"],
              summary="Queue one request's job in its assigned variant", responses=errors(400, 401, 403, 404, 422))
    async def ab_job(name: Name, body: ABJobBody, request: Request, principal: Caller) -> ABJobView:
        """The same key always gets the same variant and the same job (it is the idempotency key too)."""
        svc = ledger(request)
        variant = await svc.abtests.assign(name, body.key)
        version = await svc.prompts.version(variant.prompt, variant.version) if variant.prompt else None
        if version is not None:
            text, negative = await rendered(version, body.values), version.negative
        elif body.prompt:
            text, negative = body.prompt, ""
        else:
            raise AtelierError(f"variant {variant.label} of '{name}' sets no prompt; send `prompt` with the request")
        params = confine(_params(text, negative, body.params), variant.workflow, settings)
        key = f"ab:{name}:{body.key}"
        outcome = await svc.submit(JobRequest(params=params, workflow=variant.workflow,
                                              owner=owner(principal, body, body.owner), idempotency_key=key))
        await svc.prompts.record_use(outcome.job.id, ChosenPrompt(version=version, workflow=variant.workflow,
                                                                  ab_test=name, variant=variant.label), key)
        return ABJobView(test=name, variant=variant.label, arm=variant.describe(), job_id=str(outcome.job.id),
                         status=outcome.job.status, cached=outcome.cached)
