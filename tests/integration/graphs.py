"""Small API-format graphs for integration tests, shaped like the transcript's (weight-free probe nodes)."""

from __future__ import annotations

from typing import Any


def probe(
    text: str = "a red fox in snow", *, steps: int = 3, step_seconds: float = 0.0, seed: int = 1
) -> dict[str, Any]:
    """ProbeTextToImage → SaveImage, as in the transcript's success case."""
    return {
        "1": {"class_type": "ProbeTextToImage", "inputs": {
            "text": text, "width": 32, "height": 32, "steps": steps, "seed": seed, "step_seconds": step_seconds},
            "_meta": {"title": "Positive prompt"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "atelier"}},
    }


def probe_fail() -> dict[str, Any]:
    """ProbeTextToImage → ProbeFail → SaveImage: raises RuntimeError('boom') in node 2."""
    graph = probe("will fail")
    graph["2"] = {"class_type": "ProbeFail", "inputs": {"image": ["1", 0], "message": "boom"}}
    graph["9"]["inputs"]["images"] = ["2", 0]
    return graph


def missing_link() -> dict[str, Any]:
    """SaveImage fed by a node that does not exist."""
    graph = probe("x")
    graph["9"]["inputs"]["images"] = ["7", 0]
    return graph


def out_of_range() -> dict[str, Any]:
    """Width below ProbeTextToImage's minimum of 8."""
    graph = probe("x")
    graph["1"]["inputs"]["width"] = 1
    return graph


def unknown_node() -> dict[str, Any]:
    """A class ComfyUI does not have."""
    return {"1": {"class_type": "NoSuchNode", "inputs": {}}}


def no_output() -> dict[str, Any]:
    """A graph without any output node."""
    graph = probe("no output", steps=1)
    del graph["9"]
    return graph
