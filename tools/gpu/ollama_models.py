"""Ollama's loaded models (`GET /api/ps`) and unloading them (`keep_alive: 0`), for VRAM hot-swap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from atelier.tools.errors import AtelierError

__all__ = ["LoadedModel", "OllamaAdminError", "OllamaHTTPError", "OllamaModels", "OllamaUnreachableError"]

GIB = 2**30


class OllamaAdminError(AtelierError):
    """Ollama could not tell its loaded models or unload one."""


class OllamaUnreachableError(OllamaAdminError):
    """Ollama did not answer at all (connection refused, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Ollama at {url} is unreachable ({reason}); start it with `ollama serve` or fix OLLAMA_URL")
        self.url = url
        self.reason = reason


class OllamaHTTPError(OllamaAdminError):
    """Ollama answered with an unexpected status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"Ollama at {url} answered {status}: {body[:200]}; check that OLLAMA_URL points at Ollama")
        self.url = url
        self.status = status


@dataclass(frozen=True)
class LoadedModel:
    """One model Ollama holds in memory, as `/api/ps` lists it."""

    name: str
    size: int
    size_vram: int
    expires_at: datetime | None

    @property
    def vram_gb(self) -> float:
        """Its share of GPU memory, in GiB."""
        return self.size_vram / GIB


def _parse_time(value: Any) -> datetime | None:
    """Go's RFC 3339 time (nanoseconds, Z or an offset) as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _model(entry: Any) -> LoadedModel | None:
    """One `/api/ps` entry (None when it is not an object with a name)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name") or entry.get("model"), str):
        return None
    size, vram = entry.get("size"), entry.get("size_vram")
    return LoadedModel(
        name=str(entry.get("name") or entry.get("model")),
        size=int(size) if isinstance(size, int | float) else 0,
        size_vram=int(vram) if isinstance(vram, int | float) else 0,
        expires_at=_parse_time(entry.get("expires_at")),
    )


class OllamaModels:
    """Ask one Ollama which models it holds and unload some; every failure is an OllamaAdminError."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport,
                                       timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)))

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; transport failures become OllamaUnreachableError."""
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise OllamaUnreachableError(self.base_url, f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise OllamaUnreachableError(self.base_url, str(exc) or type(exc).__name__) from exc

    async def loaded(self) -> list[LoadedModel]:
        """GET /api/ps: the models in memory now."""
        response = await self._request("GET", "/api/ps")
        if response.status_code != 200:
            raise OllamaHTTPError(f"{self.base_url}/api/ps", response.status_code, response.text)
        try:
            body = response.json()
        except ValueError as exc:
            raise OllamaHTTPError(f"{self.base_url}/api/ps", 200, f"not JSON: {response.text[:100]}") from exc
        entries = body.get("models") if isinstance(body, dict) else None
        return [m for m in map(_model, entries or []) if m is not None]

    async def request_unload(self, name: str) -> None:
        """POST /api/chat {model, messages: [], keep_alive: 0}: Ollama unloads it (once idle, if in use).

        A 404 means the model is no longer installed, so nothing of it can stay loaded.
        """
        response = await self._request("POST", "/api/chat", json={"model": name, "messages": [], "keep_alive": 0})
        if response.status_code not in (200, 404):
            raise OllamaHTTPError(f"{self.base_url}/api/chat", response.status_code, response.text)

    async def unload(self, names: Sequence[str], *, wait_seconds: float = 5.0, poll_seconds: float = 0.1
                     ) -> list[str]:
        """Unload these models and wait (at most `wait_seconds`) until /api/ps stops listing them.

        Returns the names that are gone. Ollama unloads in the background, and a model still answering a
        request unloads only when that request ends: such a model is not in the result.
        """
        for name in names:
            await self.request_unload(name)
        wanted = set(names)
        deadline = time.monotonic() + wait_seconds
        while True:
            still = {m.name for m in await self.loaded()} & wanted
            if not still or time.monotonic() >= deadline:
                return [name for name in names if name not in still]
            await asyncio.sleep(poll_seconds)
