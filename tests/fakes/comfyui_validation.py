"""Prompt validation shaped like ComfyUI 0.3.64's execution.validate_prompt / validate_inputs, for the fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.comfyui_catalog import combo_options

Problem = dict[str, Any]

# Nodes with a VALIDATE_INPUTS hook (their input skips the range/list checks and is checked by the hook instead).
CUSTOM_VALIDATION = {"LoadImage": "image", "LoadImageMask": "image"}
ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}

# Traceback frames as the real server formats them (paths shortened to <comfyui> as in the transcript).
_PROMPT_FRAME = (
    '  File "<comfyui>/execution.py", line 1010, in validate_prompt\n'
    "    m = await validate_inputs(prompt_id, prompt, o, validated)\n"
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
)
_INNER_FRAME = (
    '  File "<comfyui>/execution.py", line 806, in validate_inputs\n'
    "    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n"
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
)
_SITE_FRAMES = {
    "link": ('  File "<comfyui>/execution.py", line 788, in validate_inputs\n'
             "    o_class_type = prompt[o_id]['class_type']\n"
             "                   ~~~~~~^^^^^^\n"),
    "slot": ('  File "<comfyui>/execution.py", line 790, in validate_inputs\n'
             "    received_type = r[val[1]]\n"
             "                    ~^^^^^^^^\n"),
    "node": ('  File "<comfyui>/execution.py", line 740, in validate_inputs\n'
             "    inputs = prompt[unique_id]['inputs']\n"
             "             ~~~~~~~~~~~~~~~~~^^^^^^^^^^\n"),
    "other": ('  File "<comfyui>/execution.py", line 760, in validate_inputs\n'
              "    input_type, input_category, extra_info = get_input_info(obj_class, x, class_inputs)\n"),
}


@dataclass
class Validation:
    """The outcome of validate_prompt: ok, the top-level error, the outputs to run, and per-node errors."""

    ok: bool
    error: Problem | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def full_type_name(exc: BaseException) -> str:
    """ComfyUI's exception type name: bare for builtins, module-qualified otherwise."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _fail(kind: str, message: str, details: str = "") -> Validation:
    return Validation(False, {"type": kind, "message": message, "details": details, "extra_info": {}})


def annotated_path(name: str, input_dir: Path) -> Path:
    """Where an image name like `a.png` or `a.png [output]` points (folder_paths.get_annotated_filepath)."""
    base = input_dir
    for suffix, kind in ANNOTATIONS.items():
        if name.endswith(suffix):
            name, base = name[: -len(suffix)], input_dir.parent / kind
            break
    return base / name


