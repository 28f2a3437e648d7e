"""ComfyUI workflow templates: load API-format graphs, bind Atelier's parameters to node inputs, render, check.

Workflow files
--------------
A workflow is `NAME.json` in ComfyUI's API format (Workflow → Export (API), or "Save (API Format)"):
`{"<node id>": {"class_type": "KSampler", "inputs": {...}, "_meta": {"title": "..."}}}`, where an input
holds either a value or a link `["<source node id>", <output index>]`. Also accepted: a `POST /prompt`
style body `{"prompt": <graph>, "workflow": <UI workflow>}` (or with `extra_data.extra_pnginfo.workflow`),
and a PNG saved by ComfyUI (its `prompt` and `workflow` text chunks). A UI-format file (`nodes` and
`links` arrays) is refused with instructions to export the API format.

Shipped workflows live in the `workflows` package; user workflows in any folder passed as
`search_dirs` (a user `NAME.json` replaces a shipped one of the same name). Beside `NAME.json` may sit:

- `NAME.ui.json`: the same workflow in ComfyUI's UI format. It becomes `WorkflowTemplate.ui_workflow`,
  which callers send as `extra_pnginfo.workflow` so saved PNGs open in ComfyUI with their layout.
- `NAME.meta.json`, the sidecar (every key optional)::

    {
      "bindings": {
        "prompt":   ["6", "text"],
        "negative": {"title": "Negative prompt", "input": "text"},
        "seed":     [["3", "seed"], ["12", "noise_seed"]],
        "width":    {"node": "5", "input": "width"}
      },
      "limits":  {"steps": {"min": 1, "max": 10}, "width": {"max": 2048, "multiple_of": 64}},
      "catalog": {"purpose": "...", "task": "txt2img", "quality": "fast|medium|high|ultra", "vram_gb": 4,
                  "typical_seconds": 10, "cost_per_image": 0.005, "recommended_steps": 4,
                  "max_resolution": "1024x1024", "use_cases": ["rapid_prototyping"],
                  "models": {"checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors"]}},
      "notes":   "free text for people"
    }

  `bindings` maps a `GenerationParams` field (prompt, negative, seed, steps, cfg, width, height, denoise,
  batch_size, input_image) to one target or a list of targets (all receive the value). A target is
  `[node_id, input]`, `{"node": node_id, "input": name}` or `{"title": title, "input": name}` (the one
  node whose `_meta.title` is that title). The input must exist on the node and hold a value, not a
  link, of the parameter's kind: text for prompt/negative/input_image, an integer for
  seed/steps/width/height/batch_size, a number for cfg/denoise. Shipped sidecars never rely on inference.
  `limits` narrows what `render` accepts (`min`, `max`, `multiple_of`; width and height must always be
  multiples of 8). `catalog` is a `tools.catalog.CatalogEntry`: user workflows may leave it out.

Inference
---------
Without `bindings` (no sidecar, or a sidecar with only a catalog) they are read off the graph, and
`WorkflowTemplate.inference_notes` says what was bound and why. Samplers are the nodes with a linked
`latent_image` (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced, most custom ones).

- prompt / negative: the text encoder (a node with a `text`, `prompt`, `text_g`, `text_l`, `clip_l`,
  `clip_g` or `t5xxl` input) reached from each sampler's `positive` / `negative` (or its guider's),
  through conditioning nodes (ConditioningCombine, ControlNetApply(Advanced), FluxGuidance, …). A text
  input linked from a primitive node binds the primitive's value. When several encoders qualify, a
  title decides ("Positive …" / "Negative …"), otherwise loading fails naming the candidates. A
  negative that comes from the positive encoder (ConditioningZeroOut) is not bound.
- seed / steps / cfg / denoise: the sampler's own input (`seed` or `noise_seed`), else the node feeding
  its `noise`, `sigmas` or `guider` (RandomNoise, a scheduler, CFGGuider), else a primitive linked to it.
  The seed binds every sampler; the others bind all samplers when their values agree, none otherwise.
- width / height / batch_size: the empty latent (EmptyLatentImage, EmptySD3LatentImage, …) at the start
  of the samplers' latent chain, when there is exactly one size.
- input_image: the only LoadImage (or the one titled "Input …" / "Source …").

Rendering and seeds
-------------------
`render` returns a deep copy of the graph with every set parameter written into its bound inputs; None
keeps the workflow's own value. The prompt is mandatory in `GenerationParams`, so a workflow with no
prompt input (upscale) ignores it; any other parameter set but not bound is an error naming what the
workflow accepts. Nothing is clamped: width and height that are not multiples of 8, values outside the
sidecar's `limits`, and (for catalogued workflows) sizes above `max_resolution`'s pixel count are
refused with the nearest valid values. `render` never invents a seed: the caller picks one
(`random_seed()` when the person gave none) and records it, so every run can be reproduced.

Checking: `check_against_object_info(graph, object_info)` lists what ComfyUI would refuse (unknown
classes, missing inputs, bad links and types, out-of-range numbers, COMBO values; model files only with
`check_models=True`), `check_bindings_against_object_info` checks the bindings' inputs, and
`required_models` says which model files go in which `ComfyUI/models/<folder>/`.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.catalog import CatalogEntry
from tools.errors import MODEL_FOLDERS, WorkflowError
from tools.schemas import GenerationParams
from workflows import SHIPPED_DIR

__all__ = [
    "PARAM_KINDS",
    "SHIPPED_DIR",
    "Binding",
    "Limit",
    "Sidecar",
    "WorkflowTemplate",
    "check_against_object_info",
    "check_bindings_against_object_info",
    "discover_workflows",
    "load_workflow",
    "random_seed",
    "render",
    "required_models",
]

Graph = dict[str, dict[str, Any]]

# What kind of value each GenerationParams field writes into a node input.
PARAM_KINDS: dict[str, str] = {
    "prompt": "text",
    "negative": "text",
    "seed": "int",
    "steps": "int",
    "cfg": "number",
    "width": "int",
    "height": "int",
    "denoise": "number",
    "batch_size": "int",
    "input_image": "text",
}
_KIND_WORDS = {"text": "text", "int": "an integer", "number": "a number"}
# object_info input types a parameter of each kind may be written into.
_KIND_TYPES = {"text": {"STRING", "COMBO"}, "int": {"INT"}, "number": {"FLOAT", "INT"}}

_TEXT_INPUTS = ("text", "prompt", "text_g", "text_l", "clip_l", "clip_g", "t5xxl")
_SAMPLER_VALUES: dict[str, tuple[str, ...]] = {
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "denoise": ("denoise",),
}
_SAMPLER_HELPERS = ("noise", "sigmas", "guider")
_LATENT_LINKS = ("latent_image", "samples", "latent")
_IMAGE_LOADERS = ("LoadImage", "LoadImageOutput")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".pkl", ".yaml")
_UPLOAD_FLAGS = ("image_upload", "file_upload", "audio_upload", "video_upload")
_EXPORT_HINT = "in ComfyUI: Workflow → Export (API); older versions: enable dev mode, then 'Save (API Format)'"


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


class _Target(BaseModel):
    """A sidecar binding target before it is resolved to a node id."""

    model_config = ConfigDict(extra="forbid")

    node: str | int | None = None
    title: str | None = None
    input: str


def random_seed() -> int:
    """A fresh seed in 0..2**32-1; callers record it so the run can be reproduced."""
    return secrets.randbelow(2**32)


# ----------------------------------------------------------------------------- small graph helpers


def _is_link(value: object) -> TypeGuard[list[Any]]:
    """Whether an input value is a link `[node_id, output_index]` (after normalisation)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _inputs(graph: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """A node's inputs."""
    inputs: dict[str, Any] = graph[node_id].get("inputs") or {}
    return inputs


def _class(graph: Mapping[str, Any], node_id: str) -> str:
    """A node's class_type."""
    return str(graph[node_id].get("class_type", "?"))


def _title(graph: Mapping[str, Any], node_id: str) -> str:
    """A node's `_meta.title` ('' when it has none)."""
    meta = graph[node_id].get("_meta")
    return str(meta.get("title") or "") if isinstance(meta, dict) else ""


def _label(graph: Mapping[str, Any], node_id: str) -> str:
    """`CLIPTextEncode 'Positive'` (the title only when it says more than the class)."""
    cls, title = _class(graph, node_id), _title(graph, node_id)
    same = re.sub(r"[^a-z0-9]", "", title.casefold()) == re.sub(r"[^a-z0-9]", "", cls.casefold())
    return f"{cls} '{title}'" if title and not same else cls


def _ref(graph: Mapping[str, Any], node_id: str) -> str:
    """`node 6 (CLIPTextEncode 'Positive')`."""
    return f"node {node_id} ({_label(graph, node_id)})"


def _link(graph: Mapping[str, Any], node_id: str, name: str) -> tuple[str, int] | None:
    """The (source, slot) a node's input links to, or None."""
    value = _inputs(graph, node_id).get(name)
    return (value[0], value[1]) if _is_link(value) else None


def _natural(node_id: str) -> list[Any]:
    """Sort key putting node '9' before '10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", node_id)]


def _ids(graph: Mapping[str, Any]) -> list[str]:
    """Node ids in natural order."""
    return sorted(graph, key=_natural)


# ----------------------------------------------------------------------------- reading files


def _read_json_text(text: str, where: str) -> Any:
    """Parse JSON; a WorkflowError with line and column when it is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            f"fix the file there, or export it again ({_EXPORT_HINT})"
        ) from None


