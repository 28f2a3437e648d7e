"""API key format: `atl_<prefix>_<secret>`; only the prefix and a SHA-256 of the whole key are stored.

The secret is 32 random bytes (URL-safe base64), so a fast hash is enough: nobody can brute-force 256 bits,
and unlike a password hash it costs nothing per request. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["KEY_PREFIX", "hash_key", "matches", "new_secret", "split_key"]

KEY_PREFIX = "atl"


def new_secret() -> tuple[str, str]:
    """A fresh (prefix, full key)."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8 or len(parts[2]) < 32:
        return None
    return parts[1]


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    """Whether `key` is the key whose hash is stored (constant-time)."""
    return hmac.compare_digest(hash_key(key), stored_hash)
