"""Job API authentication: the caller as a FastAPI dependency, POST /auth/token and GET /auth/me.

Every route that reads or changes someone's work depends on `caller`; in local mode it is the single local
admin, in accounts mode the user behind the request's token or key. WebSocket clients (browsers cannot set
headers there) may pass the token as `?access_token=`.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see atelier/api/jobs.py).
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, Field

from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import Settings

__all__ = ["TokenBody", "TokenView", "add_auth_routes", "auth_error_response", "caller_of"]


class TokenBody(BaseModel):
    """POST /auth/token: an API key to exchange for a short-lived access token."""

    api_key: str = Field(min_length=1, max_length=200, description="A key from `atelier users key NAME`.")


class TokenView(BaseModel):
    """An access token for `Authorization: Bearer`."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    user: str
    role: str


# OpenAPI security schemes (Swagger's "Authorize" button); auto_error off: `caller` gives the reasons itself.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="An access token from POST /auth/token, or an API key.")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                       description="An API key from `atelier users key NAME` (shown once).")


def caller_of(settings: Settings, ledger: Callable[[Any], LedgerService]) -> Callable[..., Any]:
    """A FastAPI dependency giving the request's Principal (AuthError → 401/403 via the app's handler)."""

    async def caller(request: Request) -> Principal:
        """The caller of this request."""
        auth = ledger(request).authenticator
        return await auth.principal(request.headers.get("authorization"), request.headers.get("x-api-key"))

    if settings.auth_mode != "accounts":
        return caller  # local mode: nobody logs in, and the document asks for no credentials

    async def account_caller(request: Request, _bearer: Annotated[Any, Depends(BEARER)] = None,
                             _key: Annotated[Any, Depends(API_KEY)] = None) -> Principal:
        """The caller of this request (the headers are read raw: the security schemes only document them)."""
        return await caller(request)

    return account_caller


async def socket_caller(svc: LedgerService, socket: WebSocket) -> Principal:
    """The caller of a WebSocket: headers as for HTTP, or `?access_token=` (a token or an API key)."""
    auth = svc.authenticator
    token = socket.query_params.get("access_token")
    header = socket.headers.get("authorization") or (f"Bearer {token}" if token else None)
    return await auth.principal(header, socket.headers.get("x-api-key"))


def auth_error_response(exc: AuthError) -> JSONResponse:
    """401 (with `WWW-Authenticate: Bearer`) or 403, with the reason."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


def add_auth_routes(api: FastAPI, ledger: Callable[[Any], LedgerService], caller: Callable[..., Any],
                    errors: Callable[..., dict[int | str, dict[str, Any]]]) -> None:
    """POST /auth/token and GET /auth/me."""

    @api.post("/auth/token", response_model=TokenView, tags=["auth"], summary="Exchange an API key for a token",
              responses=errors(400, 401, 403, 422))
    async def token(body: TokenBody, request: Request) -> TokenView:
        """A bearer token valid for ATELIER_TOKEN_TTL_SECONDS; refused once its key is revoked."""
        auth = ledger(request).authenticator
        if not auth.required:
            raise AuthError("this Atelier runs in local mode (ATELIER_AUTH=local): no token is needed", status=400)
        principal = await auth.directory.authenticate_key(body.api_key)
        access, ttl = await auth.token_for(body.api_key)
        return TokenView(access_token=access, expires_in=ttl, user=principal.user_id, role=principal.role)

    @api.get("/auth/me", response_model=Principal, tags=["auth"], summary="Who the credentials stand for",
             responses=errors(401, 403))
    async def me(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        """The user, role and how they were recognised."""
        return principal
