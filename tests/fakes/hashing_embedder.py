"""A tiny deterministic embedder for memory tests: hashed bag of words, so texts sharing words lie close."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence


class HashingEmbedder:
    """Each word adds ±1 to one of `dim` buckets (by its hash); the sum is L2-normalised. No model, no network."""

    def __init__(self, dim: int = 64, name: str = "test:hashing") -> None:
        self.dim = dim
        self.name = f"{name}-{dim}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text (an empty text gets the first axis)."""
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> list[float]:
        """The hashed bag of words of one text."""
        vector = [0.0] * self.dim
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest[:4], "big") % self.dim] += 1.0 if digest[7] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0:
            return [1.0] + [0.0] * (self.dim - 1)
        return [x / norm for x in vector]
