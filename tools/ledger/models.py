"""Typed rows of the job ledger: what a job asks for, where it stands, and what it made."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atelier.tools.errors import WorkflowError
from atelier.tools.schemas import GenerationParams

__all__ = ["ACTIVE", "MAX_KEY_CHARS", "MAX_OWNER_CHARS", "PRIORITY_RANGE", "TERMINAL_STATUSES", "Job", "JobOutput",
           "JobRequest", "JobRequestError", "JobStatus", "SubmitOutcome", "bounds_problem"]

JobStatus = Literal["queued", "submitted", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"submitted", "running"})

# Bounds of what a request may carry: keys and owners are indexed text (a btree row holds ~2.7 KB), and a priority
# plus the owner's tier offset must fit the `integer` column with room to spare.
MAX_KEY_CHARS = 200
MAX_OWNER_CHARS = 200
PRIORITY_RANGE = (-1000, 1000)


class JobRequestError(WorkflowError):
    """A request value the ledger does not take (an over-long idempotency key or owner, a priority out of range).

    JobRequest's validators raise it as is (pydantic passes on errors that are not ValueErrors), so every front
    end that builds a request gets one AtelierError naming the fix (a 422 on the APIs, one refused entry in a
    batch) instead of a ValidationError it may not expect.
    """


def bounds_problem(*, owner: str = "", key: str | None = None, priority: int = 0) -> str | None:
    """Why an owner, idempotency key or priority cannot be used (None when they can)."""
    low, high = PRIORITY_RANGE
    if key is not None and len(key) > MAX_KEY_CHARS:
        return (f"the idempotency key is {len(key):,} characters long, more than the {MAX_KEY_CHARS} allowed; "
                "send a shorter key (a hash of a long one, e.g. its sha256 in hex, fits)")
    if len(owner) > MAX_OWNER_CHARS:
        return f"the owner name is {len(owner):,} characters long, more than the {MAX_OWNER_CHARS} allowed"
    if not low <= priority <= high:
        return f"priority {priority} is outside {low}..{high}; higher runs first, so {high} is already the most urgent"
    return None


def _require(problem: str | None) -> None:
    """Raise JobRequestError for a problem."""
    if problem:
        raise JobRequestError(problem)


class JobRequest(BaseModel):
    """What a caller asks the ledger for: one workflow run with these values."""

    model_config = ConfigDict(extra="forbid")

    params: GenerationParams
    workflow: str | None = Field(None, description="Workflow name or file; None: the settings' default.")
    priority: int = Field(0, json_schema_extra={"minimum": PRIORITY_RANGE[0], "maximum": PRIORITY_RANGE[1]},
                          description="Higher runs first.")
    owner: str = Field("anonymous", min_length=1, json_schema_extra={"maxLength": MAX_OWNER_CHARS},
                       description="Who asked (a person, an agent, a batch).")
    idempotency_key: str | None = Field(None, min_length=1, json_schema_extra={"maxLength": MAX_KEY_CHARS},
                                        description="The same key twice returns the same job.")
    use_cache: bool = Field(True, description="Answer from an earlier identical success without the GPU.")
    batch: str | None = None
    batch_row: int | None = None

    @field_validator("priority")
    @classmethod
    def _priority_in_range(cls, value: int) -> int:
        """Refuse a priority outside PRIORITY_RANGE (JobRequestError)."""
        _require(bounds_problem(priority=value))
        return value

    @field_validator("owner")
    @classmethod
    def _owner_fits(cls, value: str) -> str:
        """Refuse an owner name longer than MAX_OWNER_CHARS (JobRequestError)."""
        _require(bounds_problem(owner=value))
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _key_fits(cls, value: str | None) -> str | None:
        """Refuse a key longer than MAX_KEY_CHARS, saying how to shorten it (JobRequestError)."""
        _require(bounds_problem(key=value))
        return value

    def check_bounds(self) -> None:
        """Raise JobRequestError when a value is out of bounds (for requests built or changed without validation)."""
        _require(bounds_problem(owner=self.owner, key=self.idempotency_key, priority=self.priority))


class JobOutput(BaseModel):
    """One stored output image of a job."""

    uri: str
    key: str
    size: int
    sha256: str
    content_type: str = "image/png"
    node_id: str
    comfy_filename: str


class Job(BaseModel):
    """One row of the `jobs` table."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    status: JobStatus
    workflow: str
    params: dict[str, Any]
    priority: int
    owner: str
    idempotency_key: str | None
    cache_key: str
    use_cache: bool
    vram_gb: float
    estimated_seconds: float | None
    estimated_cost: float | None
    actual_cost: float | None
    gpu_seconds: float | None
    attempts: int
    failures: int
    max_attempts: int
    worker: str | None
    lease_expires_at: datetime | None
    server: str | None
    cancel_requested: bool
    not_before: datetime
    outputs: list[JobOutput]
    error: str | None
    error_kind: str | None
    cached_from: uuid.UUID | None
    previous_server: str | None = None
    recovered: bool = False
    rating: int | None = None
    thumb: int | None = None
    tags: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list, description="Model files it loads, as folder/file.")
    memory_indexed_at: datetime | None = None
    batch: str | None
    batch_row: int | None
    created_at: datetime
    claimed_at: datetime | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_list(cls, value: Any) -> Any:
        """The column is jsonb: accept None as no outputs."""
        return value or []

    @property
    def prompt_id(self) -> str:
        """The ComfyUI prompt id of this job (the same as its id)."""
        return str(self.id)

    @property
    def generation(self) -> GenerationParams:
        """The stored values as GenerationParams."""
        return GenerationParams.model_validate(self.params)

    @property
    def done(self) -> bool:
        """Whether the job reached succeeded, failed or cancelled."""
        return self.status in TERMINAL_STATUSES

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict for `--json` output and APIs."""
        return self.model_dump(mode="json")


class SubmitOutcome(BaseModel):
    """What `submit` did: the job, and whether it was new and whether the cache answered it."""

    job: Job
    created: bool
    cached: bool
