"""The LangGraph server's custom auth (`langgraph.json` "auth"): who is calling, and which threads are theirs.

`authenticate` turns `Authorization: Bearer <token or API key>` or `X-API-Key: <key>` into the caller through
the same Authenticator as the job API, on the ledger's database (its pool opened on first use, once per
process). In local mode (ATELIER_AUTH=local, the default) every caller is the local admin, unchecked.

The resource handlers write `metadata.owner` on what a caller creates (threads, runs, crons, assistants)
and filter reads, searches, updates and deletes on it, so a user sees only their own; admins see everything.
The graphs' own assistants (`created_by: system`) stay visible to everyone so anyone can run them. Store
namespaces of users are put under their name. The graphs take the owner of a run from the authenticated
identity too (graphs/owner.py), never from the client's input.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, cast

from langgraph_sdk import Auth

from atelier.graphs.owner import ADMIN_PERMISSION
from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.models import LOCAL, Principal
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.ledger.service import database_url
from atelier.tools.ledger.store import JobLedger
from atelier.tools.settings import Settings, load_settings

__all__ = ["ADMIN", "auth", "authenticate", "user_of"]

ADMIN = ADMIN_PERMISSION  # the permission that lifts ownership filters
_CREATES = ("create", "create_run")

auth = Auth()


class _Accounts:
    """This process's settings and Authenticator, made on first use (no connection at import)."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.authenticator: Authenticator | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()  # keeps the pool open for the life of the server process

    async def load_settings(self) -> Settings:
        """The settings (read once, off the event loop: they may read an .env file)."""
        if self.settings is None:
            self.settings = await asyncio.to_thread(load_settings)
        return self.settings

    async def get_authenticator(self, settings: Settings) -> Authenticator:
        """The Authenticator on the ledger's database; its pool is opened (and the schema migrated) once."""
        if self.authenticator is None:
            async with self._lock:
                if self.authenticator is None:
                    url = await asyncio.to_thread(database_url, settings)  # may start the embedded PostgreSQL
                    ledger = await self._stack.enter_async_context(JobLedger.open(url, min_size=1, max_size=4))
                    self.authenticator = Authenticator(settings, UserDirectory(ledger.pool))
        return self.authenticator


_accounts = _Accounts()


def user_of(principal: Principal) -> Auth.types.MinimalUserDict:
    """The LangGraph user for a principal: identity = user name; admins get the ADMIN permission."""
    permissions = ["authenticated", *([ADMIN] if principal.is_admin else [])]
    return {"identity": principal.user_id, "display_name": principal.user_id, "is_authenticated": True,
            "permissions": permissions}


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    """One request header as text (ASGI header names are lower-case bytes)."""
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


@auth.authenticate
async def authenticate(headers: dict[bytes, bytes]) -> Auth.types.MinimalUserDict:
    """The caller of a request; 401 (or 403 for a disabled account) with the reason when refused."""
    settings = await _accounts.load_settings()
    if settings.auth_mode != "accounts":
        return user_of(LOCAL)
    authenticator = await _accounts.get_authenticator(settings)
    try:
        principal = await authenticator.principal(_header(headers, b"authorization"), _header(headers, b"x-api-key"))
    except AuthError as exc:
        raise Auth.exceptions.HTTPException(status_code=exc.status, detail=str(exc),
                                            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                                            ) from exc
    return user_of(principal)


def _is_admin(ctx: Auth.types.AuthContext) -> bool:
    """Whether the caller sees and acts on everyone's resources."""
    return ADMIN in ctx.permissions


def _stamp_owner(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, Any] | None:
    """On create, the caller's name as `metadata.owner` (an admin may name another owner); users cannot change it.

    Returns the metadata written to, if any.
    """
    identity = ctx.user.identity
    metadata = value.get("metadata")
    if ctx.action in _CREATES:
        if not isinstance(metadata, dict):
            metadata = value["metadata"] = {}
        if _is_admin(ctx):
            metadata.setdefault("owner", identity)
        else:
            metadata["owner"] = identity
        return metadata
    if ctx.action == "update" and isinstance(metadata, dict) and not _is_admin(ctx):
        metadata["owner"] = identity  # a user cannot hand a thread (or its runs) to someone else
        return metadata
    return None


@auth.on
async def owner_only(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Auth.types.HandlerResult:
    """Threads, their runs and crons: stamped with their owner, and visible to that owner (and admins) only."""
    _stamp_owner(ctx, value)
    return None if _is_admin(ctx) else {"owner": ctx.user.identity}


@auth.on.assistants
async def own_or_system_assistants(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Auth.types.HandlerResult:
    """Assistants: anyone reads the graphs' own (`created_by: system`); users change only those they created."""
    metadata = _stamp_owner(ctx, value)
    if metadata is not None and not _is_admin(ctx):
        metadata.pop("created_by", None)  # "system" would make a user's assistant visible to everyone
    if _is_admin(ctx):
        return None
    mine = {"owner": ctx.user.identity}
    if ctx.action in ("read", "search"):
        return cast(Auth.types.FilterType, {"$or": [mine, {"created_by": "system"}]})
    return mine


@auth.on.store
async def own_namespaces(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Auth.types.HandlerResult:
    """The store: a user's namespaces all start with their name (added when missing); admins reach any."""
    if _is_admin(ctx):
        return None
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = (ctx.user.identity, *namespace)
    return None
