"""The prompt library's records: prompts, versions, per-version stats, A/B tests, variants and reports."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from atelier.tools.prompts.rendering import render_template, render_template_async
from atelier.tools.prompts.templating import template_variables

__all__ = ["NAME_PATTERN", "ABReport", "ABTest", "ABTestDraft", "ChosenPrompt", "Prompt", "PromptDraft",
           "PromptVersion", "SaveResult", "Variant", "VariantReport", "VariantSpec", "VersionStats", "check_name"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


def check_name(name: str, what: str = "prompt") -> str:
    """`name` when it is a valid library name, else a ValueError saying what a name may hold."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"'{name}' is not a valid {what} name: use 1–64 lower-case letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit (e.g. hero-product)")
    return name


class Prompt(BaseModel):
    """A named prompt: where it belongs (category, purpose, tags) and its newest version number."""

    name: str
    category: str
    purpose: str | None
    tags: list[str]
    description: str
    latest: int
    author: str
    created_at: datetime
    updated_at: datetime


class PromptVersion(BaseModel):
    """One immutable version of a prompt: the Jinja2 template, its negative prompt and variable defaults."""

    prompt: str
    version: int
    template: str
    negative: str
    defaults: dict[str, Any]
    note: str
    author: str
    created_at: datetime

    @property
    def ref(self) -> str:
        """`name@version`."""
        return f"{self.prompt}@{self.version}"

    def variable_names(self) -> list[str]:
        """The variables the template reads."""
        return template_variables(self.template)

    def render(self, values: dict[str, Any], *, seconds: float | None = None) -> str:
        """The prompt text for these values (the version's defaults fill the rest), rendered in a worker process
        within `seconds` (settings.template_seconds; default 1): blocks the calling thread, not for event loops."""
        return render_template(self.template, values, defaults=self.defaults, seconds=seconds)

    async def render_async(self, values: dict[str, Any], *, seconds: float | None = None) -> str:
        """`render` for async callers: the event loop keeps running while the worker renders."""
        return await render_template_async(self.template, values, defaults=self.defaults, seconds=seconds)


class PromptDraft(BaseModel):
    """What a save brings: the template (a new version when it differs) and optional metadata changes."""

    name: str
    template: str = Field(min_length=1, max_length=20_000)
    negative: str | None = Field(None, max_length=4_000, description="None keeps the newest version's.")
    defaults: dict[str, Any] | None = Field(None, description="None keeps the newest version's.")
    note: str = Field("", max_length=2_000)
    category: str | None = Field(None, max_length=64)
    purpose: str | None = Field(None, max_length=64)
    tags: list[str] | None = None
    description: str | None = Field(None, max_length=2_000)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        template_variables(value)  # raises PromptTemplateError naming the problem
        return value

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted({t.strip().lower() for t in value if t.strip()})


class SaveResult(BaseModel):
    """A save's outcome: the prompt, the version now newest, and whether this save created it."""

    prompt: Prompt
    version: PromptVersion
    created: bool


class VersionStats(BaseModel):
    """How one version did: images made, how many were rated and liked, mean stars, and its smoothed score."""

    prompt: str
    version: int
    uses: int
    rated: int
    liked: int
    mean_stars: float | None
    score: float


class VariantSpec(BaseModel):
    """A variant to create: a label and a prompt version (`name@version`), a workflow, or both."""

    label: str = Field(pattern=_LABEL)
    prompt: str | None = None
    version: int | None = Field(None, ge=1)
    workflow: str | None = None
    weight: int = Field(1, ge=1, le=1000)


class Variant(BaseModel):
    """A variant as stored, in its test's order."""

    label: str
    position: int
    prompt: str | None
    version: int | None
    workflow: str | None
    weight: int

    def describe(self) -> str:
        """`prompt@version`, `workflow`, or both, for people."""
        parts = [f"{self.prompt}@{self.version}" if self.prompt else "", f"workflow {self.workflow}"
                 if self.workflow else ""]
        return " + ".join(p for p in parts if p)


class ABTestDraft(BaseModel):
    """A test to start, with the job API's limits (POST /ab-tests): a name, two or more variants, where it applies."""

    name: str
    variants: list[VariantSpec] = Field(min_length=2, max_length=20)
    purpose: str | None = Field(None, max_length=64)
    min_ratings: int = Field(20, ge=1, le=100_000)
    description: str = Field("", max_length=2_000)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value, "A/B test")


class ABTest(BaseModel):
    """An A/B test: its variants, the purpose it applies to, and its state."""

    name: str
    purpose: str | None
    status: str
    min_ratings: int
    description: str
    author: str
    created_at: datetime
    stopped_at: datetime | None
    variants: list[Variant]


class VariantReport(BaseModel):
    """One variant's line in a report."""

    label: str
    arm: str
    weight: int
    uses: int
    rated: int
    liked: int
    like_rate: float | None
    mean_stars: float | None
    p_best: float


class ABReport(BaseModel):
    """A test's report: each variant's numbers, the significance checks and the recommendation."""

    test: str
    status: str
    purpose: str | None
    method: str
    min_ratings: int
    variants: list[VariantReport]
    chi2: float | None
    p_value: float | None
    significant: bool
    leader: str | None
    recommendation: str


class ChosenPrompt(BaseModel):
    """What the designer uses for one image: a prompt version and/or a workflow, and the A/B arm if any."""

    version: PromptVersion | None = None
    workflow: str | None = None
    ab_test: str | None = None
    variant: str | None = None
    why: str = ""
