"""Prompt validation shaped like ComfyUI 0.3.64's (execution.validate_prompt), for the fake server."""

from __future__ import annotations

import traceback
from typing import Any

Prompt = dict[str, dict[str, Any]]
Problem = dict[str, Any]

# Where ComfyUI keeps the files each model input lists (input name → models/<folder>).
MODEL_INPUTS: dict[str, str] = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "control_net_name": "controlnet",
    "clip_name": "text_encoders", "clip_name1": "text_encoders", "clip_name2": "text_encoders",
    "clip_name3": "text_encoders", "unet_name": "diffusion_models", "style_model_name": "style_models",
    "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
}


class ValidationFailed(Exception):
    """The prompt is refused: carries ComfyUI's 400 body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.body = body


def _error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def combo_options(config: list[Any]) -> list[Any] | None:
    """The allowed values of a COMBO input (both object_info formats), or None for other types."""
    if config and isinstance(config[0], list):
        return list(config[0])
    if config and config[0] == "COMBO" and len(config) > 1:
        return list(config[1].get("options", []))
    return None


def _list_info(options: list[Any]) -> str:
    return str(options) if len(options) <= 20 else f"(list of length {len(options)})"


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class Validator:
    """Validates one prompt against an object_info mapping."""

    def __init__(self, object_info: dict[str, Any], prompt: Prompt) -> None:
        self.info = object_info
        self.prompt = prompt
        self.checked: dict[str, list[Problem]] = {}

    def _input_problems(self, node_id: str) -> list[Problem]:
        node = self.prompt[node_id]
        spec = self.info[node["class_type"]]["input"]
        inputs = node.get("inputs", {})
        problems: list[Problem] = []
        sections = [("required", spec.get("required", {})), ("optional", spec.get("optional", {}))]
        for section, entries in sections:
            for name, config in entries.items():
                if name not in inputs:
                    if section == "required":
                        problems.append({**_error("required_input_missing", "Required input is missing", name),
                                         "extra_info": {"input_name": name}})
                    continue
                problems += self._check_value(node_id, name, config, inputs[name])
        return problems

    def _check_value(self, node_id: str, name: str, config: list[Any], value: Any) -> list[Problem]:
        expected = config[0]
        options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
        if _is_link(value):
            source_id, slot = value
            source = self.prompt[source_id]  # KeyError for a missing node, as in ComfyUI
            outputs = self.info[source["class_type"]]["output"]
            received = outputs[slot] if slot < len(outputs) else None
            wanted = expected if isinstance(expected, str) else "COMBO"
            if received != wanted and "*" not in (received, wanted) and wanted != "COMBO":
                return [{"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                         "details": f"{name}, received_type({received}) mismatch input_type({wanted})",
                         "extra_info": {"input_name": name, "input_config": config, "received_type": received,
                                        "linked_node": value}}]
            self.validate(source_id)
            return []
        extra = {"input_name": name, "input_config": config, "received_value": value}
        allowed = combo_options(config)
        if allowed is not None:
            if value not in allowed:
                return [{"type": "value_not_in_list", "message": "Value not in list",
                         "details": f"{name}: '{value}' not in {_list_info(allowed)}", "extra_info": extra}]
            return []
        if expected in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return [{"type": "invalid_input_type", "message": f"Failed to convert an input value to a {expected}",
                         "details": f"{name}, {value}", "extra_info": {**extra, "exception_type": "ValueError"}}]
            if "min" in options and value < options["min"]:
                message = f"Value {value} smaller than min of {options['min']}"
                return [{"type": "value_smaller_than_min", "message": message, "details": name, "extra_info": extra}]
            if "max" in options and value > options["max"]:
                message = f"Value {value} bigger than max of {options['max']}"
                return [{"type": "value_bigger_than_max", "message": message, "details": name, "extra_info": extra}]
        return []

    def validate(self, node_id: str) -> list[Problem]:
        """Problems of this node and (recorded separately) of every node upstream of it."""
        if node_id in self.checked:
            return self.checked[node_id]
        self.checked[node_id] = []
        try:
            problems = self._input_problems(node_id)
        except Exception as exc:  # ComfyUI reports these as exception_during_validation
            problems = [{"type": "exception_during_validation", "message": "Exception when validating node",
                         "details": str(exc), "extra_info": {
                             "exception_type": type(exc).__name__,
                             "traceback": traceback.format_tb(exc.__traceback__)}}]
        self.checked[node_id] = problems
        return problems


def validate_prompt(object_info: dict[str, Any], prompt: Any) -> list[str]:
    """Return the output node ids to execute, or raise ValidationFailed with ComfyUI's 400 body."""
    if not isinstance(prompt, dict):
        raise ValidationFailed({"error": _error("invalid_prompt", "Invalid prompt: prompt must be a dict"),
                                "node_errors": {}})
    outputs = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type is None:
            raise ValidationFailed({"error": _error(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'"), "node_errors": {}})
        if class_type not in object_info:
            raise ValidationFailed({"error": _error(
                "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'"), "node_errors": {}})
        if object_info[class_type].get("output_node"):
            outputs.append(node_id)
    if not outputs:
        raise ValidationFailed({"error": _error("prompt_no_outputs", "Prompt has no outputs"), "node_errors": {}})
    validator = Validator(object_info, prompt)
    details = ""
    for output in outputs:
        problems = validator.validate(output)
        if problems and problems[0]["type"] == "exception_during_validation":
            details = f"Exception when validating node: {problems[0]['details']}"
    failing = {node: probs for node, probs in validator.checked.items() if probs}
    if not failing:
        return outputs
    node_errors = {
        node: {"errors": probs, "dependent_outputs": outputs, "class_type": prompt[node]["class_type"]}
        for node, probs in failing.items()
    }
    raise ValidationFailed({"error": {"type": "prompt_outputs_failed_validation",
                                      "message": "Prompt outputs failed validation", "details": details,
                                      "extra_info": {}}, "node_errors": node_errors})
