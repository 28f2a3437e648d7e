"""The user's `models_config.json` (integration-ideas §12): their models as workflows with their figures, and rules.

The file (JSON; `//` and `/* */` comments are allowed, as in the §12 example) holds::

    {"models": {"qwen-image-fast": {"path": "qwen_image_….safetensors", "type": "diffusion", "quality": "medium",
                                    "vram_required_gb": 6, "avg_time_seconds": 30, "recommended_steps": 15,
                                    "max_resolution": "512x512", "use_cases": ["thumbnails"],
                                    "cost_per_image": 0.01, "workflow": "qwen-image-fast"}, …},
     "routing_rules": {"by_urgency": {"immediate": MODEL, "standard": MODEL, "flexible": MODEL},
                       "by_purpose": {"hero_image": MODEL, "social_media": MODEL, …},
                       "by_available_vram": {"low": MODEL, "medium": MODEL, "high": MODEL}}}

Every key of a model is optional except what its workflow lacks (below); `workflow` and `description` are
Atelier's additions. Each model maps to one workflow (`map_models`), the first that fits of:

1. the workflow its `workflow` key names;
2. the workflow named like the model (`qwen-image-fast`), or like the model without a `-standard` suffix
   (`qwen-image-standard` → `qwen-image`: the standard tier is the plain workflow);
3. a workflow that loads the model's `path` file (its graph or its catalog's model files); when several do, a
   text-to-image one first, then one of the model's quality, then by name; workflows another model took by
   1–2 come last.

The model's figures replace the workflow's catalog figures (`quality`, `vram_required_gb` → vram_gb,
`avg_time_seconds` → typical_seconds, `recommended_steps`, `max_resolution`, `use_cases`, `cost_per_image`);
a workflow without a catalog entry takes them all (then quality, VRAM, time, cost and max_resolution are
required) with the task read off its graph. Two models may not map to one workflow.

A bad file raises ModelsConfigError naming the key path (`routing_rules.by_purpose.thumbnail`) and the fix.
Routing by the rules is the cost router's (agents/cost_router.py); tools/workflow_library.py applies the file.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atelier.tools.catalog import WORKFLOW_NAME_PATTERN, CatalogEntry, Quality, infer_task, normalize_purpose
from atelier.tools.comfyui.templates import WorkflowTemplate, required_models
from atelier.tools.errors import AtelierError
from atelier.tools.schemas import parse_size

__all__ = [
    "URGENCY_KEYS",
    "VRAM_TIERS",
    "ModelMapping",
    "ModelSpec",
    "ModelsConfig",
    "ModelsConfigError",
    "RoutingRules",
    "apply_mappings",
    "load_models_config",
    "map_models",
    "parse_models_config",
    "strip_json_comments",
    "vram_tier",
]

URGENCY_KEYS = ("immediate", "standard", "flexible")
# by_available_vram tiers (§12): low under 8 GB, medium 8–12 GB, high over 12 GB.
VRAM_TIERS = {"low": "under 8 GB", "medium": "8–12 GB", "high": "over 12 GB"}
_FIX = "fix the file (its format: integration-ideas §12; `atelier workflows import FILE` checks it)"


class ModelsConfigError(AtelierError):
    """A models_config.json that cannot be read, or whose keys, values, rules or models do not fit."""


class ModelSpec(BaseModel):
    """One entry of `models`: the model's file, tier and figures (each optional: the workflow's own otherwise)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, min_length=1, description="The model file, as ComfyUI lists it.")
    type: str | None = Field(None, description="diffusion, … (informational).")
    quality: Quality | None = None
    vram_required_gb: float | None = Field(None, ge=0)
    avg_time_seconds: float | None = Field(None, gt=0)
    recommended_steps: int | None = Field(None, ge=1)
    max_resolution: str | None = None
    use_cases: list[str] | None = None
    cost_per_image: float | None = Field(None, ge=0)
    workflow: str | None = Field(None, pattern=WORKFLOW_NAME_PATTERN, description="The workflow that runs it.")
    description: str | None = Field(None, description="One line: what it makes (a workflow without a catalog).")

    @field_validator("max_resolution")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        """WIDTHxHEIGHT only."""
        if value is not None:
            parse_size(value)
        return value

    def figures(self) -> dict[str, Any]:
        """The catalog fields this model sets (the catalog's names)."""
        named = {"quality": self.quality, "vram_gb": self.vram_required_gb, "typical_seconds": self.avg_time_seconds,
                 "recommended_steps": self.recommended_steps, "max_resolution": self.max_resolution,
                 "use_cases": self.use_cases, "cost_per_image": self.cost_per_image}
        return {key: value for key, value in named.items() if value is not None}


