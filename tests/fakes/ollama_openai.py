"""The fake Ollama's OpenAI-compatible POST /v1/chat/completions: one JSON object, or SSE chunks ending in [DONE]."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.ollama_content import Reply, count_tokens, wire_tool_calls


def openai_error(status: int, message: str) -> web.Response:
    """An error in OpenAI's shape, as Ollama's compatibility layer answers."""
    kind = "invalid_request_error" if status == 400 else "api_error"
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": None}},
                             status=status)


def openai_prompt(messages: list[Any]) -> str:
    """The text of the last user message (a string, or the text parts of a content list)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def openai_format(body: dict[str, Any]) -> Any:
    """`response_format` as Ollama's `format`: json_object → "json", json_schema → its schema, else None."""
    spec = body.get("response_format")
    if not isinstance(spec, dict):
        return None
    if spec.get("type") == "json_object":
        return "json"
    if spec.get("type") == "json_schema":
        return (spec.get("json_schema") or {}).get("schema") or "json"
    return None


async def openai_answer(request: web.Request, body: dict[str, Any], reply: Reply, prompt: str,
                        rng: random.Random) -> web.StreamResponse:
    """The chat completion for one reply, whole or streamed as server-sent events."""
    if reply.error is not None:
        return openai_error(reply.status or 500, reply.error)
    ident, created, model = f"chatcmpl-{uuid.uuid4().int % 1000}", int(time.time()), body["model"]
    calls = [{"id": c["id"], "index": c["function"]["index"], "type": "function",
              "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])}}
             for c in wire_tool_calls(reply.tool_calls, rng)]
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.thinking:
        message["reasoning"] = reply.thinking
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    usage = {"prompt_tokens": count_tokens(prompt) + 4, "completion_tokens": count_tokens(reply.content) + 1}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    finish = "tool_calls" if calls else ("length" if reply.done_reason == "length" else "stop")
    common = {"id": ident, "created": created, "model": model, "system_fingerprint": "fp_ollama"}
    if not body.get("stream"):
        return web.json_response({**common, "object": "chat.completion", "usage": usage,
                                  "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(delta: dict[str, Any], reason: str | None) -> None:
        chunk = {**common, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    for word in re.findall(r"\s*\S+(?:\s+$)?", reply.content):
        await send({"role": "assistant", "content": word}, None)
    if calls:
        await send({"role": "assistant", "content": "", "tool_calls": calls}, None)
    await send({"role": "assistant", "content": ""}, finish)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
