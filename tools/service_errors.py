"""Explaining a service that cannot answer: how to start Ollama and ComfyUI, and any Ollama client's failure as one
clear `LLMUnavailableError` naming the fix.

The chat model is reached through three clients: langchain-ollama (the supervisor's agents: the `ollama` library
over httpx), CrewAI and ag2 (the OpenAI client on Ollama's `/v1` endpoint). Each fails in its own words;
`explain_ollama_error` reads any of them (and their causes) as one of three problems — Ollama down, the model not
pulled, no answer in time — and says the same sentence for each, naming `ollama serve`, `ollama pull MODEL`,
OLLAMA_URL or ATELIER_CHAT_MODEL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import httpx

from atelier.tools.errors import AtelierError

__all__ = [
    "COMFYUI_START",
    "DEFAULT_OLLAMA_URL",
    "OLLAMA_START",
    "START_HINTS",
    "LLMUnavailableError",
    "explain_ollama_error",
    "model_not_pulled",
    "ollama_timed_out",
    "ollama_unreachable",
    "start_hint",
]

DEFAULT_OLLAMA_URL = "http://localhost:11434"
OLLAMA_START = "start it (`ollama serve`) or fix OLLAMA_URL"
COMFYUI_START = "start ComfyUI (`python main.py --listen 127.0.0.1 --port 8188` in its folder) or set COMFYUI_URLS"
# What to do when a service is down, for a person reading the chat page ({model}: the chat model).
START_HINTS: dict[str, str] = {
    "ComfyUI": f"{COMFYUI_START}; images wait in the queue until it is up",
    "Ollama": "start it with `ollama serve` and pull the chat model (`ollama pull {model}`), or set OLLAMA_URL; "
              "answers need it, images do not",
}

Problem = Literal["down", "missing", "slow"]


class LLMUnavailableError(AtelierError):
    """The chat model cannot answer (Ollama down, model not pulled, no answer in time)."""


def start_hint(service: str, *, model: str) -> str | None:
    """How to start `service` ("ComfyUI" or "Ollama") for a person, with the chat model named; None for others."""
    hint = START_HINTS.get(service)
    return hint.format(model=model) if hint is not None else None


def _ollama_base(url: str | None) -> str:
    """Ollama's own URL (without the `/v1` of its OpenAI-compatible endpoint); the default when unknown."""
    return (url or DEFAULT_OLLAMA_URL).rstrip("/").removesuffix("/v1")


def ollama_unreachable(url: str | None) -> str:
    """The sentence for Ollama not answering at all."""
    return f"Ollama at {_ollama_base(url)} is unreachable: {OLLAMA_START}"


def model_not_pulled(model: str | None, url: str | None) -> str:
    """The sentence for a chat model Ollama does not have."""
    name = model or "MODEL"
    return (f"the model {name!r} is not pulled into Ollama at {_ollama_base(url)}: run `ollama pull {name}` or set "
            "ATELIER_CHAT_MODEL to one you have")


def ollama_timed_out(model: str | None, url: str | None) -> str:
    """The sentence for Ollama not answering in time."""
    which = f"model {model!r}" if model else "the chat model"
    return (f"Ollama at {_ollama_base(url)} did not answer in time ({which}): check that it runs (`ollama serve`) "
            "at OLLAMA_URL, or set ATELIER_CHAT_MODEL to a smaller model")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes/contexts (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


ErrorTypes = tuple[type[BaseException], ...]


def _error_types() -> tuple[ErrorTypes, ErrorTypes]:
    """The clients' timeout and connection error types (the OpenAI client's only when it is installed)."""
    timeouts: ErrorTypes = (httpx.TimeoutException, TimeoutError)
    connections: ErrorTypes = (httpx.ConnectError, ConnectionError)
    try:
        import openai
    except ImportError:  # not installed: it never failed
        return timeouts, connections
    return (*timeouts, openai.APITimeoutError), (*connections, openai.APIConnectionError)


def _problem(error: BaseException, timeouts: ErrorTypes, connections: ErrorTypes) -> Problem | None:
    """Which of the three problems one error is (timeouts first: the OpenAI client's are connection errors too)."""
    text = str(error).lower()
    if isinstance(error, timeouts):
        return "slow"
    if isinstance(error, connections) or "failed to connect" in text:
        return "down"
    if "not found" in text and ("model" in text or "pull" in text):  # Ollama's 404: model "x" not found, try pulling
        return "missing"
    return None


def explain_ollama_error(exc: BaseException, *, url: str | None, model: str | None) -> LLMUnavailableError | None:
    """Our clear error for Ollama (at `url`, serving `model`) down, missing the model or too slow, from any of the
    clients' errors or their causes; None for any other error (it is not Ollama's to explain)."""
    timeouts, connections = _error_types()
    for error in _chain(exc):
        problem = _problem(error, timeouts, connections)
        if problem == "down":
            return LLMUnavailableError(ollama_unreachable(url))
        if problem == "missing":
            return LLMUnavailableError(model_not_pulled(model, url))
        if problem == "slow":
            return LLMUnavailableError(ollama_timed_out(model, url))
    return None