def _read_json(path: Path) -> Any:
    """Read and parse a JSON file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc}") from None
    return _read_json_text(text, str(path))


def _itxt_value(body: bytes) -> tuple[str, str]:
    """Keyword and text of a PNG iTXt chunk."""
    key, _, rest = body.partition(b"\0")
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    raw = zlib.decompress(text) if compressed else text
    return key.decode("latin-1"), raw.decode("utf-8")


def _png_texts(path: Path) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG (ComfyUI stores `prompt` and `workflow` there)."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise WorkflowError(f"{path} is not a PNG file")
    texts: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key_text = _itxt_value(body)
            texts[key_text[0]] = key_text[1]
        elif kind == b"IEND":
            break
    return texts


def _graph_from_png(path: Path) -> tuple[Any, Any]:
    """The API graph and UI workflow embedded in a PNG saved by ComfyUI."""
    texts = _png_texts(path)
    if "prompt" not in texts:
        raise WorkflowError(
            f"{path} carries no ComfyUI workflow (no 'prompt' text chunk): it was not saved by ComfyUI's "
            "SaveImage, or its metadata was stripped"
        )
    ui = _read_json_text(texts["workflow"], f"{path} (workflow chunk)") if "workflow" in texts else None
    return _read_json_text(texts["prompt"], f"{path} (prompt chunk)"), ui


def _is_ui_format(data: Mapping[str, Any]) -> bool:
    """Whether a parsed file is a UI-format workflow (nodes and links arrays)."""
    return isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


def _ui_format_error(path: Path) -> WorkflowError:
    """The error for a UI-format file, saying how to get the API format."""
    name = _name_of(path)
    return WorkflowError(
        f"{path} is a ComfyUI UI workflow (it has 'nodes' and 'links' arrays), not the API format Atelier "
        f"runs. Open it in ComfyUI and export it in API format ({_EXPORT_HINT}), then load that file. "
        f"Keep this file beside the export as {name}.ui.json so saved images open in ComfyUI with their layout."
    )


def _unwrap(data: Any, path: Path) -> tuple[Any, Any]:
    """Split a parsed file into (API graph, UI workflow or None)."""
    if not isinstance(data, dict):
        raise WorkflowError(f"{path}: a workflow must be a JSON object mapping node ids to nodes ({_EXPORT_HINT})")
    workflow = data.get("workflow")
    if _is_ui_format(data) or (isinstance(workflow, dict) and _is_ui_format(workflow) and "prompt" not in data):
        raise _ui_format_error(path)
    prompt = data.get("prompt")
    if isinstance(prompt, dict) and "class_type" not in prompt:
        extra = data.get("extra_data")
        pnginfo = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
        ui = data.get("workflow") or (pnginfo.get("workflow") if isinstance(pnginfo, dict) else None)
        return prompt, ui
    return data, None


def _normalize_link(value: list[Any], node_id: str, name: str, where: str) -> list[Any]:
    """A link with a string node id, or a WorkflowError when the list is not a link."""
    ok = len(value) == 2 and isinstance(value[0], str | int) and isinstance(value[1], int)
    if not ok or isinstance(value[0], bool) or isinstance(value[1], bool) or value[1] < 0:
        raise WorkflowError(
            f"{where}: node {node_id} input '{name}' holds {value!r}, which is not a link "
            "[node_id, output_index]; ComfyUI treats every list as a link"
        )
    return [str(value[0]), value[1]]


def _normalize_node(node_id: str, node: Any, where: str) -> dict[str, Any]:
    """One node, checked for shape, with its links' node ids as strings."""
    if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
        raise WorkflowError(f"{where}: node {node_id} is not a node object with a 'class_type' ({_EXPORT_HINT})")
    inputs = node.get("inputs", {})
    if not isinstance(inputs, dict):
        raise WorkflowError(f"{where}: node {node_id} ({node['class_type']}) has 'inputs' that is not an object")
    fixed = {
        name: _normalize_link(value, node_id, name, where) if isinstance(value, list) else value
        for name, value in inputs.items()
    }
    return {**node, "inputs": fixed}


