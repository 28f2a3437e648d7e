"""Quotas, enforced inside the ledger's submit transaction: the one point every front end goes through.

The owner's `users` row is locked (FOR UPDATE) before usage is counted, so concurrent submits for one user
are serialised and can never overshoot; other users are not blocked. Owners without an account (local
single-user mode, tests) have no quotas. Days and months are UTC calendar periods.

- Images count images, not jobs: a job makes its `batch_size` images (planning records a workflow's own batch
  size when the request names none; 1 otherwise). Failed and cancelled jobs made none, so they count for none.
- GPU seconds and cost count pending jobs at their estimates and finished ones at what they really used, failed
  and cancelled ones included: a job that ran an hour on the GPU and then failed or was cancelled used that hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow

from atelier.tools.errors import AtelierError

__all__ = ["TIER_PRIORITY", "QuotaExceededError", "QuotaGate", "Usage", "open_gate", "resets_at"]

# Priority tiers: added to each job's own priority (clamped to ±9 for non-admins) so tiers always order first.
TIER_PRIORITY = {"bulk": -10, "standard": 0, "priority": 10}
# The range of PostgreSQL `integer`, the jobs.priority column's type.
_INT32 = (-(2**31), 2**31 - 1)
_USAGE = """
SELECT coalesce(sum(CASE WHEN status IN ('failed', 'cancelled') THEN 0
                         ELSE coalesce((params->>'batch_size')::integer, 1) END)
                FILTER (WHERE created_at >= %(day)s), 0) AS images_today,
       coalesce(sum(CASE WHEN status IN ('queued', 'submitted', 'running') THEN coalesce(estimated_seconds, 0)
                         ELSE coalesce(gpu_seconds, 0) END) FILTER (WHERE created_at >= %(day)s), 0) AS gpu_today,
       coalesce(sum(CASE WHEN status IN ('queued', 'submitted', 'running') THEN coalesce(estimated_cost, 0)
                         ELSE coalesce(actual_cost, 0) END) FILTER (WHERE created_at >= %(month)s), 0) AS cost_month,
       count(*) FILTER (WHERE status IN ('queued', 'submitted', 'running')) AS active
FROM jobs WHERE owner = %(owner)s
  AND (created_at >= %(month)s OR status IN ('queued', 'submitted', 'running'))
"""


class QuotaExceededError(AtelierError):
    """A job refused by a quota: which one, how much is used, the limit and when it resets."""

    def __init__(self, owner: str, quota: str, used: float, limit: float, resets: str) -> None:
        self.owner, self.quota, self.used, self.limit, self.resets = owner, quota, used, limit, resets
        flag = quota.replace("_", "-")
        super().__init__(f"{owner} has reached the {quota.replace('_', ' ')} quota: {used:g} of {limit:g} used; "
                         f"{resets}. Ask an admin to raise it (`atelier users quota {owner} --{flag} N`).")


@dataclass
class Usage:
    """What an owner has used in the current periods (pending jobs at their estimates)."""

    images_today: int
    gpu_seconds_today: float
    cost_this_month: float
    active: int


def resets_at(quota: str, now: datetime) -> str:
    """When a quota's period starts again, in words."""
    if quota == "max_concurrent":
        return "it frees up as your queued and running jobs finish"
    if quota == "budget_per_month":
        start = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
    else:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    left = start - now
    hours, minutes = divmod(int(left.total_seconds()) // 60, 60)
    return f"it resets at {start:%Y-%m-%d %H:%M} UTC (in {hours} h {minutes} min)"


class QuotaGate:
    """The owner's limits and usage, locked for this transaction; `admit` counts each job it lets through."""

    def __init__(self, owner: str, user: DictRow | None, usage: Usage, now: datetime) -> None:
        self.owner, self.user, self.usage, self.now = owner, user, usage, now

    @property
    def priority_offset(self) -> int:
        """The owner's tier priority (0 without an account)."""
        return int(self.user["priority"]) if self.user is not None else 0

    def priority(self, requested: int) -> int:
        """A job's ledger priority: the tier's offset plus the request's (clamped to ±9 unless an admin asks),
        always within the priority column's int32 range."""
        if self.user is not None and self.user["role"] != "admin":
            requested = max(-9, min(9, requested))
        return max(_INT32[0], min(_INT32[1], requested + self.priority_offset))

    def admit(self, images: int, seconds: float, cost: float) -> None:
        """Count one more job of `images` images, or raise QuotaExceededError naming the first limit it would cross."""
        if self.user is None:
            return
        if self.user["disabled_at"] is not None:
            raise AtelierError(f"the account '{self.owner}' is disabled; ask an admin (`atelier users enable`)")
        u = self.usage
        checks: list[tuple[str, Any, float, float]] = [
            ("max_concurrent", self.user["max_concurrent"], u.active, u.active + 1),
            ("images_per_day", self.user["images_per_day"], u.images_today, u.images_today + images),
            ("gpu_seconds_per_day", self.user["gpu_seconds_per_day"], u.gpu_seconds_today,
             u.gpu_seconds_today + seconds),
            ("budget_per_month", self.user["budget_per_month"], u.cost_this_month, u.cost_this_month + cost),
        ]
        for quota, limit, used, after in checks:
            if limit is not None and after > float(limit) + 1e-9:
                raise QuotaExceededError(self.owner, quota, round(used, 4), float(limit), resets_at(quota, self.now))
        u.active, u.images_today = u.active + 1, u.images_today + images
        u.gpu_seconds_today += seconds
        u.cost_this_month += cost


async def open_gate(conn: psycopg.AsyncConnection[DictRow], owner: str) -> QuotaGate:
    """Lock the owner's account row (inside the caller's transaction) and read their usage."""
    now = datetime.now(UTC)
    cur = await conn.execute("SELECT * FROM users WHERE id = %s FOR UPDATE", (owner,))
    user = await cur.fetchone()
    if user is None:
        return QuotaGate(owner, None, Usage(0, 0.0, 0.0, 0), now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    cur = await conn.execute(_USAGE, {"owner": owner, "day": day, "month": month})
    row = await cur.fetchone()
    assert row is not None
    usage = Usage(int(row["images_today"]), float(row["gpu_today"]), float(row["cost_month"]), int(row["active"]))
    return QuotaGate(owner, user, usage, now)
