"""Typed rows of the job ledger: what a job asks for, where it stands, and what it made."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.schemas import GenerationParams

__all__ = ["ACTIVE", "TERMINAL_STATUSES", "Job", "JobOutput", "JobRequest", "JobStatus", "SubmitOutcome"]

JobStatus = Literal["queued", "submitted", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"submitted", "running"})


class JobRequest(BaseModel):
    """What a caller asks the ledger for: one workflow run with these values."""

    model_config = ConfigDict(extra="forbid")

    params: GenerationParams
    workflow: str | None = Field(None, description="Workflow name or file; None: the settings' default.")
    priority: int = Field(0, description="Higher runs first.")
    owner: str = Field("anonymous", min_length=1, description="Who asked (a person, an agent, a batch).")
    idempotency_key: str | None = Field(None, min_length=1, description="The same key twice returns the same job.")
    use_cache: bool = Field(True, description="Answer from an earlier identical success without the GPU.")
    batch: str | None = None
    batch_row: int | None = None


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
