"""Access to the captured ComfyUI traffic in ../shared/reference (a copy ships in tests/fakes/data)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "reference"


def _load(name: str) -> Any:
    for folder in (_SHARED, ROOT / "tests" / "fakes" / "data"):
        path = folder / name
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{name} is neither in {_SHARED} nor in tests/fakes/data")


@cache
def transcript() -> list[dict[str, Any]]:
    """The records of comfyui-transcript.json, in order."""
    records: list[dict[str, Any]] = _load("comfyui-transcript.json")["records"]
    return records


@cache
def captures() -> dict[str, Any]:
    """comfyui-captures-2.json."""
    data: dict[str, Any] = _load("comfyui-captures-2.json")
    return data


def http(label: str, method: str | None = None, path: str | None = None) -> dict[str, Any]:
    """The first HTTP record with this label (and method/path when given)."""
    for record in transcript():
        if (record["kind"], record["label"]) != ("http", label):
            continue
        if (method is None or record["method"] == method) and (path is None or record["path"] == path):
            return record
    raise KeyError(label)


def ws_messages(label: str) -> list[dict[str, Any]]:
    """The WebSocket messages captured under one label."""
    return [r["message"] for r in transcript() if r["kind"] == "ws" and r["label"] == label]
