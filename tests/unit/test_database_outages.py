"""Which errors the worker takes for a database outage, and how `outlast_outage` rides one out."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout

from atelier.tools.errors import WorkflowError
from atelier.tools.ledger.outages import database_unavailable, outlast_outage
from atelier.tools.ledger.store import LeaseLostError, LedgerUnavailableError
from atelier.tools.worker.runner import classify


@pytest.mark.parametrize("exc", [
    pg_errors.AdminShutdown("terminating connection due to administrator command"),
    pg_errors.CannotConnectNow("the database system is starting up"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    PoolTimeout("couldn't get a connection after 30.00 sec"),
    pg_errors.ConnectionFailure("connection failure"),
    pg_errors.SerializationFailure("could not serialize access"),
    pg_errors.TooManyConnections("sorry, too many clients already"),
    LedgerUnavailableError("PostgreSQL is unreachable"),
], ids=lambda e: type(e).__name__)
def test_outages_are_transient(exc: Exception) -> None:
    assert database_unavailable(exc)
    assert classify(exc) == "transient"


@pytest.mark.parametrize("exc", [
    PoolClosed("the pool is closed"),
    pg_errors.QueryCanceled("canceling statement due to statement timeout"),
    pg_errors.UniqueViolation("duplicate key"),
    pg_errors.UndefinedTable("relation does not exist"),
    LeaseLostError("job", 1),
    RuntimeError("a bug"),
], ids=lambda e: type(e).__name__)
def test_other_errors_are_not_outages(exc: Exception) -> None:
    assert not database_unavailable(exc)
    assert classify(exc) is None


def test_a_comfyui_error_keeps_its_class() -> None:
    assert classify(WorkflowError("bad graph")) == "permanent"


@pytest.mark.asyncio
async def test_an_outage_is_ridden_out_with_growing_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    async def no_sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr("atelier.tools.ledger.outages.asyncio.sleep", no_sleep)
    monkeypatch.setattr("atelier.tools.ledger.outages.random.uniform", lambda _a, b: b)
    calls: list[int] = []
    told: list[str] = []

    async def write() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise pg_errors.AdminShutdown("terminating connection due to administrator command")
        return "recorded"

    answer = await outlast_outage(write, what="test", on_retry=lambda exc: told.append(type(exc).__name__))
    assert answer == "recorded" and len(calls) == 5 and told == ["AdminShutdown"] * 4
    assert pauses == [0.2, 0.4, 0.8, 1.6]


@pytest.mark.asyncio
async def test_patience_runs_out_and_other_errors_pass_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += max(seconds, 1.0)

    monkeypatch.setattr("atelier.tools.ledger.outages.asyncio.sleep", advance)

    async def away() -> None:
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError):
        await outlast_outage(away, what="test", patience_seconds=10, clock=lambda: now[0])
    assert 10 <= now[0] <= 12

    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise pg_errors.UniqueViolation("duplicate key")

    with pytest.raises(pg_errors.UniqueViolation):
        await outlast_outage(broken, what="test")
    assert calls == [1]
