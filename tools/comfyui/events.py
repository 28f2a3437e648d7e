"""Typed progress events of one ComfyUI prompt, parsed from WebSocket messages and /history entries."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from atelier.tools.schemas import ImageRef

__all__ = [
    "TERMINAL",
    "Cached",
    "ComfyEvent",
    "Failed",
    "Interrupted",
    "NodeExecuting",
    "NodeOutput",
    "Preview",
    "Queued",
    "Reconnected",
    "Started",
    "StepProgress",
    "Succeeded",
    "events_from_history",
    "images_of",
    "parse_binary",
    "parse_message",
]


@dataclass(frozen=True)
class ComfyEvent:
    """Base of every event; `prompt_id` says which prompt it belongs to."""

    prompt_id: str


@dataclass(frozen=True)
class Queued(ComfyEvent):
    """ComfyUI accepted the prompt; `number` is its place in ComfyUI's queue order."""

    number: int


@dataclass(frozen=True)
class Started(ComfyEvent):
    """ComfyUI began executing the prompt."""


@dataclass(frozen=True)
class Cached(ComfyEvent):
    """These nodes' results came from ComfyUI's cache and will not run."""

    nodes: tuple[str, ...]


@dataclass(frozen=True)
class NodeExecuting(ComfyEvent):
    """A node started executing."""

    node: str
    display_node: str | None = None


@dataclass(frozen=True)
class StepProgress(ComfyEvent):
    """A sampler (or other long node) reached step `value` of `max`."""

    node: str | None
    value: int
    max: int


@dataclass(frozen=True)
class Preview(ComfyEvent):
    """A live preview image of the running sampler (binary WebSocket frame)."""

    image_format: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class NodeOutput(ComfyEvent):
    """A node finished with an output; `images` are the files it wrote."""

    node: str
    images: tuple[ImageRef, ...]
    output: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Succeeded(ComfyEvent):
    """The prompt finished; terminal."""


@dataclass(frozen=True)
class Failed(ComfyEvent):
    """A node raised during execution; terminal."""

    node_id: str
    node_type: str
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Interrupted(ComfyEvent):
    """The prompt was interrupted; terminal."""

    node_id: str | None = None
    node_type: str | None = None


@dataclass(frozen=True)
class Reconnected(ComfyEvent):
    """The WebSocket was re-established and the prompt's state re-read from /queue and /history."""

    reason: str


TERMINAL = (Succeeded, Failed, Interrupted)

# ComfyUI's binary frame event types and image formats (server.py BinaryEventTypes, latent_preview).
_PREVIEW_IMAGE = 1
_PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {1: "jpeg", 2: "png"}


def images_of(output: dict[str, Any]) -> tuple[ImageRef, ...]:
    """The image files listed in a node output (`images`, plus `gifs`/`animated` lists when present)."""
    refs: list[ImageRef] = []
    for key in ("images", "gifs"):
        for item in output.get(key) or []:
            if isinstance(item, dict) and "filename" in item:
                refs.append(
                    ImageRef(
                        filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )
                )
    return tuple(refs)


def _failed(prompt_id: str, data: dict[str, Any]) -> Failed:
    """Build a Failed event from an execution_error payload."""
    return Failed(
        prompt_id=prompt_id,
        node_id=str(data.get("node_id", "?")),
        node_type=str(data.get("node_type", "?")),
        exception_type=str(data.get("exception_type", "Exception")),
        exception_message=str(data.get("exception_message", "")).strip(),
        traceback=tuple(str(line) for line in data.get("traceback") or []),
    )


def _interrupted(prompt_id: str, data: dict[str, Any]) -> Interrupted:
    """Build an Interrupted event from an execution_interrupted payload."""
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    return Interrupted(
        prompt_id=prompt_id,
        node_id=str(node_id) if node_id is not None else None,
        node_type=str(node_type) if node_type is not None else None,
    )


def parse_message(kind: str, data: dict[str, Any]) -> ComfyEvent | None:
    """Turn one JSON WebSocket message into an event, or None for messages no prompt needs."""
    prompt_id = data.get("prompt_id")
    if not isinstance(prompt_id, str):
        return None
    if kind == "execution_start":
        return Started(prompt_id)
    if kind == "execution_cached":
        return Cached(prompt_id, tuple(str(n) for n in data.get("nodes") or []))
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return None  # "executing null" only marks the end; execution_success says it better
        display = data.get("display_node")
        return NodeExecuting(prompt_id, str(node), str(display) if display is not None else None)
    if kind == "progress":
        node = data.get("node")
        return StepProgress(
            prompt_id, str(node) if node is not None else None, int(data.get("value", 0)), int(data.get("max", 0))
        )
    if kind == "executed":
        output = data.get("output") or {}
        return NodeOutput(prompt_id, str(data.get("node")), images_of(output), output)
    if kind == "execution_success":
        return Succeeded(prompt_id)
    if kind == "execution_error":
        return _failed(prompt_id, data)
    if kind == "execution_interrupted":
        return _interrupted(prompt_id, data)
    return None


def parse_binary(frame: bytes, current_prompt: str | None) -> Preview | None:
    """Parse a binary preview frame; frames without metadata belong to the prompt now executing."""
    if len(frame) < 8:
        return None
    (event_type,) = struct.unpack(">I", frame[:4])
    if event_type == _PREVIEW_IMAGE:
        if current_prompt is None:
            return None
        (fmt,) = struct.unpack(">I", frame[4:8])
        return Preview(current_prompt, _IMAGE_FORMATS.get(fmt, "jpeg"), frame[8:])
    if event_type == _PREVIEW_IMAGE_WITH_METADATA:
        (meta_len,) = struct.unpack(">I", frame[4:8])
        try:
            meta = json.loads(frame[8 : 8 + meta_len])
        except ValueError:
            return None
        prompt_id = meta.get("prompt_id") or current_prompt
        if not isinstance(prompt_id, str):
            return None
        mime = str(meta.get("image_type", "image/jpeg"))
        return Preview(prompt_id, mime.split("/")[-1], frame[8 + meta_len :])
    return None


def events_from_history(prompt_id: str, entry: dict[str, Any]) -> list[ComfyEvent]:
    """Rebuild the outputs and the terminal event of a finished prompt from its /history entry."""
    status = entry.get("status") or {}
    events: list[ComfyEvent] = []
    for node, output in (entry.get("outputs") or {}).items():
        if isinstance(output, dict):
            events.append(NodeOutput(prompt_id, str(node), images_of(output), output))
    for kind, data in status.get("messages") or []:
        if kind == "execution_error":
            events.append(_failed(prompt_id, data))
            return events
        if kind == "execution_interrupted":
            events.append(_interrupted(prompt_id, data))
            return events
    if status.get("status_str") == "success" or status.get("completed"):
        events.append(Succeeded(prompt_id))
    elif status.get("status_str") == "error":
        events.append(Failed(prompt_id, "?", "?", "Exception", "ComfyUI recorded an error without details"))
    return events
