"""Durable conversations: the LangGraph checkpointer in the same PostgreSQL as the ledger.

`postgres_checkpointer(settings)` yields an AsyncPostgresSaver on DATABASE_URL (or the embedded server),
with its tables created. `checkpointer()` is the factory `langgraph.json` names, so `langgraph dev` and the
LangGraph server keep threads, paused approvals and their jobs across restarts too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from atelier.tools.ledger.database import release_database
from atelier.tools.ledger.service import database_url
from atelier.tools.settings import Settings, load_settings

__all__ = ["checkpointer", "postgres_checkpointer"]


@asynccontextmanager
async def postgres_checkpointer(settings: Settings, conninfo: str | None = None) -> AsyncIterator[AsyncPostgresSaver]:
    """A ready AsyncPostgresSaver on the ledger's database (tables created on first use)."""
    url: str = conninfo if conninfo else await asyncio.to_thread(database_url, settings)  # may start embedded PG
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        # setup() is not safe when two processes start at once (both insert migration 1): take turns.
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as lock:
            await lock.execute("SELECT pg_advisory_lock(hashtext('atelier:checkpointer-setup'))")
            await saver.setup()
        yield saver


@asynccontextmanager
async def checkpointer() -> AsyncIterator[AsyncPostgresSaver]:
    """The factory for `langgraph.json` ("checkpointer": {"path": "./graphs/checkpoint.py:checkpointer"})."""
    async with postgres_checkpointer(load_settings()) as saver:
        yield saver
    # The server's lifespan ends here; uvicorn then dies of the SIGTERM it caught, without running atexit.
    await asyncio.to_thread(release_database)