class RoutingRules(BaseModel):
    """`routing_rules`: which model each urgency, purpose and free-VRAM tier asks for."""

    model_config = ConfigDict(extra="forbid")

    by_urgency: dict[Literal["immediate", "standard", "flexible"], str] = Field(default_factory=dict)
    by_purpose: dict[str, str] = Field(default_factory=dict)
    by_available_vram: dict[Literal["low", "medium", "high"], str] = Field(default_factory=dict)

    def named(self) -> list[tuple[str, str]]:
        """(key path, model) of every rule."""
        return [(f"routing_rules.{group}.{key}", model)
                for group in ("by_urgency", "by_purpose", "by_available_vram")
                for key, model in getattr(self, group).items()]

    def for_purpose(self, *spellings: str) -> tuple[str, str] | None:
        """(key path, model) of the purpose rule any spelling matches loosely ('hero' ~ 'hero_images'), or None."""
        wanted = {normalize_purpose(s) for s in spellings if s and s.strip()}
        for key, model in self.by_purpose.items():
            if normalize_purpose(key) in wanted:
                return f"routing_rules.by_purpose.{key}", model
        return None


class ModelsConfig(BaseModel):
    """A whole models_config.json."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec] = Field(..., min_length=1)
    routing_rules: RoutingRules = Field(default_factory=RoutingRules)


@dataclass(frozen=True)
class ModelMapping:
    """One model and the workflow that runs it, with how they were matched and the catalog entry that results."""

    model: str
    workflow: str
    matched_by: str
    entry: CatalogEntry


def vram_tier(vram_free_gb: float) -> str:
    """The by_available_vram tier of this much free VRAM: low (< 8 GB), medium (8–12 GB) or high (> 12 GB)."""
    if vram_free_gb < 8:
        return "low"
    return "medium" if vram_free_gb <= 12 else "high"


# ----------------------------------------------------------------------------- reading


def strip_json_comments(text: str) -> str:
    """JSON with `//` and `/* */` comments → JSON (strings untouched; line breaks kept so errors keep their lines)."""
    out: list[str] = []
    i, length, in_string = 0, len(text), False
    while i < length:
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\" and i + 1 < length:
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = length if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            skipped = text[i:] if end < 0 else text[i:end + 2]
            out.append("\n" * skipped.count("\n"))
            i = length if end < 0 else end + 2
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _where(loc: Sequence[int | str]) -> str:
    """A pydantic location as the file's key path (`models.sdxl-turbo.quality`)."""
    return ".".join(str(part) for part in loc if part != "[key]") or "the file"


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys allowed where an unknown key `loc` sits."""
    parent = [str(part) for part in loc[:-1]]
    if not parent:
        return list(ModelsConfig.model_fields)
    if parent[0] == "models" and len(parent) == 2:
        return list(ModelSpec.model_fields)
    if parent == ["routing_rules"]:
        return list(RoutingRules.model_fields)
    return []


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as `key.path: what is wrong (the fix)`."""
    loc = tuple(error.get("loc", ()))
    where, message = _where(loc), str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{where} is not a key models_config.json knows ({hint}known here: {', '.join(known)})"
    if error.get("type") == "missing":
        return f"{where} is missing; add it"
    return f"{where}: {message} (got {error.get('input')!r})"


def _unknown_rule_models(config: ModelsConfig) -> list[str]:
    """A problem for every rule that names a model `models` does not have."""
    known = list(config.models)
    problems = []
    for where, model in config.routing_rules.named():
        if model not in config.models:
            close = difflib.get_close_matches(model, known, n=1)
            hint = f"; did you mean \"{close[0]}\"?" if close else ""
            problems.append(f"{where} names \"{model}\", which is not in models: {', '.join(known)}{hint}")
    return problems


