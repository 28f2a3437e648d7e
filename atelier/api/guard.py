"""The HTTP trust boundary every Atelier server wears: Host and Origin checks, and request body caps.

`RequestGuard` is plain ASGI middleware, so the job API, the chat (Gradio under FastAPI), MCP over HTTP and
the LangGraph server (which applies the job API's middleware to all its routes) refuse alike:
- in local mode (no login), a client that is not on this machine (403), unless ATELIER_ALLOW_UNAUTHENTICATED —
  so even a server started on 0.0.0.0 by a command Atelier does not control (`langgraph dev --host`) stays local;
- a `Host` that is a DNS name other than loopback ones and ATELIER_ALLOWED_HOSTS (403: DNS rebinding);
- an `Origin` that is neither the server itself, Atelier's chat page, nor ATELIER_ALLOWED_ORIGINS (403; a
  CORS preflight too, so a foreign page learns nothing); WebSockets likewise, before they are accepted;
- a body over ATELIER_MAX_BODY_BYTES (ATELIER_MAX_UPLOAD_BYTES on upload routes): 413, whether it declared
  its length or streamed it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.tools.exposure import host_allowed, is_remote_client, origin_allowed
from atelier.tools.settings import Settings

__all__ = ["UPLOAD_SUFFIXES", "RequestGuard", "refusal"]

# Routes whose bodies are images (the larger cap applies).
UPLOAD_SUFFIXES = ("/inputs",)


class _TooLarge(Exception):
    """Raised from `receive` once a streamed body passes its cap."""


def refusal(scope: Scope, settings: Settings) -> tuple[int, str] | None:
    """(status, reason) when the request's client, Host or Origin may not call this server, else None."""
    client = scope.get("client")
    if settings.auth_mode == "local" and not settings.allow_unauthenticated and client \
            and is_remote_client(str(client[0])):
        return 403, ("this Atelier runs without accounts (ATELIER_AUTH=local) and answers only its own machine; turn "
                     "accounts on (ATELIER_AUTH=accounts, `atelier users add NAME --admin`) to serve other machines")
    headers = Headers(scope=scope)
    host = headers.get("host")
    if not host_allowed(host, settings):
        return 403, (f"this Atelier server does not answer to the host {host!r}; reach it as 127.0.0.1 or localhost, "
                     "or add the name to ATELIER_ALLOWED_HOSTS")
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    origin = headers.get("origin")
    if not origin_allowed(origin, host, scheme, settings):
        return 403, (f"pages on {origin} may not call this Atelier server; add the origin to ATELIER_ALLOWED_ORIGINS "
                     "if you trust it")
    return None


def _json(status: int, detail: str) -> tuple[Message, Message]:
    """A JSON error response as two ASGI messages."""
    body = json.dumps({"detail": detail}).encode()
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class RequestGuard:
    """ASGI middleware: refuse foreign hosts and origins, and bodies over the caps (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings | Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """The settings the checks read (a callable is asked on each request: tests swap settings)."""
        return self._settings() if callable(self._settings) else self._settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request; pass it on, or answer the refusal."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings = self.settings
        refused = refusal(scope, settings)
        if refused is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": refused[1][:120]})
                return
            for message in _json(*refused):
                await send(message)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._capped(scope, receive, send, settings)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, settings: Settings) -> None:
        """Pass an HTTP request on with its body counted; 413 once it passes the cap."""
        path = str(scope.get("path", "")).rstrip("/")
        limit = settings.max_upload_bytes if path.endswith(UPLOAD_SUFFIXES) else settings.max_body_bytes
        too_large = (f"the request body is over {limit:,} bytes; send less (ATELIER_MAX_BODY_BYTES, "
                     "ATELIER_MAX_UPLOAD_BYTES for images)")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            for message in _json(413, too_large):
                await send(message)
            return
        seen = 0
        started = over = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _TooLarge
            return message

        async def noted(message: Message) -> None:
            nonlocal started
            if over:  # the app answered a body it could not read whole (FastAPI's JSON parsing makes it a 400): 413
                if not started:
                    started = True
                    for refused in _json(413, too_large):
                        await send(refused)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, noted)
        except _TooLarge:
            if not started:
                for message in _json(413, too_large):
                    await send(message)
