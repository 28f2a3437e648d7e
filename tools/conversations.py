"""Chat conversations as the chat lists them: one row per thread (owner, title, last use) beside the checkpoints.

The conversation itself lives in LangGraph's Postgres checkpointer under the same thread id; this table only
names threads and orders them. The images a thread asked for are found through the jobs' idempotency keys
(`chat:<thread>:<turn>:<n>`, written by the supervisor's submit step).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from atelier.tools.errors import AtelierError
from atelier.tools.ledger.models import Job

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["ChatThread", "ThreadDirectory", "chat_job_key"]

_TITLE_CHARS = 60


def chat_job_key(thread_id: str, turn: str, index: int) -> str:
    """The idempotency key of the `index`-th image asked for in one turn of a thread."""
    return f"chat:{thread_id}:{turn}:{index}"


class ChatThread(BaseModel):
    """One conversation in the list."""

    id: str
    owner: str
    title: str
    created_at: datetime
    updated_at: datetime


class ThreadDirectory:
    """The `chat_threads` table and the jobs each thread made."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]) -> None:
        self.pool = pool

    @classmethod
    def for_service(cls, service: LedgerService) -> ThreadDirectory:
        """The conversations kept in a LedgerService's database (what front ends open)."""
        return cls(service.ledger.pool)

    async def touch(self, thread_id: str, owner: str, first_message: str) -> ChatThread:
        """Record a turn: a new thread is titled by its first message; a known one only gets newer.

        Another owner's thread is refused (AtelierError), in the same statement, so a guessed or leaked thread id
        never lets anyone read or continue someone else's conversation.
        """
        title = " ".join(first_message.split())[:_TITLE_CHARS] or "(empty)"
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO chat_threads (id, owner, title) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET updated_at = now() WHERE chat_threads.owner = EXCLUDED.owner "
                "RETURNING *", (thread_id, owner, title))
            row = await cur.fetchone()
        if row is None:
            raise AtelierError(f"no conversation {thread_id!r} of yours; start a new conversation")
        return ChatThread.model_validate(row)

    async def recent(self, owner: str, limit: int = 50) -> list[ChatThread]:
        """The owner's threads, most recently used first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM chat_threads WHERE owner = %s ORDER BY updated_at DESC LIMIT %s", (owner, limit))
            return [ChatThread.model_validate(row) for row in await cur.fetchall()]

    async def get(self, thread_id: str, owner: str) -> ChatThread | None:
        """One of the owner's threads (None for another owner's or an unknown id)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM chat_threads WHERE id = %s AND owner = %s", (thread_id, owner))
            row = await cur.fetchone()
        return None if row is None else ChatThread.model_validate(row)

    async def jobs(self, thread_id: str) -> dict[str, list[Job]]:
        """The thread's image jobs by turn (the id of the human message that asked), each turn's in order."""
        prefix = chat_job_key(thread_id, "", 0).rsplit(":", 2)[0] + ":"
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM jobs WHERE idempotency_key LIKE %s ORDER BY created_at",
                (prefix.replace("%", r"\%").replace("_", r"\_") + "%",))
            rows = await cur.fetchall()
        by_turn: dict[str, list[tuple[int, Job]]] = {}
        for row in rows:
            turn, _, index = str(row["idempotency_key"])[len(prefix):].rpartition(":")
            by_turn.setdefault(turn, []).append((int(index) if index.isdigit() else 0, Job.model_validate(row)))
        return {turn: [job for _, job in sorted(jobs, key=lambda pair: pair[0])] for turn, jobs in by_turn.items()}
