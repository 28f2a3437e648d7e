"""The database is away: how every Atelier server recognises it and answers (503 with Retry-After, not a 500).

While PostgreSQL restarts or is unreachable, a query fails with psycopg's OperationalError (a dropped connection,
a refused one, an administrator's shutdown) or the pool's PoolTimeout (no connection came in time), and opening the
ledger with LedgerUnavailableError. `database_away` recognises them, also as the cause of another error; the job
API answers them with `away_response` (503, `Retry-After`, the API's `{"detail": …}` body), MCP tools and the chat
page with `AWAY_MESSAGE`. Nothing is restarted: the ledger's pool re-connects once the database is back.

`bound_wait` keeps a request from waiting the pool's default 30 s for a connection during an outage: a server's
pool gives up after WAIT_SECONDS, so callers hear "retry" promptly instead of timing out themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from atelier.api.common import ErrorResponse
from atelier.tools.ledger.outages import database_unavailable

__all__ = ["AWAY_CLOSE", "AWAY_CLOSE_REASON", "AWAY_MESSAGE", "RETRY_AFTER_SECONDS", "WAIT_SECONDS", "away_response",
           "bound_wait", "database_away"]

log = logging.getLogger("atelier.api")

# What a client is told to wait before trying again (the Retry-After header, in seconds).
RETRY_AFTER_SECONDS = 5
# How long a server's request waits for a pooled connection before it is answered "retry" (psycopg_pool: 30 s).
WAIT_SECONDS = 5.0
# The WebSocket close code for "the database is away" (RFC 6455 1013: try again later).
AWAY_CLOSE = 1013
# A WebSocket close reason for it (at most 123 bytes).
AWAY_CLOSE_REASON = f"Atelier's database is not answering (restarting?); reconnect in {RETRY_AFTER_SECONDS} s"
# What a person or a client reads while the database is away (no host, port or driver text: those stay in the log).
AWAY_MESSAGE = (f"Atelier's database is not answering right now (it may be restarting); nothing is lost, retry in "
                f"{RETRY_AFTER_SECONDS} s. If it lasts, an admin checks the PostgreSQL server (`atelier db status`, "
                "DATABASE_URL)")


def database_away(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from, says PostgreSQL cannot be reached or dropped the connection."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if database_unavailable(exc):  # the workers' test too (tools/ledger/outages.py): one answer to "is it away?"
            return True
        if isinstance(exc, BaseExceptionGroup):  # a task group's failure (an event socket's follower)
            return any(database_away(inner) for inner in exc.exceptions)
        exc = exc.__cause__ or exc.__context__
    return False


def away_response(exc: BaseException) -> ErrorResponse:
    """503 with Retry-After and the API's error body; the driver's own words go to the log only."""
    log.warning("database unavailable, answering 503: %s", str(exc).strip().splitlines()[0] if str(exc) else
                type(exc).__name__)
    return ErrorResponse({"detail": AWAY_MESSAGE}, status_code=503,
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def bound_wait(service: Any) -> None:
    """Make the ledger service's pool give up on a connection after WAIT_SECONDS (never lengthen a shorter wait).

    A server's callers are better told to retry than kept waiting for the pool's default 30 s; a pool-less service
    (a test double) is left alone.
    """
    pool = getattr(getattr(service, "ledger", None), "pool", None)
    if pool is not None and getattr(pool, "timeout", 0) > WAIT_SECONDS:
        pool.timeout = WAIT_SECONDS