def _check_links(graph: Graph, where: str) -> None:
    """Every link must point at a node of the graph."""
    for node_id in _ids(graph):
        for name, value in _inputs(graph, node_id).items():
            if _is_link(value) and value[0] not in graph:
                raise WorkflowError(
                    f"{where}: {_ref(graph, node_id)} input '{name}' links to node {value[0]}, which is not "
                    "in the workflow; reconnect or remove that input in ComfyUI and export again"
                )


def _normalize_graph(raw: Any, where: str) -> Graph:
    """Check the graph's shape and links; return it with string link ids."""
    if not isinstance(raw, dict) or not raw:
        raise WorkflowError(f"{where}: the workflow has no nodes ({_EXPORT_HINT})")
    graph = {str(node_id): _normalize_node(str(node_id), node, where) for node_id, node in raw.items()}
    _check_links(graph, where)
    return graph


def _name_of(path: Path) -> str:
    """The workflow name of a file: `txt2img` for txt2img.json."""
    return path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.stem


def _load_graph_file(path: Path) -> tuple[Graph, dict[str, Any] | None]:
    """The normalised API graph of a workflow file and the UI workflow it embeds, if any."""
    if path.suffix.lower() == ".png":
        raw, ui = _graph_from_png(path)
    else:
        raw, ui = _unwrap(_read_json(path), path)
    return _normalize_graph(raw, str(path)), ui if isinstance(ui, dict) else None


def _pydantic_message(exc: ValidationError) -> str:
    """A short `where: what` summary of a pydantic error."""
    parts = [f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in exc.errors()]
    return "; ".join(parts)


def _load_sidecar(path: Path) -> Sidecar:
    """`NAME.meta.json` beside the workflow (an empty Sidecar when there is none)."""
    if not path.is_file():
        return Sidecar()
    data = _read_json(path)
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"{path} is not a valid workflow sidecar: {_pydantic_message(exc)}") from None


def _load_ui(path: Path) -> dict[str, Any] | None:
    """`NAME.ui.json` beside the workflow, when present (it must be a UI-format workflow)."""
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, dict) or not _is_ui_format(data):
        raise WorkflowError(f"{path} should be a UI-format workflow (Workflow → Export), with 'nodes' and 'links'")
    return data


# ----------------------------------------------------------------------------- finding workflows


def _is_workflow_file(path: Path) -> bool:
    """A `.json` that is not a sidecar or a UI companion."""
    return path.is_file() and path.name.endswith(".json") and not path.name.endswith((".meta.json", ".ui.json"))


def discover_workflows(search_dirs: Sequence[Path] = ()) -> dict[str, Path]:
    """Name → file of every shipped and user workflow; later folders replace earlier ones of the same name."""
    found: dict[str, Path] = {}
    for folder in (SHIPPED_DIR, *(Path(d).expanduser() for d in search_dirs)):
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if _is_workflow_file(path):
                    found[_name_of(path)] = path
    return found


