"""Named crash points for chaos tests: `ATELIER_FAILPOINTS="after_submit=0.1,mid_run=0.05"` SIGKILLs the worker.

Each point is a moment where a crash is hardest to recover from (after the prompt was sent, after ComfyUI
finished but before the ledger knows). Unset, a check costs one dict lookup.
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass, field

__all__ = ["POINTS", "Failpoints", "parse_failpoints"]

POINTS: tuple[str, ...] = ("before_submit", "after_submit", "mid_run", "after_finish", "after_store")


def parse_failpoints(text: str) -> dict[str, float]:
    """Parse 'name=probability,…'; an unknown name or a bad probability is a ValueError naming it."""
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        probability = float(value or "1")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"failpoint {name}: probability {value!r} is not between 0 and 1")
        points[name] = probability
    return points


@dataclass(frozen=True)
class Failpoints:
    """The crash points a worker honours (none unless ATELIER_FAILPOINTS is set)."""

    points: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Failpoints:
        """Read ATELIER_FAILPOINTS."""
        return cls(parse_failpoints(os.environ.get("ATELIER_FAILPOINTS", "")))

    def hit(self, name: str) -> None:
        """SIGKILL this process (no cleanup at all) with the probability configured for `name`."""
        probability = self.points.get(name)
        if probability and random.random() < probability:
            os.kill(os.getpid(), signal.SIGKILL)
