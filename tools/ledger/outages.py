"""PostgreSQL outages: which errors mean "the database is away for now", and riding one out.

A restart (fast or not), a failover or a network blink shows up in psycopg as an `OperationalError`: the server
ended the session ("terminating connection due to administrator command", `AdminShutdown`), refuses connections
while it starts or stops (`CannotConnectNow`), the socket is gone (`ConnectionFailure` and friends), or the pool
found no working connection in time (`PoolTimeout`). None of them says anything about the statement that was sent,
so the same statement may be sent again once the server is back. A closed pool is not an outage: the process is
stopping.

`outlast_outage` repeats an operation while it fails that way, with growing pauses, up to a patience limit. An
operation whose commit was lost with the connection may already have happened: callers whose statements are fenced
(tools/ledger/store.py) recognise that from the row when the retried statement finds nothing to change.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed

from atelier.tools.ledger.store import LedgerUnavailableError

__all__ = ["DEFAULT_PATIENCE_SECONDS", "database_unavailable", "outage_reason", "outlast_outage"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a write that must not be lost (a stored output's record) waits for the database by default.
DEFAULT_PATIENCE_SECONDS = 600.0

# SQLSTATE classes of a server going away or refusing for now: 08 connection exception, 57 operator intervention
# (admin shutdown, crash shutdown, cannot connect now), 53 insufficient resources (too many connections), 40
# transaction rollback (serialization failure, deadlock: the same statement may succeed when sent again).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "57", "53", "40")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is away or refused for now (sending the same statement later may work)."""
    if isinstance(exc, PoolClosed):
        return False
    if isinstance(exc, pg_errors.QueryCanceled):
        return False  # statement_timeout or a cancel (SQLSTATE 57014): not an outage
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return exc.sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, LedgerUnavailableError)


def outage_reason(exc: BaseException) -> str:
    """The first line of a database error, for logs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def outlast_outage(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    patience_seconds: float = DEFAULT_PATIENCE_SECONDS,
    first_pause: float = 0.2,
    longest_pause: float = 5.0,
    on_retry: Callable[[BaseException], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `operation` until it succeeds, repeating it while the database is unavailable, for `patience_seconds`.

    Pauses grow from `first_pause` to `longest_pause` (with jitter, so many workers do not return at once). Any
    other error, or an outage longer than the patience, is raised. `on_retry` is told of every failed try.
    """
    deadline = clock() + patience_seconds
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not database_unavailable(exc) or clock() >= deadline:
                raise
            failures += 1
            if on_retry is not None:
                on_retry(exc)
            pause = min(longest_pause, first_pause * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            pause = max(0.0, min(pause, deadline - clock()))
            log.warning("%s: the database is unavailable (%s); try %d again in %.1f s",
                        what, outage_reason(exc), failures + 1, pause)
            await asyncio.sleep(pause)