def _locate(name_or_path: str, search_dirs: Sequence[Path]) -> Path:
    """The file a workflow name or path stands for."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix.lower() in (".json", ".png") or "/" in name_or_path or "\\" in name_or_path:
        if candidate.is_file():
            return candidate
        raise WorkflowError(f"workflow file {candidate} does not exist")
    found = discover_workflows(search_dirs)
    if name_or_path in found:
        return found[name_or_path]
    folders = ", ".join(str(d) for d in search_dirs) or "none configured (ATELIER_WORKFLOWS_DIR)"
    raise WorkflowError(
        f"unknown workflow '{name_or_path}': known workflows are {', '.join(sorted(found))} "
        f"(user folders: {folders}); or give the path of a workflow .json exported with Export (API)"
    )


# ----------------------------------------------------------------------------- sidecar bindings


def _is_pair(spec: object) -> bool:
    """`["6", "text"]` (or `[6, "text"]`)."""
    return (
        isinstance(spec, list)
        and len(spec) == 2
        and isinstance(spec[0], str | int)
        and not isinstance(spec[0], bool)
        and isinstance(spec[1], str)
    )


def _parse_target(spec: object, param: str, where: str) -> _Target:
    """One target of a sidecar binding."""
    if _is_pair(spec):
        assert isinstance(spec, list)
        return _Target(node=str(spec[0]), input=spec[1])
    try:
        target = _Target.model_validate(spec)
    except ValidationError:
        target = None
    if target is None or (target.node is None) == (target.title is None):
        raise WorkflowError(
            f'{where}: binding \'{param}\' has the target {spec!r}; write ["node_id", "input"], '
            '{"node": "node_id", "input": "input"} or {"title": "Node title", "input": "input"}'
        )
    return target


def _parse_targets(spec: object, param: str, where: str) -> list[_Target]:
    """The targets of one sidecar binding (a single target or a list of them)."""
    if isinstance(spec, list) and spec and not _is_pair(spec):
        return [_parse_target(item, param, where) for item in spec]
    return [_parse_target(spec, param, where)]


def _node_by_title(graph: Graph, title: str, param: str, where: str) -> str:
    """The one node with this `_meta.title` (exact, else case-insensitive)."""
    matches = [n for n in _ids(graph) if _title(graph, n) == title]
    matches = matches or [n for n in _ids(graph) if _title(graph, n).casefold() == title.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        titles = sorted({_title(graph, n) for n in graph if _title(graph, n)})
        raise WorkflowError(
            f"{where}: binding '{param}' names the node title '{title}', but no node has it; "
            f"titles in the workflow: {', '.join(titles) or 'none'}"
        )
    raise WorkflowError(
        f"{where}: binding '{param}' names the node title '{title}', which nodes {', '.join(matches)} share; "
        "give one of them a unique title in ComfyUI, or bind by node id"
    )


def _require_input(graph: Graph, node_id: str, name: str, param: str, where: str) -> None:
    """The bound input must exist on the node and hold a value, not a link."""
    inputs = _inputs(graph, node_id)
    if name not in inputs:
        raise WorkflowError(
            f"{where}: binding '{param}' points at input '{name}' of {_ref(graph, node_id)}, which has no such "
            f"input; its inputs: {', '.join(inputs) or 'none'}"
        )
    if _is_link(inputs[name]):
        source = inputs[name][0]
        raise WorkflowError(
            f"{where}: binding '{param}' points at input '{name}' of {_ref(graph, node_id)}, which is linked "
            f"to {_ref(graph, source)}; bind the value on node {source} instead"
        )


def _resolve_target(graph: Graph, target: _Target, param: str, where: str) -> Binding:
    """A sidecar target as a Binding to an existing node input."""
    if target.title is not None:
        node_id = _node_by_title(graph, target.title, param, where)
    else:
        node_id = str(target.node)
        if node_id not in graph:
            raise WorkflowError(
                f"{where}: binding '{param}' points at node {node_id}, which is not in the workflow; "
                f"its nodes: {', '.join(_ids(graph))}"
            )
    _require_input(graph, node_id, target.input, param, where)
    return Binding(node_id=node_id, input=target.input)


def _unknown_param(param: str, where: str, what: str) -> WorkflowError:
    """The error for a sidecar key that is not a GenerationParams field."""
    return WorkflowError(
        f"{where}: unknown parameter '{param}' in {what}; Atelier's parameters are {', '.join(PARAM_KINDS)}"
    )


def _resolve_bindings(graph: Graph, raw: Mapping[str, Any], where: str) -> dict[str, list[Binding]]:
    """Sidecar bindings resolved to node ids, each checked to exist."""
    bindings: dict[str, list[Binding]] = {}
    for param, spec in raw.items():
        if param not in PARAM_KINDS:
            raise _unknown_param(param, where, "bindings")
        targets = [_resolve_target(graph, t, param, where) for t in _parse_targets(spec, param, where)]
        bindings[param] = list(dict.fromkeys(targets))
    return bindings


def _kind_ok(kind: str, value: object) -> bool:
    """Whether a node's current value is of a parameter kind."""
    if kind == "text":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return _is_number(value)


def _check_binding_values(graph: Graph, bindings: Mapping[str, list[Binding]], where: str) -> None:
    """Every bound input must currently hold a value of its parameter's kind."""
    for param, targets in bindings.items():
        kind = PARAM_KINDS[param]
        for target in targets:
            value = _inputs(graph, target.node_id)[target.input]
            if not _kind_ok(kind, value):
                raise WorkflowError(
                    f"{where}: '{param}' is bound to input '{target.input}' of {_ref(graph, target.node_id)}, "
                    f"which holds {value!r}; {param} needs an input holding {_KIND_WORDS[kind]}"
                )


# ----------------------------------------------------------------------------- inference


@dataclass
class _Found:
    """What inference has bound so far, and why."""

    graph: Graph
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unbound: dict[str, str] = field(default_factory=dict)

    def bind(self, param: str, targets: Sequence[tuple[Binding, str]]) -> None:
        """Bind a parameter to these targets, with a note per target."""
        unique = dict(targets)
        self.bindings[param] = list(unique)
        for target, why in unique.items():
            ref = _ref(self.graph, target.node_id)
            self.notes.append(f"{param} → {ref} input {target.input}: {why}")

    def skip(self, param: str, reason: str) -> None:
        """Leave a parameter unbound, saying why."""
        self.unbound[param] = reason
        self.notes.append(f"{param} not bound: {reason}")


def _samplers(graph: Graph) -> list[str]:
    """Nodes that sample a latent (a linked `latent_image`)."""
    return [n for n in _ids(graph) if _link(graph, n, "latent_image") is not None]


def _text_inputs(graph: Graph, node_id: str) -> list[str]:
    """The prompt-text inputs of a text encoder (value or link)."""
    inputs = _inputs(graph, node_id)
    return [n for n in _TEXT_INPUTS if isinstance(inputs.get(n), str) or _is_link(inputs.get(n))]


def _conditioning(graph: Graph, sampler: str) -> dict[str, tuple[str, str, tuple[str, int]]]:
    """Role → (node that takes it, its input, link) for a sampler's positive and negative conditioning."""
    holder = sampler
    if _link(graph, sampler, "positive") is None and (guider := _link(graph, sampler, "guider")):
        holder = guider[0]
    roles: dict[str, tuple[str, str, tuple[str, int]]] = {}
    for role, names in (("positive", ("positive", "conditioning")), ("negative", ("negative",))):
        for name in names:
            if (link := _link(graph, holder, name)) is not None:
                roles[role] = (holder, name, link)
                break
    return roles


