"""Measured workflow times: what ComfyUI really took, per workflow and server (learned by a trigger on success).

The catalog's `typical_seconds` is a guess written once; these averages replace it for routing and estimates
as soon as a workflow has run (`estimates()`), and `atelier workflows` shows them beside the guess.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

__all__ = ["Timing", "WorkflowTimings"]


class Timing(BaseModel):
    """The moving average of one workflow's execution time on one server."""

    workflow: str
    server: str
    runs: int
    avg_seconds: float
    updated_at: datetime


class WorkflowTimings:
    """Reads `workflow_timings` through the ledger's pool."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    async def all(self) -> list[Timing]:
        """Every (workflow, server) average, by workflow then server."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM workflow_timings ORDER BY workflow, server")
            return [Timing.model_validate(row) for row in await cur.fetchall()]

    async def estimates(self) -> dict[str, float]:
        """Per workflow name: the run-weighted mean of its servers' averages (seconds)."""
        totals: dict[str, tuple[float, int]] = {}
        for timing in await self.all():
            name = timing.workflow.rsplit("/", 1)[-1]
            seconds, runs = totals.get(name, (0.0, 0))
            totals[name] = (seconds + timing.avg_seconds * timing.runs, runs + timing.runs)
        return {name: seconds / runs for name, (seconds, runs) in totals.items() if runs}
