"""What the fake Ollama's models say: scripted replies, echoes, vision captions, JSON for `format`, embeddings."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from tests.fakes.ollama_wire import ApiError, dumps

# --- replies ---------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted model turn: text and/or thinking and/or tool calls, or an error.

    `error` without `status`: streamed replies send their content, then a `{"error": …}` line and no `done` line
    (a reply with nothing before the error, or a non-streamed one, answers 500). `error` with `status`: that HTTP
    status and `{"error": …}` before any output.
    """

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    status: int | None = None
    done_reason: str = "stop"


_CONTROL_TYPES: dict[str, type | tuple[type, ...]] = {
    "content": str, "thinking": str, "tool_calls": list, "error": str, "status": int, "done_reason": str,
    "json": object,
}


def as_reply(item: Any) -> Reply:
    """A script item as a Reply: a str is text; a dict of Reply fields (or {"json": value}) is that reply;
    any other dict, list or number is a JSON document sent as the content (what `format` replies need)."""
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(content=item)
    if isinstance(item, dict) and item and all(
            key in _CONTROL_TYPES and isinstance(value, _CONTROL_TYPES[key]) for key, value in item.items()):
        content = dumps(item["json"]) if "json" in item else item.get("content", "")
        return Reply(content=content, thinking=item.get("thinking", ""), tool_calls=list(item.get("tool_calls", [])),
                     error=item.get("error"), status=item.get("status"), done_reason=item.get("done_reason", "stop"))
    return Reply(content=dumps(item))


def wire_tool_calls(calls: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Tool calls as Ollama sends them: `{"id": "call_…", "function": {"index", "name", "arguments": {…}}}`.

    Accepts `{"function": {"name", "arguments"}}` or the short `{"name", "arguments"}`; string arguments are parsed.
    """
    wired = []
    for index, call in enumerate(calls):
        function = call.get("function", call)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        ident = call.get("id") or "call_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=8))
        wired.append({"id": ident, "function": {"index": index, "name": function["name"], "arguments": arguments}})
    return wired


def pieces(text: str, words_per_piece: int) -> list[str]:
    """Split text into stream chunks of a few words each (whitespace kept, so they join back exactly)."""
    words = re.findall(r"\s*\S+(?:\s+$)?", text) or ([text] if text else [])
    size = max(1, words_per_piece)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


def count_tokens(text: str) -> int:
    """A rough token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


# --- format: a JSON document that fits the schema ----------------------------------------------------------------


def schema_instance(schema: Any, text: str, defs: dict[str, Any] | None = None) -> Any:
    """A small JSON value valid for `schema` (strings are `text`), for unscripted replies with `format`."""
    if not isinstance(schema, dict):
        return text
    defs = defs if defs is not None else {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if "$ref" in schema:
        return schema_instance(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}), text, defs)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if not (isinstance(o, dict) and o.get("type") == "null")]
        if options:
            return schema_instance(options[0], text, defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: schema_instance(sub, text, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), text, defs) for _ in range(max(1, schema.get("minItems", 1)))]
    return {"integer": 1, "number": 1.0, "boolean": True, "null": None}.get(kind, text)


def json_reply(fmt: Any, text: str) -> str:
    """The default content for a request with `format`: "json" → {"answer": text}; a schema → an instance of it."""
    return dumps(schema_instance(fmt, text) if isinstance(fmt, dict) else {"answer": text})


# --- vision ---------------------------------------------------------------------------------------------------------

_PALETTE = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 30, 30),
            "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (240, 220, 40), "orange": (245, 140, 30),
            "purple": (130, 50, 170), "pink": (245, 150, 190), "brown": (120, 75, 35), "cyan": (40, 200, 220)}


def caption(image_b64: str) -> str:
    """A deterministic caption naming the image's size and dominant colour: 'A 40x20 image, mostly red.'."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(image_b64))) as image:
            width, height = image.size
            small = image.convert("RGB").resize((24, 24))
    except (UnidentifiedImageError, binascii.Error, ValueError, OSError):
        raise ApiError(500, "failed to process inputs: image: unknown format") from None
    votes: dict[str, int] = dict.fromkeys(_PALETTE, 0)
    raw = small.tobytes()
    for pixel in zip(raw[0::3], raw[1::3], raw[2::3], strict=True):
        nearest = min(_PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(pixel, _PALETTE[name], strict=True)))
        votes[nearest] += 1
    colour = max(votes, key=lambda name: votes[name])
    return f"A {width}x{height} image, mostly {colour}."


# --- embeddings -----------------------------------------------------------------------------------------------------


def _features(text: str) -> list[tuple[str, float]]:
    """Words (1.0), word pairs (0.5) and character trigrams of words (0.25): shared words dominate similarity."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return [(f"raw:{text}", 1.0)]
    features = [(f"w:{w}", 1.0) for w in words] + [(f"p:{a} {b}", 0.5) for a, b in itertools.pairwise(words)]
    for word in words:
        padded = f" {word} "
        features += [(f"c:{padded[i:i + 3]}", 0.25) for i in range(len(padded) - 2)]
    return features


@functools.lru_cache(maxsize=65536)
def _direction(feature: str, dims: int) -> tuple[float, ...]:
    """A fixed pseudo-random direction in [-1, 1]^dims for one feature (nearly orthogonal to the others)."""
    return tuple((byte - 127.5) / 127.5 for byte in hashlib.shake_128(feature.encode()).digest(dims))


def raw_embedding(text: str, dims: int) -> list[float]:
    """A dense, unnormalised vector: the weighted sum of its features' directions (what /api/embeddings returns)."""
    vector = [0.0] * dims
    for feature, weight in _features(text):
        vector = [v + weight * d for v, d in zip(vector, _direction(feature, dims), strict=True)]
    return vector


def normalise(vector: list[float]) -> list[float]:
    """L2-normalise, as Ollama's EmbedHandler does."""
    norm = max(math.sqrt(sum(v * v for v in vector)), 1e-12)
    return [v / norm for v in vector]


def embedding(text: str, dims: int, dimensions: int = 0) -> list[float]:
    """/api/embed's vector: deterministic, L2-normalised; `dimensions` below `dims` truncates and renormalises."""
    vector = normalise(raw_embedding(text, dims))
    return normalise(vector[:dimensions]) if 0 < dimensions < dims else vector


def embed_text(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (texts sharing words are close)."""
    return embedding(text, dims)
