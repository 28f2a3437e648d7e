"""Who calls the MCP server over HTTP: an ASGI guard that turns each request's credentials into a Principal.

In accounts mode every HTTP request to the MCP app must carry `Authorization: Bearer <token or API key>` or
`X-API-Key: <key>`; a refused one is answered 401 (`WWW-Authenticate: Bearer`) or 403 with `{"detail": reason}`
before the MCP session sees it. An accepted request carries its Principal in the ASGI scope's `state`, where
the tools read it back from the Starlette request FastMCP hands them (`principal_of`). Context variables set
here would not reach the tools: the MCP session runs each message in its own task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.api.auth import auth_error_response
from atelier.api.outage import away_response, database_away
from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import AuthError

__all__ = ["PRINCIPAL_KEY", "RequireCaller", "principal_of"]

PRINCIPAL_KEY = "atelier.principal"


class RequireCaller:
    """ASGI middleware: authenticate every HTTP request and put its Principal in `scope["state"]`."""

    def __init__(self, app: ASGIApp, authenticator: Callable[[], Authenticator]) -> None:
        self.app = app
        self._make = authenticator
        self._auth: Authenticator | None = None

    @property
    def authenticator(self) -> Authenticator:
        """The shared Authenticator, made on first use (the services are open by then)."""
        if self._auth is None:
            self._auth = self._make()
        return self._auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request without valid credentials; pass everything else (and lifespan) through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            principal = await self.authenticator.principal(headers.get("authorization"), headers.get("x-api-key"))
        except AuthError as exc:
            await auth_error_response(exc)(scope, receive, send)
            return
        except Exception as exc:  # credentials live in the database: while it is away, 503 with Retry-After
            if not database_away(exc):
                raise
            await away_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def principal_of(request: Any) -> Principal | None:
    """The Principal RequireCaller stored for this Starlette request (None when it did not run)."""
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get(PRINCIPAL_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else None
