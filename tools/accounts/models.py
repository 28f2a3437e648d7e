"""Account records: users, their quotas and API keys, and the principal a request acts as."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["LOCAL", "RESERVED_NAMES", "USER_PATTERN", "ApiKey", "NewKey", "Principal", "Quotas", "Role", "User",
           "check_user_id"]

Role = Literal["admin", "user"]
USER_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# Owners Atelier itself writes: "shared" is everyone's memory, the others are the owners front ends use when nobody
# logs in. A person with one of these names would see (or publish) what is not theirs.
RESERVED_NAMES = frozenset({"shared", "anonymous", "local", "api", "mcp", "cli", "batch", "dropzone", "system",
                            "admin"})


def check_user_id(user_id: str) -> str:
    """`user_id` when valid, else a ValueError saying what a user name may hold."""
    if not re.fullmatch(USER_PATTERN, user_id):
        raise ValueError(f"'{user_id}' is not a valid user name: use 1–64 lower-case letters, digits, '.', '_' or '-'")
    if user_id in RESERVED_NAMES:
        raise ValueError(f"'{user_id}' is a name Atelier uses itself ({', '.join(sorted(RESERVED_NAMES))}); "
                         "choose another user name")
    return user_id


class Quotas(BaseModel):
    """A user's limits; None means unlimited. Days and months are UTC calendar periods."""

    images_per_day: int | None = Field(None, ge=0)
    gpu_seconds_per_day: float | None = Field(None, ge=0)
    budget_per_month: float | None = Field(None, ge=0)
    max_concurrent: int | None = Field(None, ge=0)


class User(BaseModel):
    """A person or service that uses Atelier."""

    id: str
    role: Role
    display_name: str
    tier: str
    priority: int
    quotas: Quotas
    created_at: datetime
    disabled_at: datetime | None = None


class ApiKey(BaseModel):
    """An API key as stored: never the secret, only its prefix (for people) and hash."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None


class NewKey(BaseModel):
    """A key just made: the only moment its secret is known."""

    key: ApiKey
    secret: str


class Principal(BaseModel):
    """Who a request acts as, and how they proved it."""

    user_id: str
    role: Role
    via: Literal["local", "api-key", "token"]
    key_id: str | None = None
    priority: int = 0

    @property
    def is_admin(self) -> bool:
        """Admins read and act on everyone's jobs, images, memory and conversations."""
        return self.role == "admin"

    @property
    def sees_only(self) -> str | None:
        """The owner whose work this principal may read (None: everyone's, for admins) — the ledger's `owner=`."""
        return None if self.is_admin else self.user_id


LOCAL = Principal(user_id="local", role="admin", via="local")
