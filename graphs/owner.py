"""Who a graph run acts for: the caller, never the run's input or state.

Through the LangGraph server (`langgraph.json` names graphs/server_auth.py) every run's `configurable` carries
`langgraph_auth_user_id`, set by the server from the request's credentials (clients cannot set it: the server
strips that reserved key from requests and writes it itself): the authenticated user in accounts mode, the
local admin in local mode. That identity owns the run whatever the input, `update_state` or a `Command` put in
the state. In-process callers (the chat, MCP, Python), which authenticated their user themselves, name it in
`configurable["owner"]`; without either the run is the local user's. Every node that acts (searches the
memory, reads a style, queues jobs) asks `acting_owner`; the state's `owner` is only a record of it.
"""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from atelier.tools.errors import AtelierError
from atelier.tools.settings import Settings

__all__ = ["ADMIN_PERMISSION", "AUTH_USER_KEY", "LOCAL_OWNER", "OWNER_KEY", "AdminOnlyError", "acting_owner",
           "authenticated_user", "pinned_owner", "require_admin"]

AUTH_USER_KEY = "langgraph_auth_user_id"
AUTH_PERMISSIONS_KEY = "langgraph_auth_permissions"
ADMIN_PERMISSION = "atelier:admin"  # given to admins by graphs/server_auth.py
OWNER_KEY = "owner"  # in-process callers' `configurable` key for the user they authenticated
LOCAL_OWNER = "local"  # the one user of local mode (tools.accounts.models.LOCAL)


def authenticated_user(config: RunnableConfig | None) -> str | None:
    """The identity the LangGraph server authenticated for this run; None outside the server."""
    identity = ((config or {}).get("configurable") or {}).get(AUTH_USER_KEY)
    return identity if isinstance(identity, str) and identity else None


def acting_owner(config: RunnableConfig | None) -> str:
    """Whom this run acts for: the server's authenticated identity, else the in-process caller's, else local."""
    if (identity := authenticated_user(config)) is not None:
        return identity
    named = ((config or {}).get("configurable") or {}).get(OWNER_KEY)
    return named if isinstance(named, str) and named else LOCAL_OWNER


def pinned_owner(config: RunnableConfig | None, settings: Settings) -> str | None:
    """The owner a run must have whatever its input says: the authenticated caller in accounts mode, else None."""
    return authenticated_user(config) if settings.auth_mode == "accounts" else None


class AdminOnlyError(AtelierError, ValueError):
    """A graph only admins may run (a ValueError too: the LangGraph server shows those messages to the client)."""


def require_admin(config: RunnableConfig | None, settings: Settings, what: str) -> None:
    """Refuse a non-admin caller of the LangGraph server in accounts mode (AtelierError naming the way round)."""
    user = pinned_owner(config, settings)
    if user is None:
        return
    permissions = ((config or {}).get("configurable") or {}).get(AUTH_PERMISSIONS_KEY) or []
    if ADMIN_PERMISSION not in permissions:
        raise AdminOnlyError(f"{what} is for admins when Atelier has accounts ({user} is not one): it renders "
                           "straight on ComfyUI, outside the ledger and its quotas; run the supervisor graph, or "
                           "POST /jobs, instead")