def parse_models_config(text: str, source: str = "models_config.json") -> ModelsConfig:
    """Read and check the file's text (comments allowed); ModelsConfigError naming every bad key and the fix."""
    try:
        raw = json.loads(strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise ModelsConfigError(f"{source} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; {_FIX}"
                                ) from None
    if not isinstance(raw, dict):
        raise ModelsConfigError(f"{source} must hold an object with \"models\" and \"routing_rules\"; {_FIX}")
    try:
        config = ModelsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ModelsConfigError(f"{source}: " + "; ".join(problems) + f"; {_FIX}") from None
    problems = _unknown_rule_models(config)
    if problems:
        raise ModelsConfigError(f"{source}: " + "; ".join(problems) + "; name a model the file defines")
    return config


def load_models_config(path: Path) -> ModelsConfig:
    """Read and check a models_config.json file (ModelsConfigError when it is missing or bad)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelsConfigError(f"models config {file} does not exist; fix ATELIER_MODELS_CONFIG (or unset it), or "
                                "import the file again with `atelier workflows import FILE`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsConfigError(f"models config {file} cannot be read ({exc}); check the file and its rights") from None
    return parse_models_config(text, str(file))


# ----------------------------------------------------------------------------- models → workflows


def _files(template: WorkflowTemplate) -> set[str]:
    """The model file names a workflow loads: its graph's and its catalog's (folders dropped)."""
    names = {name for files in required_models(template).values() for name in files}
    if template.catalog is not None:
        names |= {name for files in template.catalog.models.values() for name in files}
        names |= {model.name for model in template.catalog.model_files}
    return {Path(name.replace("\\", "/")).name for name in names}


def _by_file(spec: ModelSpec, templates: Sequence[WorkflowTemplate], taken: set[str]) -> WorkflowTemplate | None:
    """The workflow that loads the model's file (see the module docstring for the preferences), or None."""
    if spec.path is None:
        return None
    wanted = Path(spec.path.replace("\\", "/")).name
    loading = [t for t in templates if wanted in _files(t)]
    if not loading:
        return None

    def preference(template: WorkflowTemplate) -> tuple[bool, bool, bool, str]:
        entry = template.catalog
        return (template.name in taken, (entry.task if entry else infer_task(template)) != "txt2img",
                entry is None or entry.quality != spec.quality, template.name)

    return min(loading, key=preference)


def _by_name(model: str, spec: ModelSpec, named: Mapping[str, WorkflowTemplate]
             ) -> tuple[WorkflowTemplate, str] | None:
    """The workflow the model's `workflow` key or its name names, with how it matched (None: neither)."""
    if spec.workflow is not None:
        return (named[spec.workflow], 'its "workflow" key') if spec.workflow in named else None
    if model in named:
        return named[model], "its name"
    plain = model.removesuffix("-standard")
    if plain != model and plain in named:
        return named[plain], 'its name without "-standard"'
    return None


def _unmapped(model: str, spec: ModelSpec, names: Sequence[str]) -> str:
    """Why a model maps to no workflow, and the fix."""
    shown = ", ".join(names)
    if spec.workflow is not None:
        return (f"models.{model}.workflow names \"{spec.workflow}\", which is not a workflow (known: {shown}); "
                "name one of them, or put that workflow in ATELIER_WORKFLOWS_DIR")
    plain = model.removesuffix("-standard")
    tried = f"\"{model}\"" + (f" or \"{plain}\"" if plain != model else "")
    file = f" and none loads {spec.path}" if spec.path else " and it names no \"path\""
    return (f"models.{model} maps to no workflow: none is named {tried}{file}; add \"workflow\": \"<name>\" to it "
            f"(known: {shown}), or ship that workflow in ATELIER_WORKFLOWS_DIR")


def _merged(model: str, spec: ModelSpec, template: WorkflowTemplate) -> CatalogEntry:
    """The workflow's catalog entry with the model's figures (a whole entry when the workflow has none)."""
    figures = spec.figures()
    base = template.catalog
    if base is None:
        needed = {"quality": "quality", "vram_gb": "vram_required_gb", "typical_seconds": "avg_time_seconds",
                  "cost_per_image": "cost_per_image", "max_resolution": "max_resolution"}
        missing = [key for field, key in needed.items() if field not in figures]
        if missing:
            raise ModelsConfigError(
                f"models.{model} maps to workflow '{template.name}', which has no catalog entry, so the model must "
                f"give {', '.join(missing)}; add them to models.{model} (or a `catalog` to the workflow's sidecar)")
        values = {"purpose": spec.description or f"{model} (models_config.json)", "task": infer_task(template),
                  **figures}
    else:
        values = {**base.model_dump(), **figures}
    try:
        return CatalogEntry.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        message = str(problem.get("msg", "")).removeprefix("Value error, ")
        raise ModelsConfigError(f"models.{model} does not fit workflow '{template.name}': {message}; change "
                                f"models.{model} (or the workflow's sidecar)") from None


def map_models(config: ModelsConfig, templates: Sequence[WorkflowTemplate], source: str = "models_config.json"
               ) -> dict[str, ModelMapping]:
    """Model name → the workflow that runs it and its merged catalog entry; ModelsConfigError naming every model that
    maps to none (or to a workflow another model has) and the fix."""
    named = {t.name: t for t in templates}
    found: dict[str, tuple[WorkflowTemplate, str]] = {}
    for model, spec in config.models.items():
        hit = _by_name(model, spec, named)
        if hit is not None:
            found[model] = hit
    taken = {template.name for template, _ in found.values()}
    problems = []
    for model, spec in config.models.items():
        if model in found:
            continue
        template = None if spec.workflow is not None else _by_file(spec, templates, taken)
        if template is None:
            problems.append(_unmapped(model, spec, sorted(named)))
            continue
        found[model] = (template, f"its file {Path(spec.path or '').name}")
        taken.add(template.name)
    owners: dict[str, list[str]] = {}
    for model, (template, _) in found.items():
        owners.setdefault(template.name, []).append(model)
    for workflow, models in owners.items():
        if len(models) > 1:
            problems.append(f"models {' and '.join(models)} all map to workflow '{workflow}' (one workflow takes one "
                            f"model's figures); give each a \"workflow\" key naming its own workflow (a copy under "
                            "another name in ATELIER_WORKFLOWS_DIR)")
    if problems:
        raise ModelsConfigError(f"{source}: " + "; ".join(problems))
    return {model: ModelMapping(model, template.name, how, _merged(model, config.models[model], template))
            for model, (template, how) in found.items()}


def apply_mappings(templates: Sequence[WorkflowTemplate], mappings: Mapping[str, ModelMapping]
                   ) -> list[WorkflowTemplate]:
    """The templates with each mapped workflow's catalog entry replaced by its model's (same order)."""
    by_workflow = {m.workflow: m for m in mappings.values()}
    return [t.model_copy(update={"catalog": by_workflow[t.name].entry}) if t.name in by_workflow else t
            for t in templates]