def node_input_matches(received: Any, wanted: Any) -> bool:
    """comfy_execution.validation.validate_node_input: equal, '*' or overlapping comma-separated types."""
    if received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got, want = {t.strip() for t in received.split(",")}, {t.strip() for t in wanted.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _site(exc: BaseException, site: str) -> BaseException:
    if not hasattr(exc, "comfy_frames"):
        setattr(exc, "comfy_frames", [_SITE_FRAMES[site]])  # noqa: B010 - where the real code raised it
    return exc


def _frames(exc: BaseException) -> list[str]:
    frames: list[str] = getattr(exc, "comfy_frames", [_SITE_FRAMES["other"]])
    return frames


class _Validator:
    """Validates nodes recursively, remembering each node's verdict like ComfyUI's `validated` dict."""

    def __init__(self, info: dict[str, Any], prompt: dict[str, Any], input_dir: Path, v3_combos: bool) -> None:
        self.info = info
        self.prompt = prompt
        self.input_dir = input_dir
        self.v3_combos = v3_combos
        self.validated: dict[str, tuple[bool, list[Problem]]] = {}
        self._visiting: set[str] = set()

    def node(self, node_id: Any) -> dict[str, Any]:
        try:
            node: dict[str, Any] = self.prompt[node_id]
            return node
        except KeyError as exc:
            raise _site(exc, "link") from None

    def validate(self, node_id: str) -> tuple[bool, list[Problem]]:
        """ComfyUI's validate_inputs for one node (and, recursively, what it links to)."""
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in self._visiting:
            raise _site(RecursionError("maximum recursion depth exceeded"), "other")
        self._visiting.add(node_id)
        try:
            verdict = self._validate(node_id)
        finally:
            self._visiting.discard(node_id)
        self.validated[node_id] = verdict
        return verdict

    def _validate(self, node_id: str) -> tuple[bool, list[Problem]]:
        try:
            inputs = self.prompt[node_id]["inputs"]
        except (KeyError, TypeError) as exc:
            raise _site(exc, "node") from None
        class_type = self.prompt[node_id]["class_type"]
        spec = self.info[class_type]["input"]
        required, optional = spec.get("required") or {}, spec.get("optional") or {}
        names = list(required) + [name for name in optional if name not in required]
        custom = CUSTOM_VALIDATION.get(class_type)
        errors: list[Problem] = []
        valid = True
        for name in names:
            config: list[Any] = required[name] if name in required else optional[name]
            input_type = config[0]
            extra = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
            if name not in inputs:
                if name in required:
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": name, "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            input_config = [input_type, extra]
            if isinstance(value, list):
                problem, upstream_ok = self._linked(name, value, input_type, input_config)
                if problem is not None:
                    errors.append(problem)
                valid = valid and upstream_ok
                continue
            problem = self._constant(inputs, name, value, input_type, extra, input_config, checked=name != custom)
            if problem is not None:
                errors.append(problem)
        if custom is not None and custom in inputs and not isinstance(inputs[custom], list):
            image = inputs[custom]
            if not annotated_path(str(image), self.input_dir).exists():
                errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                               "details": f"{custom} - Invalid image file: {image}",
                               "extra_info": {"input_name": custom}})
        return (not errors and valid), errors

    def _linked(self, name: str, value: list[Any], input_type: Any, input_config: list[Any]
                ) -> tuple[Problem | None, bool]:
        if len(value) != 2:
            return {"type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    "details": name, "extra_info": {"input_name": name, "input_config": input_config,
                                                    "received_value": value}}, True
        source_id, slot = value
        source_class = self.node(source_id)["class_type"]
        try:
            received = tuple(self.info[source_class]["output"])[slot]
        except (IndexError, TypeError) as exc:
            raise _site(exc, "slot") from None
        if not node_input_matches(received, input_type):
            return {"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                    "details": f"{name}, received_type({received}) mismatch input_type({input_type})",
                    "extra_info": {"input_name": name, "input_config": input_config, "received_type": received,
                                   "linked_node": value}}, True
        try:
            upstream_ok, _ = self.validate(source_id)
        except Exception as exc:
            self.validated[source_id] = (False, [{
                "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                "details": str(exc), "extra_info": {
                    "input_name": name, "input_config": input_config, "exception_message": str(exc),
                    "exception_type": full_type_name(exc), "traceback": [_INNER_FRAME, *_frames(exc)],
                    "linked_node": value}}])
            return None, False
        return None, upstream_ok

    def _constant(self, inputs: dict[str, Any], name: str, value: Any, input_type: Any, extra: dict[str, Any],
                  input_config: list[Any], *, checked: bool) -> Problem | None:
        try:
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            converter = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                input_type if isinstance(input_type, str) else "")
            if converter is not None:
                value = inputs[name] = converter(value)
        except Exception as exc:
            return {"type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {input_type} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": {"input_name": name, "input_config": input_config, "received_value": value,
                                   "exception_message": str(exc)}}
        if not checked:
            return None
        received = {"input_name": name, "input_config": input_config, "received_value": value}
        if "min" in extra and value < extra["min"]:
            return {"type": "value_smaller_than_min", "message": f"Value {value} smaller than min of {extra['min']}",
                    "details": name, "extra_info": received}
        if "max" in extra and value > extra["max"]:
            return {"type": "value_bigger_than_max", "message": f"Value {value} bigger than max of {extra['max']}",
                    "details": name, "extra_info": received}
        options = combo_options(input_config) if isinstance(input_type, list) or self.v3_combos else None
        if options is not None and value not in options:
            if len(options) > 20:
                listed, received = f"(list of length {len(options)})", {**received, "input_config": None}
            else:
                listed = str(options)
            return {"type": "value_not_in_list", "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {listed}", "extra_info": received}
        return None


def validate_prompt(info: dict[str, Any], prompt: dict[str, Any], *, input_dir: Path,
                    partial_targets: list[str] | None = None, v3_combos: bool = False) -> Validation:
    """Validate an API prompt against object_info; converts INT/FLOAT/STRING/BOOLEAN inputs in place, as ComfyUI."""
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _fail("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                         f"Node ID '#{node_id}'")
        class_type = node["class_type"]
        if info.get(class_type) is None:
            return _fail("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                         f"Node ID '#{node_id}'")
        if info[class_type].get("output_node") is True and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return _fail("prompt_no_outputs", "Prompt has no outputs")
    validator = _Validator(info, prompt, input_dir, v3_combos)
    good: list[str] = []
    failures: list[tuple[str, list[Problem]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            ok, reasons = validator.validate(output)
        except Exception as exc:
            ok, reasons = False, [{"type": "exception_during_validation", "message": "Exception when validating node",
                                   "details": str(exc), "extra_info": {
                                       "exception_type": full_type_name(exc),
                                       "traceback": [_PROMPT_FRAME, *_frames(exc)]}}]
            validator.validated[output] = (False, reasons)
        if ok:
            good.append(output)
            continue
        failures.append((output, reasons))
        # Like ComfyUI: every failing node seen so far lists this output as dependent, upstream of it or not.
        for node_id, (node_ok, node_reasons) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                     "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failures for r in reasons)
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": details, "extra_info": {}}
        return Validation(False, error, [], node_errors)
    return Validation(True, None, good, node_errors)