def _encoders(graph: Graph, link: tuple[str, int], seen: set[str]) -> list[str]:
    """The text encoders a conditioning link comes from, through conditioning nodes."""
    source, slot = link
    if source in seen:
        return []
    seen.add(source)
    if _text_inputs(graph, source):
        return [source]
    inputs = _inputs(graph, source)
    if _is_link(inputs.get("positive")) and _is_link(inputs.get("negative")):
        follow = ["positive" if slot == 0 else "negative"]
    else:
        follow = [n for n, v in inputs.items() if n.startswith("conditioning") and _is_link(v)]
    found: list[str] = []
    for name in follow:
        next_link = _link(graph, source, name)
        if next_link is not None:
            found += _encoders(graph, next_link, seen)
    return found


def _title_words(graph: Graph, node_id: str) -> set[str]:
    """The lower-case words of a node's title."""
    return set(re.findall(r"[a-z]+", _title(graph, node_id).casefold()))


def _title_role(graph: Graph, node_id: str) -> str | None:
    """'positive' or 'negative' when a node's title says so ('Positive prompt', 'Negative', 'Prompt')."""
    words = re.findall(r"[a-z]+", _title(graph, node_id).casefold())
    if "negative" in words:
        return "negative"
    if "positive" in words or words in (["prompt"], ["main", "prompt"]):
        return "positive"
    return None


def _string_source(graph: Graph, node_id: str) -> str | None:
    """The one literal text input of a primitive-like node feeding a text input."""
    texts = [n for n, v in _inputs(graph, node_id).items() if isinstance(v, str)]
    return texts[0] if len(texts) == 1 else None


def _text_targets(graph: Graph, encoder: str) -> list[Binding]:
    """Where an encoder's text lives: its own inputs, or the primitive that feeds them."""
    targets: list[Binding] = []
    for name in _text_inputs(graph, encoder):
        value = _inputs(graph, encoder)[name]
        if isinstance(value, str):
            targets.append(Binding(node_id=encoder, input=name))
        elif (source_input := _string_source(graph, value[0])) is not None:
            targets.append(Binding(node_id=value[0], input=source_input))
    return targets


def _ambiguous(graph: Graph, param: str, candidates: Mapping[str, str], where: str) -> WorkflowError:
    """The error naming every encoder that could hold a prompt."""
    listed = "; ".join(f"{_ref(graph, n)}, which {why}" for n, why in candidates.items())
    title = "Positive prompt" if param == "prompt" else "Negative prompt"
    return WorkflowError(
        f"{where}: cannot tell which node holds the {param}: {listed}. In ComfyUI give the right one the title "
        f"'{title}' (right-click → Title) and export again, or add a sidecar .meta.json with "
        f'"bindings": {{"{param}": ["<node id>", "text"]}}'
    )


def _pick_encoder(graph: Graph, param: str, candidates: dict[str, str], where: str) -> tuple[str, str] | None:
    """The one encoder for prompt/negative among candidates (a title decides between several)."""
    role = "positive" if param == "prompt" else "negative"
    if len(candidates) > 1:
        titled = [n for n in candidates if _title_role(graph, n) == role]
        if len(titled) != 1:
            raise _ambiguous(graph, param, candidates, where)
        return titled[0], f"{candidates[titled[0]]} (chosen by its title)"
    if candidates:
        node_id = next(iter(candidates))
        return node_id, candidates[node_id]
    titled = [n for n in _ids(graph) if _text_inputs(graph, n) and _title_role(graph, n) == role]
    if len(titled) > 1:
        raise _ambiguous(graph, param, {n: "has that title" for n in titled}, where)
    return (titled[0], "its title says so") if titled else None


def _encoder_candidates(graph: Graph, samplers: Sequence[str]) -> dict[str, dict[str, str]]:
    """Role → {encoder: why} over all samplers."""
    found: dict[str, dict[str, str]] = {"positive": {}, "negative": {}}
    for sampler in samplers:
        for role, (holder, name, link) in _conditioning(graph, sampler).items():
            for encoder in _encoders(graph, link, set()):
                found[role].setdefault(encoder, f"feeds {_class(graph, holder)} {holder}'s {name}")
    return found


def _infer_prompts(graph: Graph, samplers: Sequence[str], found: _Found, where: str) -> None:
    """Bind prompt and negative to the encoders feeding the samplers."""
    candidates = _encoder_candidates(graph, samplers)
    for encoder in [e for e in candidates["negative"] if e in candidates["positive"]]:
        del candidates["negative"][encoder]
        found.skip("negative", f"the negative conditioning is derived from the prompt's {_ref(graph, encoder)}")
    for param, role in (("prompt", "positive"), ("negative", "negative")):
        picked = _pick_encoder(graph, param, candidates[role], where)
        if picked is None:
            continue
        targets = _text_targets(graph, picked[0])
        if targets:
            found.unbound.pop(param, None)
            found.bind(param, [(t, picked[1]) for t in targets])
        else:
            found.skip(param, f"{_ref(graph, picked[0])} takes its text from a node Atelier cannot follow")


def _number_target(graph: Graph, node_id: str, name: str) -> Binding | None:
    """A node's numeric input, or the single number of a primitive linked into it."""
    value = _inputs(graph, node_id).get(name)
    if _is_number(value):
        return Binding(node_id=node_id, input=name)
    if _is_link(value):
        numbers = [n for n, v in _inputs(graph, value[0]).items() if _is_number(v)]
        links = [v for v in _inputs(graph, value[0]).values() if _is_link(v)]
        if len(numbers) == 1 and not links:
            return Binding(node_id=value[0], input=numbers[0])
    return None


def _sampler_parts(graph: Graph, sampler: str) -> list[tuple[str, str]]:
    """The sampler and the nodes feeding its noise, sigmas and guider, with how they relate."""
    parts = [(sampler, f"of {_class(graph, sampler)} {sampler}")]
    for helper in _SAMPLER_HELPERS:
        if (link := _link(graph, sampler, helper)) is not None:
            how = f"of {_class(graph, link[0])} {link[0]}, the {helper} of {_class(graph, sampler)} {sampler}"
            parts.append((link[0], how))
    return parts


