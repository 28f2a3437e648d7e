"""Wire details of the fake Ollama: Go-style JSON decoding errors, keep_alive durations, timestamps, error bodies.

Ollama is a Go (gin) server: a request body is read with `json.Decoder.Decode` into a typed struct, so a bad
body fails with Go's own error text (`invalid character 'x' looking for beginning of value`, `json: cannot
unmarshal string into Go struct field ChatRequest.stream of type bool`, …), answered as 400 `{"error": …}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

# The largest Go time.Duration (what a negative keep_alive becomes): about 292 years.
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)

_THINK_LEVELS = ("high", "medium", "low", "max")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Go types of the request fields a check is made for ("duration" and "think" have their own decoders).
CHAT_FIELDS = {"model": "string", "messages": "[]api.Message", "stream": "bool", "keep_alive": "duration",
               "tools": "api.Tools", "options": "map[string]interface {}", "think": "think", "truncate": "bool",
               "shift": "bool", "logprobs": "bool", "top_logprobs": "int"}
GENERATE_FIELDS = {"model": "string", "prompt": "string", "suffix": "string", "system": "string",
                   "template": "string", "context": "[]int", "stream": "bool", "raw": "bool", "keep_alive": "duration",
                   "images": "[]api.ImageData", "options": "map[string]interface {}", "think": "think",
                   "truncate": "bool", "shift": "bool", "logprobs": "bool", "top_logprobs": "int"}
EMBED_FIELDS = {"model": "string", "keep_alive": "duration", "truncate": "bool", "dimensions": "int",
                "options": "map[string]interface {}"}
EMBEDDINGS_FIELDS = {"model": "string", "prompt": "string", "keep_alive": "duration",
                     "options": "map[string]interface {}"}
SHOW_FIELDS = {"model": "string", "name": "string", "system": "string", "template": "string", "verbose": "bool",
               "options": "map[string]interface {}"}
_MESSAGE_FIELDS = {"role": "string", "content": "string", "thinking": "string", "images": "[]api.ImageData",
                   "tool_calls": "[]api.ToolCall", "tool_name": "string", "tool_call_id": "string"}


class ApiError(Exception):
    """An answer of `status` with Ollama's body `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def dumps(value: Any) -> str:
    """JSON as Go's encoder writes it: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(body: Any, status: int = 200) -> web.Response:
    """gin's c.JSON: `application/json; charset=utf-8`."""
    return web.json_response(body, status=status, dumps=dumps)


def error_response(status: int, message: str) -> web.Response:
    """Ollama's error answer."""
    return json_response({"error": message}, status)


