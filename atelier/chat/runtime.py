"""The chat page's runtime: the services it acts through (opened by the server) and, with accounts, who is calling.

`ChatRuntime.caller` answers every click with its Principal (re-checking the API key the session logged in
with); `ChatRuntime.login` is Gradio's login check; `LoginSessions` ties each Gradio login session to that key.
`Load` is what each tab function hands the page to fill when it loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components import Component
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.studio import ChatServices
from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import AuthError, TokenClaims
from atelier.tools.doctor import mask_secrets
from atelier.tools.settings import Settings

__all__ = ["ChatRuntime", "Load", "LoginSessions"]

log = logging.getLogger("atelier.chat")

# What a tab function (chat_tab, queue_tab …) asks the page to run when it loads, and the component that fills.
Load = tuple[Callable[..., Any], Component]

# Filled by ChatRuntime.login during one POST /login (see LoginSessions): the key the person logged in with.
_LOGIN: ContextVar[dict[str, str] | None] = ContextVar("atelier_chat_login", default=None)
# Gradio's login cookies (`access-token-<id>`, `access-token-unsecure-<id>`) carry its session token.
_SESSION_COOKIE = "access-token"


@dataclass
class ChatRuntime:
    """The services the page acts through, opened when the server starts (a problem is kept to show, not raised).

    With accounts, `sessions` maps each Gradio login session (its cookie's token) to the API key it logged in
    with, so every action re-checks that key: revoking it, or disabling the user, ends the session. An ended
    session waits in `ended` until its next request, which drops it from Gradio too (the page asks to log in).
    """

    settings: Settings
    owner: str = "local"
    services: ChatServices | None = None
    problem: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: dict[str, str] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    gradio: Any = None  # the mounted Gradio app, whose own session table an ended session leaves too

    async def get(self) -> ChatServices:
        """The open services; a clear error for the page when they could not be opened."""
        await self.ready.wait()
        if self.services is None:
            raise gr.Error(f"Atelier could not start its services: {mask_secrets(self.problem or '')}")
        return self.services

    @property
    def accounts(self) -> bool:
        """Whether people log in (ATELIER_AUTH=accounts) rather than all acting as the local owner."""
        return self.settings.auth_mode == "accounts"

    async def caller(self, request: gr.Request | None) -> Principal:
        """Who is using the page: with accounts the logged-in user, re-checked against the key they logged in
        with at every click (a revoked or expired key, or a disabled user, ends the session); else the local
        owner, an admin."""
        if not self.accounts:
            return Principal(user_id=self.owner, role="admin", via="local")
        name = getattr(request, "username", None)
        if not name:
            raise gr.Error("Log in first: this Atelier has accounts (user name and an API key).")
        session, key_id = self._session(request)
        if session is None or key_id is None:
            raise gr.Error("This session is no longer valid (the server restarted, or you logged out): reload the "
                           "page and log in again.")
        services = await self.get()
        try:
            return await services.ledger.accounts.authenticate_claims(
                TokenClaims(user_id=name, role="user", key_id=key_id, expires=0))
        except AuthError as exc:
            self.end_session(session)
            raise gr.Error(f"{exc}. Your session has ended: reload the page and log in again.") from None

    def _session(self, request: gr.Request | None) -> tuple[str | None, str | None]:
        """The request's Gradio session token and the key id it logged in with (None, None when unknown)."""
        cookies = getattr(request, "cookies", None) or {}
        for name, value in cookies.items():
            if str(name).startswith(_SESSION_COOKIE) and value in self.sessions:
                return str(value), self.sessions[value]
        return None, None

    def end_session(self, session: str) -> None:
        """Refuse a login session from now on; Gradio forgets it at its next request (`LoginSessions`), so the
        refusal of the current action still reaches the page through the open result stream."""
        self.sessions.pop(session, None)
        self.ended.add(session)

    def drop_ended(self, sessions: set[str]) -> None:
        """Make Gradio forget ended sessions (their requests are then asked to log in)."""
        tokens = getattr(self.gradio, "tokens", None)
        for session in sessions & self.ended:
            self.ended.discard(session)
            if isinstance(tokens, dict):
                tokens.pop(session, None)

    def opened(self, session: str, key_id: str) -> None:
        """Note a new login session and its key; forget sessions Gradio has since dropped (logged out)."""
        tokens = getattr(self.gradio, "tokens", None)
        if isinstance(tokens, dict):
            for old in [s for s in self.sessions if s not in tokens]:
                del self.sessions[old]
        self.sessions[session] = key_id

    async def login(self, username: str, password: str) -> bool:
        """Gradio's login check: the password is one of the user's API keys (`atelier users key NAME`)."""
        await self.ready.wait()
        if self.services is None:
            return False
        try:
            principal = await self.services.ledger.accounts.authenticate_key(password)
        except AuthError as exc:
            log.info("chat login refused for %r: %s", username, exc)
            return False
        if principal.user_id != username or principal.key_id is None:
            return False
        noted = _LOGIN.get()
        if noted is None:  # not through LoginSessions: the session could not be tied to its key
            log.error("chat login for %r outside POST /login refused: its session would not know its key", username)
            return False
        noted["key_id"] = principal.key_id
        return True

    def cache_dir(self) -> Path:
        """Where previews and images from non-local stores are kept for the page."""
        path = self.settings.data_dir / "chat-cache"
        path.mkdir(parents=True, exist_ok=True)
        return path


class LoginSessions:
    """ASGI middleware tying Gradio's login sessions to the key each logged in with, and ending them.

    On POST /login, `ChatRuntime.login` (Gradio's auth check, awaited inside this request) leaves the key's id
    in a context variable, and a successful answer's Set-Cookie carries Gradio's new session token: the runtime
    keeps the pair. A request of a session the runtime ended (other than the result stream that carries the
    refusal) makes Gradio forget it first, so it and every later request are asked to log in.
    """

    def __init__(self, app: ASGIApp, runtime: ChatRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; on a login, note the session it opens."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.runtime.ended and not scope["path"].endswith("/queue/data"):
            cookies = Request(scope).cookies
            self.runtime.drop_ended({v for k, v in cookies.items() if k.startswith(_SESSION_COOKIE)})
        if scope["method"] != "POST" or scope["path"].rstrip("/") != "/login":
            await self.app(scope, receive, send)
            return
        noted: dict[str, str] = {}
        reset = _LOGIN.set(noted)

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200 and "key_id" in noted:
                for name, value in message.get("headers", []):
                    cookie = bytes(value).decode("latin-1").split(";", 1)[0]
                    if bytes(name).lower() == b"set-cookie" and cookie.startswith(_SESSION_COOKIE) and "=" in cookie:
                        self.runtime.opened(cookie.split("=", 1)[1], noted["key_id"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            _LOGIN.reset(reset)
