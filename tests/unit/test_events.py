"""Captured WebSocket messages and /history entries parse into the right typed events."""

from __future__ import annotations

import json
import struct

from atelier.tools.comfyui.events import (
    Cached,
    Failed,
    Interrupted,
    NodeExecuting,
    NodeOutput,
    Preview,
    Started,
    StepProgress,
    Succeeded,
    events_from_history,
    parse_binary,
    parse_message,
)
from atelier.tools.schemas import ImageRef
from tests import reference


def _events(label: str, prompt_id: str | None = None) -> list[object]:
    parsed = [parse_message(m["type"], m["data"]) for m in reference.ws_messages(label)]
    return [e for e in parsed if e is not None and (prompt_id is None or e.prompt_id == prompt_id)]


def test_success_sequence() -> None:
    pid = reference.http("success", "POST")["response"]["prompt_id"]
    events = _events("success", pid)
    assert [type(e) for e in events] == [
        Started, Cached, NodeExecuting, StepProgress, StepProgress, StepProgress, NodeExecuting, NodeOutput, Succeeded,
    ]
    assert [(e.value, e.max) for e in events if isinstance(e, StepProgress)] == [(1, 3), (2, 3), (3, 3)]
    output = next(e for e in events if isinstance(e, NodeOutput))
    assert output.node == "9" and output.images == (ImageRef(filename="atelier_00001_.png"),)


def test_late_executing_null_of_previous_prompt_is_not_an_event() -> None:
    late = reference.ws_messages("execution_error")[1]
    assert late["type"] == "executing" and late["data"]["node"] is None
    assert parse_message(late["type"], late["data"]) is None


def test_execution_error_and_interrupt_are_terminal_events() -> None:
    pid = reference.http("execution_error", "POST")["response"]["prompt_id"]
    failed = _events("execution_error", pid)[-1]
    assert isinstance(failed, Failed)
    assert (failed.node_id, failed.node_type, failed.exception_type, failed.exception_message) == (
        "2", "ProbeFail", "RuntimeError", "boom")
    pid = reference.http("interrupt", "POST")["response"]["prompt_id"]
    interrupted = [e for e in _events("interrupt", pid) if isinstance(e, Interrupted)]
    assert interrupted == [Interrupted(pid, "1", "ProbeTextToImage")]


def test_history_entries_rebuild_outcomes() -> None:
    pid = reference.http("success", "POST")["response"]["prompt_id"]
    events = events_from_history(pid, reference.http("success", "GET", "/history/{prompt_id}")["response"])
    assert [type(e) for e in events] == [NodeOutput, Succeeded]
    failed = events_from_history("x", reference.http("execution_error", "GET", "/history/{prompt_id}")["response"])
    assert isinstance(failed[-1], Failed) and failed[-1].exception_message == "boom"
    stopped = events_from_history("y", reference.http("interrupt", "GET", "/history/{prompt_id}")["response"])
    assert isinstance(stopped[-1], Interrupted)
    assert events_from_history("z", {}) == []


def test_binary_previews() -> None:
    jpeg = b"\xff\xd8\xff" + b"0" * 10
    frame = struct.pack(">II", 1, 1) + jpeg
    assert parse_binary(frame, "p1") == Preview("p1", "jpeg", jpeg)
    assert parse_binary(frame, None) is None  # nobody is executing: drop it
    meta = json.dumps({"prompt_id": "p2", "node_id": "3", "image_type": "image/png"}).encode()
    png = b"\x89PNG" + b"1" * 10
    framed = struct.pack(">II", 4, len(meta)) + meta + png
    assert parse_binary(framed, "p1") == Preview("p2", "png", png)
    assert parse_binary(b"\x00\x00", "p1") is None
