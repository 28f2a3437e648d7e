"""The prompt-rendering worker process: render requests in, prompt text (or the error) out, one JSON line each.

tools/prompts/rendering.py starts it as `python -I -c <boot> ROOT MODULE MEMORY` and calls `main(MEMORY)`; it
imports only jinja2 and the templating modules. Before it says it is ready it limits its own address space to
MEMORY bytes (a huge allocation becomes a MemoryError here, never in the server) and turns core dumps off; before
each render it sets a CPU-time backstop, in case the server that would kill it on time is gone.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any, BinaryIO

from atelier.tools.prompts.templating import PromptTemplateError, render_here

__all__ = ["answer", "main"]


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request: {"text": …}, or {"error": …} (with "restart" when this process must not go on)."""
    try:
        return {"text": render_here(request["template"], request["values"])}
    except PromptTemplateError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": "the prompt template asked for more memory than a prompt may use; it builds something "
                         "huge: keep loops and repeats small", "restart": True}
    except Exception as exc:
        return {"error": f"the prompt template failed to render: {type(exc).__name__}: {str(exc)[:500]}"}


def _cpu_backstop(seconds: float) -> None:
    """Let this render use at most `seconds` + 2 more seconds of CPU (SIGXCPU ends the process after that)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space (its data segment where a platform refuses that, as macOS may)."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))


def _send(channel: BinaryIO, reply: dict[str, Any]) -> None:
    """One JSON line to the server."""
    channel.write(json.dumps(reply).encode() + b"\n")
    channel.flush()


def main(memory_bytes: int) -> None:
    """Serve render requests from stdin until it closes (or a render used up the memory)."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the answers
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _limit_memory(memory_bytes)
    _send(channel, {"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        _cpu_backstop(float(request["seconds"]))
        reply = answer(request)
        _send(channel, reply)
        if reply.get("restart"):
            return