def go_time(moment: datetime) -> str:
    """RFC 3339 in UTC with the fraction's trailing zeros trimmed, like Go's time.RFC3339Nano."""
    moment = moment.astimezone(UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def now() -> str:
    """A `created_at` value for this instant."""
    return go_time(datetime.now(UTC))


# --- decoding ----------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """The JSON kind Go names in its unmarshal errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _quote_char(char: str) -> str:
    """Go's quoteChar: 'x', with escapes for quotes and control characters."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + json.dumps(char)[1:-1] + "'"


def _inside_array(text: str, pos: int) -> bool:
    """Whether `pos` lies directly inside a JSON array (not an object), skipping strings."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return bool(stack) and stack[-1] == "["


def _syntax_error(exc: json.JSONDecodeError, text: str) -> str:
    """The message Go's decoder gives for the same syntax error."""
    pos = exc.pos
    if pos >= len(text) or not text[pos:].strip() or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = _quote_char(text[pos])
    where = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Expecting ':' delimiter": "after object key",
        "Invalid control character at": "in string literal",
        "Invalid \\escape": "in string escape code",
    }.get(exc.msg)
    if where is None and exc.msg == "Expecting ',' delimiter":
        where = "after array element" if _inside_array(text, pos) else "after object key:value pair"
    return f"invalid character {char} {where or 'looking for beginning of value'}"


def _check_base64(value: str) -> None:
    """An image must be standard base64, as Go decodes []byte fields."""
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        bad = next((i for i, c in enumerate(value) if not (c.isalnum() or c in "+/=")), len(value) - 1)
        raise ApiError(400, f"illegal base64 data at input byte {max(bad, 0)}") from None


def _check(value: Any, go_type: str, field: str, struct: str) -> None:
    """Fail like Go's unmarshal when `value` does not fit `go_type` (null always fits)."""
    if value is None:
        return
    if go_type == "duration":
        keep_alive_seconds(value, 0.0)
        return
    if go_type == "think":
        think_value(value)
        return
    ok = {"string": isinstance(value, str), "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "map[string]interface {}": isinstance(value, dict)}.get(go_type, isinstance(value, list))
    if not ok:
        kind = _kind(value)
        if kind == "number":
            kind = f"number {value}"
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go struct field {struct}.{field} of type {go_type}")
    if go_type == "[]api.ImageData":
        for item in value:
            _check(item, "string", field, struct)
            _check_base64(item)
    elif go_type == "[]int":
        for item in value:
            _check(item, "int", field, struct)
    elif go_type == "[]api.Message":
        for message in value:
            if not isinstance(message, dict):
                raise ApiError(400, f"json: cannot unmarshal {_kind(message)} into Go struct field "
                                    f"{struct}.{field} of type api.Message")
            for key, message_type in _MESSAGE_FIELDS.items():
                _check(message.get(key), message_type, f"{field}.{key}", struct)


def decode_body(raw: bytes, struct: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """gin's ShouldBindJSON into api.<struct>: the body as a dict, or ApiError(400) with Go's message."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise ApiError(400, "missing request body")
    try:
        body, _ = json.JSONDecoder().raw_decode(text, start)  # like json.Decoder: trailing data is not read
    except json.JSONDecodeError as exc:
        raise ApiError(400, _syntax_error(exc, text)) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {_kind(body)} into Go value of type api.{struct}")
    for field, go_type in fields.items():
        _check(body.get(field), go_type, field, struct)
    return body


# --- keep_alive and think ------------------------------------------------------------------------------------


def go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds (ValueError with Go's message)."""
    original, rest, sign = text, text, 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"time: invalid duration {json.dumps(original)}")
    total = 0.0
    while rest:
        number = re.match(r"(\d*)(?:\.(\d*))?", rest)
        assert number is not None
        whole, fraction = number.group(1), number.group(2)
        if not whole and not fraction:
            raise ValueError(f"time: invalid duration {json.dumps(original)}")
        rest = rest[number.end():]
        unit = re.match(r"[^\d.]*", rest)
        assert unit is not None
        if not unit.group(0):
            raise ValueError(f"time: missing unit in duration {json.dumps(original)}")
        if unit.group(0) not in _UNITS:
            raise ValueError(f"time: unknown unit {json.dumps(unit.group(0))} in duration {json.dumps(original)}")
        rest = rest[unit.end():]
        total += float(f"{whole or 0}.{fraction or 0}") * _UNITS[unit.group(0)]
    return sign * total


def keep_alive_seconds(value: Any, default: float) -> float:
    """api.Duration's decoding: seconds, or math.inf for 'keep loaded for ever' (any negative value)."""
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return math.inf if value < 0 else float(value)
    if isinstance(value, str):
        try:
            seconds = go_duration(value)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return math.inf if seconds < 0 else seconds
    go_type = {"bool": "bool", "array": "[]interface {}", "object": "map[string]interface {}"}[_kind(value)]
    raise ApiError(400, f"Unsupported type: '{go_type}'")


def think_value(value: Any) -> bool | None:
    """api.ThinkValue: None when absent, else whether thinking is on (400 for anything but a bool or a level)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in _THINK_LEVELS:
            raise ApiError(400, f'invalid think value: {json.dumps(value)} (must be "high", "medium", "low", "max", '
                                "true, or false)")
        return True
    raise ApiError(400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def expiry(seconds: float) -> datetime:
    """When a model kept alive for `seconds` from now unloads (about year 2318 for ever)."""
    return datetime.now(UTC) + (FOREVER if math.isinf(seconds) else timedelta(seconds=seconds))
