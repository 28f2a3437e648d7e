"""Checking a workflow graph and its bindings against ComfyUI's /object_info, and listing the models it needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from atelier.tools.comfyui.template_graph import (
    KIND_TYPES,
    PARAM_KINDS,
    UPLOAD_FLAGS,
    is_number,
    natural_key,
    node_class,
    node_inputs,
    node_ref,
)
from atelier.tools.comfyui.template_models import WorkflowTemplate
from atelier.tools.errors import MODEL_FOLDERS, MODEL_SUFFIXES

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
    where = f"node {node} ({node_class(graph, node)}) input '{name}'"
    if len(link) != 2:
        return [f"{where} holds {link!r}, which is not a link [node_id, output_index]"]
    source, slot = str(link[0]), link[1]
    if source not in graph:
        return [f"{where} links to node {source}, which is not in the workflow"]
    source_info = info.get(node_class(graph, source))
    if source_info is None:
        return []
    outputs = list(source_info.get("output") or [])
    if not isinstance(slot, int) or not 0 <= slot < len(outputs):
        return [f"{where} links to output {slot} of {node_ref(graph, source)}, which has outputs 0..{len(outputs) - 1}"]
    if not _types_match(outputs[slot], spec.type):
        return [f"{where} expects {spec.type} but node {source} output {slot} gives {outputs[slot]}"]
    return []


def _is_file_combo(value: Any, spec: _Spec) -> bool:
    """Whether a COMBO value names a file that depends on the server's folders: a model file (by its suffix) or an
    upload (LoadImage & co.). Only such values may be missing from the options; any other must be one of them."""
    if any(spec.extra.get(flag) for flag in UPLOAD_FLAGS):
        return True
    return isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)


def _range_problem(where: str, value: float, extra: Mapping[str, Any]) -> list[str]:
    """A number outside its declared min/max."""
    low, high = extra.get("min"), extra.get("max")
    if is_number(low) and value < low:
        return [f"{where} is {value}, below the minimum {low}"]
    if is_number(high) and value > high:
        return [f"{where} is {value}, above the maximum {high}"]
    return []


def _literal_ok(kind: str, value: object) -> bool:
    """Whether a literal fits a widget type (INT, FLOAT, STRING, BOOLEAN)."""
    if kind == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FLOAT":
        return is_number(value)
    return isinstance(value, str) if kind == "STRING" else isinstance(value, bool)


def _check_combo(where: str, value: Any, spec: _Spec, check_models: bool) -> list[str]:
    """A COMBO value must be one of its options (file COMBOs only with check_models)."""
    if (not check_models and _is_file_combo(value, spec)) or value in (spec.options or []):
        return []
    shown = ", ".join(map(str, (spec.options or [])[:12])) or "none installed"
    more = f", … {len(spec.options or []) - 12} more" if len(spec.options or []) > 12 else ""
    return [f"{where} is {value!r}, not one of its options ({shown}{more})"]


def _check_value(where: str, value: Any, spec: _Spec, check_models: bool) -> list[str]:
    """Problems with one literal input value."""
    if spec.type == "COMBO":
        return _check_combo(where, value, spec, check_models)
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
    cls = node_class(graph, node)
    if cls not in info:
        return [f"node {node}: unknown node class '{cls}'; install the custom node that provides it, or replace it"]
    required, optional = _declared(info[cls])
    inputs = node_inputs(graph, node)
    problems = [f"node {node} ({cls}) is missing its required input '{n}' ({_spec(required[n]).type})"
                for n in required if n not in inputs]
    for name, value in inputs.items():
        if name not in required and name not in optional:
            known = ", ".join([*required, *optional]) or "none"
            problems.append(f"node {node} ({cls}) has an input '{name}', which {cls} does not declare (a typo, or a "
                            f"node from another ComfyUI version?); its inputs: {known}")
            continue
        spec = _spec(required.get(name, optional.get(name)))
        if isinstance(value, list):
            problems += _check_link(graph, node, name, value, spec, info)
        else:
            problems += _check_value(f"node {node} ({cls}) input '{name}'", value, spec, check_models)
    return problems


def check_against_object_info(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], *, check_models: bool = False
) -> list[str]:
    """Everything ComfyUI would refuse in this graph, as sentences (an empty list means it is fine).

    Checks node classes, input names (each must be declared), required inputs, links (source node, output
    slot, type), literal types (INT, FLOAT, STRING, BOOLEAN; a value where a link is needed), INT/FLOAT
    min/max and COMBO options. A COMBO value that names a file (a model file by its suffix, or an upload
    such as LoadImage's image) depends on what the server has installed and is only checked with
    `check_models=True`; every other COMBO value (sampler, scheduler, CLIP type, weight dtype, …) must be
    one of its options.
    """
    problems: list[str] = []
    for node in sorted(graph, key=natural_key):
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
            cls = node_class(template.graph, target.node_id)
            if cls not in object_info:
                problems.append(f"'{param}' is bound to node {target.node_id}, whose class '{cls}' is unknown")
                continue
            required, optional = _declared(object_info[cls])
            raw = required.get(target.input, optional.get(target.input))
            if raw is None:
                problems.append(f"'{param}' is bound to '{target.input}', which {cls} does not declare")
            elif _spec(raw).type not in KIND_TYPES[PARAM_KINDS[param]]:
                problems.append(f"'{param}' is bound to {cls}.{target.input} of type {_spec(raw).type}")
    return problems


# ----------------------------------------------------------------------------- models


def _model_inputs(graph: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(folder, file) for every loader input that names a model file."""
    for node in sorted(graph, key=natural_key):
        loader = "Loader" in node_class(graph, node)
        for name, value in node_inputs(graph, node).items():
            folder = MODEL_FOLDERS.get(name)
            if folder and isinstance(value, str) and (loader or value.lower().endswith(MODEL_SUFFIXES)):
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

