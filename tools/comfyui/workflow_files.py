"""Reading workflow files (API JSON, PNG, UI exports), sidecars and their bindings, and finding workflows."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from atelier.tools.comfyui.template_graph import (
    EXPORT_HINT,
    KIND_WORDS,
    PARAM_KINDS,
    Graph,
    is_link,
    is_number,
    node_ids,
    node_inputs,
    node_ref,
    node_title,
)
from atelier.tools.comfyui.template_models import Binding, Sidecar, SidecarTarget
from atelier.tools.errors import WorkflowError
from atelier.workflows import SHIPPED_DIR

# ----------------------------------------------------------------------------- reading files


def _read_json_text(text: str, where: str) -> Any:
    """Parse JSON; a WorkflowError with line and column when it is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            f"fix the file there, or export it again ({EXPORT_HINT})"
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
    name = workflow_name(path)
    return WorkflowError(
        f"{path} is a ComfyUI UI workflow (it has 'nodes' and 'links' arrays), not the API format Atelier "
        f"runs. Open it in ComfyUI and export it in API format ({EXPORT_HINT}), then load that file. "
        f"Keep this file beside the export as {name}.ui.json so saved images open in ComfyUI with their layout."
    )


def _unwrap(data: Any, path: Path) -> tuple[Any, Any]:
    """Split a parsed file into (API graph, UI workflow or None)."""
    if not isinstance(data, dict):
        raise WorkflowError(f"{path}: a workflow must be a JSON object mapping node ids to nodes ({EXPORT_HINT})")
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
        raise WorkflowError(f"{where}: node {node_id} is not a node object with a 'class_type' ({EXPORT_HINT})")
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
    for node_id in node_ids(graph):
        for name, value in node_inputs(graph, node_id).items():
            if is_link(value) and value[0] not in graph:
                raise WorkflowError(
                    f"{where}: {node_ref(graph, node_id)} input '{name}' links to node {value[0]}, which is not "
                    "in the workflow; reconnect or remove that input in ComfyUI and export again"
                )


def _normalize_graph(raw: Any, where: str) -> Graph:
    """Check the graph's shape and links; return it with string link ids."""
    if not isinstance(raw, dict) or not raw:
        raise WorkflowError(f"{where}: the workflow has no nodes ({EXPORT_HINT})")
    graph = {str(node_id): _normalize_node(str(node_id), node, where) for node_id, node in raw.items()}
    _check_links(graph, where)
    return graph


def workflow_name(path: Path) -> str:
    """The workflow name of a file: `txt2img` for txt2img.json."""
    return path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.stem


def load_graph_file(path: Path) -> tuple[Graph, dict[str, Any] | None]:
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


def load_sidecar(path: Path) -> Sidecar:
    """`NAME.meta.json` beside the workflow (an empty Sidecar when there is none)."""
    if not path.is_file():
        return Sidecar()
    data = _read_json(path)
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"{path} is not a valid workflow sidecar: {_pydantic_message(exc)}") from None


def load_ui(path: Path) -> dict[str, Any] | None:
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
                    found[workflow_name(path)] = path
    return found


def locate_workflow(name_or_path: str, search_dirs: Sequence[Path]) -> Path:
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


def _parse_target(spec: object, param: str, where: str) -> SidecarTarget:
    """One target of a sidecar binding."""
    if _is_pair(spec):
        assert isinstance(spec, list)
        return SidecarTarget(node=str(spec[0]), input=spec[1])
    try:
        target = SidecarTarget.model_validate(spec)
    except ValidationError:
        target = None
    if target is None or (target.node is None) == (target.title is None):
        raise WorkflowError(
            f'{where}: binding \'{param}\' has the target {spec!r}; write ["node_id", "input"], '
            '{"node": "node_id", "input": "input"} or {"title": "Node title", "input": "input"}'
        )
    return target


def _parse_targets(spec: object, param: str, where: str) -> list[SidecarTarget]:
    """The targets of one sidecar binding (a single target or a list of them)."""
    if isinstance(spec, list) and spec and not _is_pair(spec):
        return [_parse_target(item, param, where) for item in spec]
    return [_parse_target(spec, param, where)]


def _node_by_title(graph: Graph, title: str, param: str, where: str) -> str:
    """The one node with this `_meta.title` (exact, else case-insensitive)."""
    matches = [n for n in node_ids(graph) if node_title(graph, n) == title]
    matches = matches or [n for n in node_ids(graph) if node_title(graph, n).casefold() == title.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        titles = sorted({node_title(graph, n) for n in graph if node_title(graph, n)})
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
    inputs = node_inputs(graph, node_id)
    if name not in inputs:
        raise WorkflowError(
            f"{where}: binding '{param}' points at input '{name}' of {node_ref(graph, node_id)}, which has no such "
            f"input; its inputs: {', '.join(inputs) or 'none'}"
        )
    if is_link(inputs[name]):
        source = inputs[name][0]
        raise WorkflowError(
            f"{where}: binding '{param}' points at input '{name}' of {node_ref(graph, node_id)}, which is linked "
            f"to {node_ref(graph, source)}; bind the value on node {source} instead"
        )


def _resolve_target(graph: Graph, target: SidecarTarget, param: str, where: str) -> Binding:
    """A sidecar target as a Binding to an existing node input."""
    if target.title is not None:
        node_id = _node_by_title(graph, target.title, param, where)
    else:
        node_id = str(target.node)
        if node_id not in graph:
            raise WorkflowError(
                f"{where}: binding '{param}' points at node {node_id}, which is not in the workflow; "
                f"its nodes: {', '.join(node_ids(graph))}"
            )
    _require_input(graph, node_id, target.input, param, where)
    return Binding(node_id=node_id, input=target.input)


def unknown_param_error(param: str, where: str, what: str) -> WorkflowError:
    """The error for a sidecar key that is not a GenerationParams field."""
    return WorkflowError(
        f"{where}: unknown parameter '{param}' in {what}; Atelier's parameters are {', '.join(PARAM_KINDS)}"
    )


def resolve_bindings(graph: Graph, raw: Mapping[str, Any], where: str) -> dict[str, list[Binding]]:
    """Sidecar bindings resolved to node ids, each checked to exist."""
    bindings: dict[str, list[Binding]] = {}
    for param, spec in raw.items():
        if param not in PARAM_KINDS:
            raise unknown_param_error(param, where, "bindings")
        targets = [_resolve_target(graph, t, param, where) for t in _parse_targets(spec, param, where)]
        bindings[param] = list(dict.fromkeys(targets))
    return bindings


def _kind_ok(kind: str, value: object) -> bool:
    """Whether a node's current value is of a parameter kind."""
    if kind == "text":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return is_number(value)


def check_binding_values(graph: Graph, bindings: Mapping[str, list[Binding]], where: str) -> None:
    """Every bound input must currently hold a value of its parameter's kind."""
    for param, targets in bindings.items():
        kind = PARAM_KINDS[param]
        for target in targets:
            value = node_inputs(graph, target.node_id)[target.input]
            if not _kind_ok(kind, value):
                raise WorkflowError(
                    f"{where}: '{param}' is bound to input '{target.input}' of {node_ref(graph, target.node_id)}, "
                    f"which holds {value!r}; {param} needs an input holding {KIND_WORDS[kind]}"
                )


