"""Users and API keys in PostgreSQL: create, list, change roles, tiers and quotas; issue, check and revoke keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from atelier.tools.accounts.keys import hash_key, matches, new_secret, split_key
from atelier.tools.accounts.models import ApiKey, NewKey, Principal, Quotas, Role, User, check_user_id
from atelier.tools.accounts.quotas import TIER_PRIORITY
from atelier.tools.accounts.tokens import AuthError, TokenClaims
from atelier.tools.errors import AtelierError

__all__ = ["AccountError", "UserDirectory"]

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


class AccountError(AtelierError):
    """A user or key that cannot be created, found or changed as asked."""


def _user(row: DictRow) -> User:
    """A users row as a User."""
    quotas = Quotas(images_per_day=row["images_per_day"], gpu_seconds_per_day=row["gpu_seconds_per_day"],
                    budget_per_month=row["budget_per_month"], max_concurrent=row["max_concurrent"])
    return User(id=row["id"], role=row["role"], display_name=row["display_name"], tier=row["tier"],
                priority=row["priority"], quotas=quotas, created_at=row["created_at"], disabled_at=row["disabled_at"])


class UserDirectory:
    """The `users` and `api_keys` tables."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def create(self, user_id: str, *, role: Role = "user", display_name: str = "", tier: str = "standard",
                     quotas: Quotas | None = None) -> User:
        """A new user (AccountError when the name is taken or invalid)."""
        try:
            check_user_id(user_id)
        except ValueError as exc:
            raise AccountError(str(exc)) from exc
        self._check_tier(tier)
        q = quotas or Quotas()
        async with self.pool.connection() as conn:
            try:
                cur = await conn.execute(
                    "INSERT INTO users (id, role, display_name, tier, priority, images_per_day, gpu_seconds_per_day, "
                    "budget_per_month, max_concurrent) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                    (user_id, role, display_name, tier, TIER_PRIORITY[tier], q.images_per_day, q.gpu_seconds_per_day,
                     q.budget_per_month, q.max_concurrent))
            except psycopg.errors.UniqueViolation as exc:
                raise AccountError(f"a user named '{user_id}' exists; `atelier users list` shows them") from exc
            row = await cur.fetchone()
        assert row is not None
        return _user(row)

    @staticmethod
    def _check_tier(tier: str) -> None:
        """A known priority tier."""
        if tier not in TIER_PRIORITY:
            raise AccountError(f"unknown tier '{tier}'; use one of: {', '.join(TIER_PRIORITY)}")

    async def get(self, user_id: str) -> User:
        """One user."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM users WHERE id = %s", (user_id,))
            row = await cur.fetchone()
        if row is None:
            raise AccountError(f"no user named '{user_id}'; `atelier users list` shows them")
        return _user(row)

    async def all(self) -> list[User]:
        """Every user, by name."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM users ORDER BY id")
            return [_user(row) for row in await cur.fetchall()]

    async def update(self, user_id: str, *, role: Role | None = None, tier: str | None = None,
                     quotas: Quotas | None = None, disabled: bool | None = None) -> User:
        """Change a user's role, tier, quotas (the fields set in `quotas`; 0 blocks, None keeps) or state."""
        await self.get(user_id)
        if tier is not None:
            self._check_tier(tier)
        sets: list[str] = []
        values: list[object] = []
        if role is not None:
            sets.append("role = %s")
            values.append(role)
        if tier is not None:
            sets += ["tier = %s", "priority = %s"]
            values += [tier, TIER_PRIORITY[tier]]
        for name in (quotas.model_fields_set if quotas else set()):
            sets.append(f"{name} = %s")
            values.append(getattr(quotas, name))
        if disabled is not None:
            sets.append("disabled_at = " + ("coalesce(disabled_at, now())" if disabled else "NULL"))
        if sets:
            async with self.pool.connection() as conn:
                await conn.execute(f"UPDATE users SET {', '.join(sets)} WHERE id = %s".encode(), (*values, user_id))
        return await self.get(user_id)

    async def create_key(self, user_id: str, name: str = "", *, expires_in_days: float | None = None) -> NewKey:
        """A new API key; its secret is returned here once and never stored."""
        await self.get(user_id)
        prefix, secret = new_secret()
        expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO api_keys (id, user_id, name, prefix, hash, expires_at) VALUES (%s, %s, %s, %s, %s, %s) "
                "RETURNING *", (uuid.uuid4(), user_id, name, prefix, hash_key(secret), expires))
            row = await cur.fetchone()
        assert row is not None
        return NewKey(key=ApiKey.model_validate({**row, "id": str(row["id"])}), secret=secret)

    async def keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Keys (of one user, or everyone's), newest first, without secrets."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM api_keys WHERE %(u)s::text IS NULL OR user_id = %(u)s "
                                     "ORDER BY created_at DESC", {"u": user_id})
            return [ApiKey.model_validate({**row, "id": str(row["id"])}) for row in await cur.fetchall()]

    async def revoke(self, key: str) -> ApiKey:
        """Revoke a key by its id or prefix: it and every token issued for it stop working at once."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                "WHERE prefix = %(k)s OR id::text = %(k)s RETURNING *", {"k": key})
            row = await cur.fetchone()
        if row is None:
            raise AccountError(f"no API key '{key}'; `atelier users keys` lists ids and prefixes")
        return ApiKey.model_validate({**row, "id": str(row["id"])})

    async def authenticate_key(self, key: str) -> Principal:
        """The principal an API key stands for; AuthError (401) says why a key is refused."""
        prefix = split_key(key)
        if prefix is None:
            raise AuthError("the API key is malformed; keys look like atl_XXXXXXXX_… (`atelier users key NAME`)")
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.*, u.role, u.priority, u.disabled_at AS user_disabled FROM api_keys k "
                "JOIN users u ON u.id = k.user_id WHERE k.prefix = %s", (prefix,))
            row = await cur.fetchone()
            if row is None or not matches(key, row["hash"]):
                raise AuthError("the API key is not valid (unknown or mistyped)")
            self._check_usable(row)
            await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (row["id"],))
        return Principal(user_id=row["user_id"], role=row["role"], via="api-key", key_id=str(row["id"]),
                         priority=row["priority"])

    @staticmethod
    def _check_usable(row: DictRow) -> None:
        """Refuse a revoked or expired key and a disabled user."""
        if row["revoked_at"] is not None:
            raise AuthError(f"the API key {row['prefix']} was revoked on {row['revoked_at']:%Y-%m-%d %H:%M} UTC; "
                            "ask for a new one")
        if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
            raise AuthError(f"the API key {row['prefix']} expired on {row['expires_at']:%Y-%m-%d %H:%M} UTC; "
                            "ask for a new one")
        if row["user_disabled"] is not None:
            raise AuthError(f"the account '{row['user_id']}' is disabled", status=403)

    async def session_principal(self, user_id: str) -> Principal:
        """The principal of a user who logged in earlier (a chat session): refused once disabled (403) or gone."""
        try:
            user = await self.get(user_id)
        except AccountError as exc:
            raise AuthError(str(exc)) from exc
        if user.disabled_at is not None:
            raise AuthError(f"the account '{user.id}' is disabled; an admin can run `atelier users enable {user.id}`",
                            status=403)
        return Principal(user_id=user.id, role=user.role, via="api-key", priority=user.priority)

    async def authenticate_claims(self, claims: TokenClaims) -> Principal:
        """The principal of a verified token, refused when its key was revoked or its user disabled since."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.*, u.role, u.priority, u.disabled_at AS user_disabled FROM users u "
                "LEFT JOIN api_keys k ON k.id::text = %s AND k.user_id = u.id WHERE u.id = %s",
                (claims.key_id, claims.user_id))
            row = await cur.fetchone()
        if row is None:
            raise AuthError(f"the access token's user '{claims.user_id}' no longer exists")
        if claims.key_id is not None:
            if row["id"] is None:
                raise AuthError("the access token's API key no longer exists; get a new token")
            self._check_usable(row)
        elif row["user_disabled"] is not None:
            raise AuthError(f"the account '{claims.user_id}' is disabled", status=403)
        return Principal(user_id=claims.user_id, role=row["role"], via="token", key_id=claims.key_id,
                         priority=row["priority"])