def _value_target(graph: Graph, sampler: str, names: Sequence[str]) -> tuple[Binding, str] | None:
    """Where one sampler's seed/steps/cfg/denoise lives."""
    for node_id, how in _sampler_parts(graph, sampler):
        for name in names:
            if (target := _number_target(graph, node_id, name)) is not None:
                via = "" if target.node_id == node_id else "the value feeding "
                return target, f"{via}the {name} {how}"
    return None


def _current(graph: Graph, target: Binding) -> Any:
    """A bound input's current value."""
    return _inputs(graph, target.node_id)[target.input]


def _bind_agreeing(found: _Found, param: str, targets: list[tuple[Binding, str]], *, always: bool = False) -> None:
    """Bind all targets when their current values agree (or `always`), else leave the parameter unbound."""
    if not targets:
        return
    values = {json.dumps(_current(found.graph, t)) for t, _ in targets}
    if always or len(values) == 1:
        found.bind(param, targets)
        return
    listed = ", ".join(f"{_ref(found.graph, t.node_id)} {t.input}={_current(found.graph, t)!r}" for t, _ in targets)
    found.skip(param, f"the workflow uses different values ({listed}); bind the right one in a .meta.json sidecar")


def _infer_sampler_values(graph: Graph, samplers: Sequence[str], found: _Found) -> None:
    """Bind seed, steps, cfg and denoise on the samplers (or their noise/sigmas/guider nodes)."""
    for param, names in _SAMPLER_VALUES.items():
        targets = [t for s in samplers if (t := _value_target(graph, s, names)) is not None]
        _bind_agreeing(found, param, targets, always=param == "seed")


def _latent_origin(graph: Graph, node_id: str) -> str:
    """The node at the start of a latent chain (EmptyLatentImage, VAEEncode, …)."""
    seen: set[str] = set()
    current = node_id
    while current not in seen:
        seen.add(current)
        link = next((found for n in _LATENT_LINKS if (found := _link(graph, current, n))), None)
        if link is None:
            return current
        current = link[0]
    return current


def _start_phrase(samplers: Sequence[str]) -> str:
    """'KSampler 3 starts from' / 'KSampler 3 and KSampler 13 start from'."""
    return " and ".join(samplers) + (" start from" if len(samplers) > 1 else " starts from")


def _infer_size(graph: Graph, samplers: Sequence[str], found: _Found) -> None:
    """Bind width, height and batch_size on the empty latent the samplers start from."""
    starts: dict[str, list[str]] = {}
    for sampler in samplers:
        starts.setdefault(_latent_origin(graph, sampler), []).append(f"{_class(graph, sampler)} {sampler}")
    sized = [o for o in starts if all(_is_number(_inputs(graph, o).get(n)) for n in ("width", "height"))]
    for param in ("width", "height", "batch_size"):
        targets = [
            (Binding(node_id=o, input=param), f"the {param} of the latent {_start_phrase(starts[o])}")
            for o in sized
            if _is_number(_inputs(graph, o).get(param))
        ]
        _bind_agreeing(found, param, targets)


def _infer_image(graph: Graph, found: _Found) -> None:
    """Bind input_image to the one LoadImage (or the one titled as the input)."""
    loaders = [
        n for n in _ids(graph) if _class(graph, n) in _IMAGE_LOADERS and isinstance(_inputs(graph, n).get("image"), str)
    ]
    if len(loaders) > 1:
        titled = [n for n in loaders if {"input", "source", "init"} & _title_words(graph, n)]
        if len(titled) != 1:
            listed = ", ".join(_ref(graph, n) for n in loaders)
            found.skip("input_image", f"several images are loaded ({listed}); title the input one 'Input image'")
            return
        loaders = titled
    if loaders:
        found.bind("input_image", [(Binding(node_id=loaders[0], input="image"), "the image it loads")])


def _infer_bindings(graph: Graph, where: str) -> _Found:
    """Read the parameter bindings off the graph's structure (see the module docstring)."""
    found = _Found(graph=graph)
    samplers = _samplers(graph)
    if not samplers:
        found.notes.append("no sampler found (KSampler, SamplerCustom, …): only titles and LoadImage can be bound")
    _infer_prompts(graph, samplers, found, where)
    _infer_sampler_values(graph, samplers, found)
    _infer_size(graph, samplers, found)
    _infer_image(graph, found)
    if not found.bindings:
        raise WorkflowError(
            f"{where}: found nothing Atelier could set (no sampler with a text prompt, no LoadImage); add a "
            'sidecar .meta.json with "bindings", e.g. {"prompt": ["<node id>", "text"]}'
        )
    found.bindings = {p: found.bindings[p] for p in PARAM_KINDS if p in found.bindings}
    return found


# ----------------------------------------------------------------------------- loading


def _check_limit_keys(limits: Mapping[str, Limit], where: str) -> None:
    """Sidecar limits may only name parameters."""
    for param in limits:
        if param not in PARAM_KINDS:
            raise _unknown_param(param, where, "limits")


def load_workflow(name_or_path: str, search_dirs: Sequence[Path] = ()) -> WorkflowTemplate:
    """Load a shipped workflow by name, one from `search_dirs`, or a file (.json API export or ComfyUI PNG)."""
    path = _locate(name_or_path, search_dirs)
    name, where = _name_of(path), str(path)
    graph, ui = _load_graph_file(path)
    sidecar = _load_sidecar(path.with_name(f"{name}.meta.json"))
    _check_limit_keys(sidecar.limits, where)
    found = _Found(graph=graph)
    if sidecar.bindings is not None:
        found.bindings = _resolve_bindings(graph, sidecar.bindings, where)
    else:
        found = _infer_bindings(graph, where)
    _check_binding_values(graph, found.bindings, where)
    return WorkflowTemplate(
        name=name,
        graph=graph,
        bindings=found.bindings,
        catalog=sidecar.catalog,
        limits=sidecar.limits,
        ui_workflow=ui if ui is not None else _load_ui(path.with_name(f"{name}.ui.json")),
        source=path,
        inferred=sidecar.bindings is None,
        inference_notes=found.notes,
        unbound=found.unbound,
    )


