"""Who is calling: credentials (Bearer JWT or API key) turned into a Principal, the same for every front end.

In local mode (`ATELIER_AUTH=local`, the default) nobody logs in and everything acts as the single local
admin. In accounts mode every request must carry `Authorization: Bearer <token>` (from POST /auth/token) or
`X-API-Key: <key>` (or `Authorization: Bearer <key>`, for clients that only send bearer tokens).
"""

from __future__ import annotations

from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.keys import KEY_PREFIX
from atelier.tools.accounts.models import LOCAL, Principal
from atelier.tools.accounts.tokens import AuthError, issue_token, read_token
from atelier.tools.settings import Settings

__all__ = ["Authenticator", "jwt_secret"]


async def jwt_secret(settings: Settings, directory: UserDirectory) -> str:
    """ATELIER_JWT_SECRET, else the secret generated in the database (shared by every process on it)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    async with directory.pool.connection() as conn:
        cur = await conn.execute("SELECT value FROM atelier_secrets WHERE name = 'jwt'")
        row = await cur.fetchone()
    if row is None:
        raise AuthError("the database has no JWT secret; set ATELIER_JWT_SECRET", status=500)
    return str(row["value"])


class Authenticator:
    """Turns a request's credentials into a Principal (or an AuthError saying why not)."""

    def __init__(self, settings: Settings, directory: UserDirectory) -> None:
        self.settings = settings
        self.directory = directory
        self._secret: str | None = None

    @property
    def required(self) -> bool:
        """Whether callers must prove who they are (accounts mode)."""
        return self.settings.auth_mode == "accounts"

    async def secret(self) -> str:
        """The JWT signing secret (read once)."""
        if self._secret is None:
            self._secret = await jwt_secret(self.settings, self.directory)
        return self._secret

    async def principal(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller from an `Authorization` header and/or an `X-API-Key` header."""
        if not self.required:
            return LOCAL
        if api_key:
            return await self.directory.authenticate_key(api_key)
        if not authorization:
            raise AuthError("this Atelier needs credentials: send 'Authorization: Bearer <token>' (POST /auth/token) "
                            "or 'X-API-Key: <key>' (`atelier users key NAME` makes one)")
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        credential = value.strip()
        if credential.startswith(KEY_PREFIX + "_"):
            return await self.directory.authenticate_key(credential)
        claims = read_token(credential, await self.secret())
        return await self.directory.authenticate_claims(claims)

    async def token_for(self, api_key: str) -> tuple[str, int]:
        """An access token for an API key, and its lifetime in seconds."""
        principal = await self.directory.authenticate_key(api_key)
        ttl = self.settings.token_ttl_seconds
        return issue_token(principal, await self.secret(), ttl_seconds=ttl), ttl
