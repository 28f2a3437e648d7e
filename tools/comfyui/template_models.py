"""Pydantic models of a workflow template: bindings, limits, sidecar and the loaded template."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atelier.tools.comfyui.catalog_entry import CatalogEntry
from atelier.tools.comfyui.template_graph import PARAM_KINDS
from atelier.workflows import SHIPPED_DIR


class Binding(BaseModel):
    """One node input that receives a parameter's value."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    input: str

    def __str__(self) -> str:
        """`node 6 input text`."""
        return f"node {self.node_id} input {self.input}"


class Limit(BaseModel):
    """Bounds a sidecar puts on one parameter (checked by render)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None
    multiple_of: int | None = Field(None, ge=1)


class Sidecar(BaseModel):
    """The contents of `NAME.meta.json` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    bindings: dict[str, Any] | None = None
    limits: dict[str, Limit] = Field(default_factory=dict)
    catalog: CatalogEntry | None = None
    notes: str = ""


class WorkflowTemplate(BaseModel):
    """A loaded workflow: the API graph, which inputs receive which parameter, and its catalog entry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    graph: dict[str, Any]
    bindings: dict[str, list[Binding]]
    catalog: CatalogEntry | None = None
    limits: dict[str, Limit] = Field(default_factory=dict)
    ui_workflow: dict[str, Any] | None = None
    source: Path | None = None
    inferred: bool = False

    @functools.cached_property
    def graph_digest(self) -> str:
        """sha256 of the API graph (computed once; templates are not edited after loading)."""
        return hashlib.sha256(json.dumps(self.graph, sort_keys=True).encode()).hexdigest()
    inference_notes: list[str] = Field(default_factory=list)
    unbound: dict[str, str] = Field(default_factory=dict, description="Parameter → why inference left it out.")

    @property
    def accepts(self) -> list[str]:
        """The parameters this workflow takes, in GenerationParams order."""
        return [p for p in PARAM_KINDS if p in self.bindings]

    @property
    def shipped(self) -> bool:
        """Whether it is one of Atelier's own workflows."""
        return self.source is not None and self.source.parent == SHIPPED_DIR


class SidecarTarget(BaseModel):
    """A sidecar binding target before it is resolved to a node id."""

    model_config = ConfigDict(extra="forbid")

    node: str | int | None = None
    title: str | None = None
    input: str