# ----------------------------------------------------------------------------- rendering


def _unbound_error(template: WorkflowTemplate, param: str, value: object) -> WorkflowError:
    """The error for a parameter set by the caller that the workflow cannot take."""
    accepts = ", ".join(template.accepts) or "nothing"
    why = f" ({template.unbound[param]})" if param in template.unbound else ""
    return WorkflowError(
        f"workflow '{template.name}' has no input for {param}{why}, but {param}={value!r} was asked for; "
        f"it accepts: {accepts}. Leave {param} out, or choose a workflow that takes it"
    )


def _requested(template: WorkflowTemplate, params: GenerationParams, uploaded_image: str | None) -> dict[str, Any]:
    """Parameter → value for everything the caller set (prompt is dropped when the workflow has none)."""
    wanted = {k: v for k, v in params.model_dump().items() if v is not None}
    if uploaded_image is not None:
        wanted["input_image"] = uploaded_image
    values: dict[str, Any] = {}
    for param, value in wanted.items():
        if param in template.bindings:
            values[param] = float(value) if PARAM_KINDS[param] == "number" else value
        elif param != "prompt":
            raise _unbound_error(template, param, value)
    return values


def _check_multiple(template: WorkflowTemplate, param: str, value: Any, limit: Limit | None) -> None:
    """Width and height must be multiples of 8 (or of the sidecar's `multiple_of`)."""
    step = limit.multiple_of if limit is not None and limit.multiple_of else (8 if param in ("width", "height") else 1)
    if isinstance(value, int) and value % step:
        lower, upper = value - value % step, value - value % step + step
        raise WorkflowError(
            f"{param} {value} is not a multiple of {step}, which workflow '{template.name}' needs; "
            f"use {lower} or {upper}"
        )


def _check_range(template: WorkflowTemplate, param: str, value: Any, limit: Limit | None) -> None:
    """A value must lie within the sidecar's min/max for that parameter."""
    if limit is None or not _is_number(value):
        return
    if (limit.min is not None and value < limit.min) or (limit.max is not None and value > limit.max):
        low = f"{limit.min:g}" if limit.min is not None else "-∞"
        high = f"{limit.max:g}" if limit.max is not None else "∞"
        raise WorkflowError(f"{param} {value} is outside what workflow '{template.name}' can take ({low}..{high})")


def _check_resolution(template: WorkflowTemplate, values: Mapping[str, Any]) -> None:
    """A requested size must not exceed the catalog's max_resolution (as a pixel count)."""
    if template.catalog is None or not ({"width", "height"} & set(values)):
        return
    if not ({"width", "height"} <= set(template.bindings)):
        return
    width = values.get("width", _current(template.graph, template.bindings["width"][0]))
    height = values.get("height", _current(template.graph, template.bindings["height"][0]))
    if width * height > template.catalog.max_pixels:
        raise WorkflowError(
            f"{width}x{height} is {width * height:,} pixels, more than workflow '{template.name}' makes well "
            f"({template.catalog.max_resolution}, {template.catalog.max_pixels:,} pixels); choose a smaller size "
            "or a workflow with a larger max_resolution (see `atelier workflows`)"
        )


def render(
    template: WorkflowTemplate, params: GenerationParams, *, uploaded_image: str | None = None
) -> dict[str, Any]:
    """A copy of the graph with every parameter the caller set written into its bound inputs.

    `uploaded_image` is the name ComfyUI gave an uploaded input image; without it `params.input_image`
    is written as is (a name already in ComfyUI's input folder). The seed is never invented here: pass
    one (see `random_seed`) or the workflow's own seed is kept.
    """
    values = _requested(template, params, uploaded_image)
    for param, value in values.items():
        limit = template.limits.get(param)
        _check_multiple(template, param, value, limit)
        _check_range(template, param, value, limit)
    _check_resolution(template, values)
    graph = copy.deepcopy(template.graph)
    for param, value in values.items():
        for target in template.bindings[param]:
            graph[target.node_id]["inputs"][target.input] = value
    return graph


# ----------------------------------------------------------------------------- object_info checks


@dataclass(frozen=True)
class _Spec:
    """One input's declaration in object_info."""

    type: str
    options: list[Any] | None
    extra: dict[str, Any]


def _spec(raw: Any) -> _Spec:
    """Parse `[type, {...}]`, `[[options], {...}]` or `["COMBO", {"options": [...]}]`."""
    raw = raw if isinstance(raw, list | tuple) and raw else ["*"]
    extra = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(raw[0], list):
        return _Spec("COMBO", list(raw[0]), extra)
    if raw[0] == "COMBO":
        return _Spec("COMBO", list(extra.get("options") or []), extra)
    return _Spec(str(raw[0]), None, extra)


