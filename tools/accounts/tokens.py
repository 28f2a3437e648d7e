"""JWT access tokens (PyJWT, HS256): issued for an API key, short-lived, and refused once their key is revoked."""

from __future__ import annotations

import time
import uuid

import jwt

from atelier.tools.accounts.models import Principal
from atelier.tools.errors import AtelierError

__all__ = ["AuthError", "TokenClaims", "issue_token", "read_token"]

_ALGORITHM = "HS256"
_ISSUER = "atelier"


class AuthError(AtelierError):
    """Credentials refused: `status` is 401 (missing, malformed, expired, tampered, revoked) or 403 (not allowed)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class TokenClaims:
    """What a verified token says: the user, role, the key it was issued for, and when it expires."""

    def __init__(self, user_id: str, role: str, key_id: str | None, expires: int) -> None:
        self.user_id, self.role, self.key_id, self.expires = user_id, role, key_id, expires


def issue_token(principal: Principal, secret: str, *, ttl_seconds: int = 3600, now: float | None = None) -> str:
    """A signed access token for `principal`, valid for `ttl_seconds`."""
    issued = int(now if now is not None else time.time())
    claims = {"sub": principal.user_id, "role": principal.role, "kid": principal.key_id, "iss": _ISSUER,
              "iat": issued, "exp": issued + ttl_seconds, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def read_token(token: str, secret: str) -> TokenClaims:
    """Verify signature, issuer and expiry; AuthError (401) says which check failed."""
    try:
        claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], issuer=_ISSUER,
                            options={"require": ["sub", "exp", "iat", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("the access token has expired; get a new one from POST /auth/token with your API key") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("the access token's signature is not valid (tampered, or signed by another server); "
                        "get a new one from POST /auth/token") from exc
    except jwt.DecodeError as exc:
        raise AuthError(f"the access token is damaged or was altered ({exc}); get a new one from POST /auth/token"
                        ) from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"the access token is not valid ({exc}); send 'Authorization: Bearer <token>' with a token "
                        "from POST /auth/token, or 'X-API-Key: <key>'") from exc
    role = str(claims.get("role", "user"))
    if role not in ("admin", "user"):
        raise AuthError("the access token names an unknown role; get a new one from POST /auth/token")
    return TokenClaims(str(claims["sub"]), role, claims.get("kid"), int(claims["exp"]))