def _declared(info: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A class's required and optional input declarations."""
    inputs = info.get("input") or {}
    return dict(inputs.get("required") or {}), dict(inputs.get("optional") or {})


def _types_match(received: Any, expected: str) -> bool:
    """ComfyUI's link type rule: '*' matches anything, 'A,B' matches A or B."""
    got = "COMBO" if isinstance(received, list) else str(received)
    if "*" in (got, expected):
        return True
    return bool(set(got.split(",")) & set(expected.split(",")))


def _check_link(
    graph: Mapping[str, Any], node: str, name: str, link: list[Any], spec: _Spec, info: Mapping[str, Any]
) -> list[str]:
    """Problems with one linked input: missing source, bad slot, wrong type."""
    where = f"node {node} ({_class(graph, node)}) input '{name}'"
    if len(link) != 2:
        return [f"{where} holds {link!r}, which is not a link [node_id, output_index]"]
    source, slot = str(link[0]), link[1]
    if source not in graph:
        return [f"{where} links to node {source}, which is not in the workflow"]
    source_info = info.get(_class(graph, source))
    if source_info is None:
        return []
    outputs = list(source_info.get("output") or [])
    if not isinstance(slot, int) or not 0 <= slot < len(outputs):
        return [f"{where} links to output {slot} of {_ref(graph, source)}, which has outputs 0..{len(outputs) - 1}"]
    if not _types_match(outputs[slot], spec.type):
        return [f"{where} expects {spec.type} but node {source} output {slot} gives {outputs[slot]}"]
    return []


def _is_file_combo(name: str, value: Any, spec: _Spec) -> bool:
    """Whether a COMBO lists files (models or uploads) that depend on the server's folders."""
    if name in MODEL_FOLDERS or any(spec.extra.get(flag) for flag in _UPLOAD_FLAGS):
        return True
    return isinstance(value, str) and value.lower().endswith(_MODEL_SUFFIXES)


def _range_problem(where: str, value: float, extra: Mapping[str, Any]) -> list[str]:
    """A number outside its declared min/max."""
    low, high = extra.get("min"), extra.get("max")
    if _is_number(low) and value < low:
        return [f"{where} is {value}, below the minimum {low}"]
    if _is_number(high) and value > high:
        return [f"{where} is {value}, above the maximum {high}"]
    return []


def _literal_ok(kind: str, value: object) -> bool:
    """Whether a literal fits a widget type (INT, FLOAT, STRING, BOOLEAN)."""
    if kind == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FLOAT":
        return _is_number(value)
    return isinstance(value, str) if kind == "STRING" else isinstance(value, bool)


def _check_combo(where: str, name: str, value: Any, spec: _Spec, check_models: bool) -> list[str]:
    """A COMBO value must be one of its options (file COMBOs only with check_models)."""
    if (not check_models and _is_file_combo(name, value, spec)) or value in (spec.options or []):
        return []
    shown = ", ".join(map(str, (spec.options or [])[:12])) or "none installed"
    return [f"{where} is {value!r}, not one of its options ({shown})"]


def _check_value(where: str, name: str, value: Any, spec: _Spec, check_models: bool) -> list[str]:
    """Problems with one literal input value."""
    if spec.type == "COMBO":
        return _check_combo(where, name, value, spec, check_models)
    if spec.type not in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        return [] if spec.type == "*" else [f"{where} needs a link from a {spec.type} output, not the value {value!r}"]
    if not _literal_ok(spec.type, value):
        return [f"{where} is {value!r}, not a {spec.type}"]
    return _range_problem(where, value, spec.extra) if spec.type in ("INT", "FLOAT") else []


def _check_node(graph: Mapping[str, Any], node: str, info: Mapping[str, Any], check_models: bool) -> list[str]:
    """Every problem of one node against object_info."""
    entry = graph[node]
    if not isinstance(entry, dict) or not isinstance(entry.get("inputs", {}), dict):
        return [f"node {node} is not a node object with 'class_type' and 'inputs'"]
    cls = _class(graph, node)
    if cls not in info:
        return [f"node {node}: unknown node class '{cls}'; install the custom node that provides it, or replace it"]
    required, optional = _declared(info[cls])
    inputs = _inputs(graph, node)
    problems = [f"node {node} ({cls}) is missing its required input '{n}'" for n in required if n not in inputs]
    for name, value in inputs.items():
        if name not in required and name not in optional:
            continue
        spec = _spec(required.get(name, optional.get(name)))
        if isinstance(value, list):
            problems += _check_link(graph, node, name, value, spec, info)
        else:
            problems += _check_value(f"node {node} ({cls}) input '{name}'", name, value, spec, check_models)
    return problems


def check_against_object_info(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], *, check_models: bool = False
) -> list[str]:
    """Everything ComfyUI would refuse in this graph, as sentences (an empty list means it is fine).

    Checks node classes, required inputs, links (source node, output slot, type), INT/FLOAT min/max,
    BOOLEAN/STRING types and COMBO options. COMBOs of files (models, LoadImage uploads) depend on what
    the server has installed and are only checked with `check_models=True`.
    """
    problems: list[str] = []
    for node in sorted(graph, key=_natural):
        problems += _check_node(graph, node, object_info, check_models)
    classes = [graph[n].get("class_type") for n in graph if isinstance(graph[n], dict)]
    if not any((object_info.get(str(c)) or {}).get("output_node") for c in classes):
        problems.append("the workflow has no output node (SaveImage, PreviewImage, …), so ComfyUI would run nothing")
    return problems


def check_bindings_against_object_info(template: WorkflowTemplate, object_info: Mapping[str, Any]) -> list[str]:
    """Problems with the template's bindings: inputs the node class does not declare, or of the wrong type."""
    problems: list[str] = []
    for param, targets in template.bindings.items():
        for target in targets:
            cls = _class(template.graph, target.node_id)
            if cls not in object_info:
                problems.append(f"'{param}' is bound to node {target.node_id}, whose class '{cls}' is unknown")
                continue
            required, optional = _declared(object_info[cls])
            raw = required.get(target.input, optional.get(target.input))
            if raw is None:
                problems.append(f"'{param}' is bound to '{target.input}', which {cls} does not declare")
            elif _spec(raw).type not in _KIND_TYPES[PARAM_KINDS[param]]:
                problems.append(f"'{param}' is bound to {cls}.{target.input} of type {_spec(raw).type}")
    return problems


# ----------------------------------------------------------------------------- models


def _model_inputs(graph: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(folder, file) for every loader input that names a model file."""
    for node in sorted(graph, key=_natural):
        loader = "Loader" in _class(graph, node)
        for name, value in _inputs(graph, node).items():
            folder = MODEL_FOLDERS.get(name)
            if folder and isinstance(value, str) and (loader or value.lower().endswith(_MODEL_SUFFIXES)):
                yield folder, value


def required_models(template: WorkflowTemplate | Mapping[str, Any]) -> dict[str, list[str]]:
    """Model folder → files the workflow loads (e.g. {'checkpoints': ['v1-5-pruned-emaonly.safetensors']})."""
    graph = template.graph if isinstance(template, WorkflowTemplate) else template
    models: dict[str, list[str]] = {}
    for folder, filename in _model_inputs(graph):
        files = models.setdefault(folder, [])
        if filename not in files:
            files.append(filename)
    return models
