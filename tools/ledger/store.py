"""The job ledger's SQL: submit, read, cancel, claim under a lease, and fenced result recording.

Fencing: every claim increments `attempts`; a worker records a result only with the attempt number it
claimed (`WHERE id = … AND attempts = …`), so a worker whose lease lapsed and whose job was taken over
can no longer write. `LeaseLostError` tells it so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atelier.tools.accounts.quotas import open_gate
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.indexing import TO_INDEX
from atelier.tools.ledger.migrations import apply_migrations
from atelier.tools.ledger.models import Job, JobOutput, JobRequest, SubmitOutcome
from atelier.tools.ledger.notifications import STATUS, NotificationHub
from atelier.tools.ledger.planning import PlannedJob

__all__ = ["Claim", "ClaimSpec", "IdempotencyKeyTakenError", "JobLedger", "JobNotFoundError", "LeaseLostError",
           "LedgerUnavailableError", "RatingToSync",
           "open_pool"]


class IdempotencyKeyTakenError(AtelierError):
    """An idempotency key that another owner's job already holds."""


class JobNotFoundError(AtelierError):
    """No job has this id."""

    def __init__(self, job_id: str, *, ambiguous: bool = False) -> None:
        if ambiguous:
            super().__init__(f"several jobs start with {job_id}; give more of the id (see `atelier jobs`)")
        else:
            super().__init__(f"no job {job_id}; list jobs with `atelier jobs`")
        self.job_id = job_id


class LeaseLostError(AtelierError):
    """The worker's attempt is no longer the job's current one: another worker took it over."""

    def __init__(self, job_id: str, attempt: int) -> None:
        super().__init__(f"job {job_id}: attempt {attempt} lost its lease; another worker owns the job now")
        self.job_id = job_id
        self.attempt = attempt


class LedgerUnavailableError(AtelierError):
    """PostgreSQL could not be reached."""


_FENCE = "id = %(id)s AND attempts = %(attempt)s AND status IN ('submitted', 'running')"

_CLAIM = (b"SELECT * FROM atelier_claim(%(worker)s, %(server)s, %(vram)s, %(known)s, %(lease)s, "
          b"%(models)s::text[], %(affinity)s)")


@dataclass(frozen=True)
class Claim:
    """A claimed job, the server its previous attempt used (if any), and whether it was a lapsed lease."""

    job: Job
    previous_server: str | None
    recovered: bool


_INSERT_COLUMNS = """INSERT INTO jobs (id, status, workflow, params, priority, owner, idempotency_key, cache_key,
    use_cache, vram_gb, estimated_seconds, estimated_cost, max_attempts, batch, batch_row, models"""
_INSERT_VALUES = """%(workflow)s, %(params)s, %(priority)s, %(owner)s, %(key)s, %(cache_key)s,
    %(use_cache)s, %(vram)s, %(est_s)s, %(est_cost)s, %(max)s, %(batch)s, %(row)s, %(models)s::text[]"""
# A new queued job, unless the cache may answer it (then nothing is inserted and the caller looks closer).
_INSERT_UNLESS_CACHED = f"""{_INSERT_COLUMNS})
SELECT %(id)s, 'queued', {_INSERT_VALUES}
WHERE NOT (%(use_cache)s AND EXISTS (
    SELECT 1 FROM jobs WHERE cache_key = %(cache_key)s AND status = 'succeeded' AND outputs <> '[]'::jsonb))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *""".encode()
# A job answered from the cache (status succeeded, outputs copied), or queued when the cached files are gone.
_INSERT_CACHED = f"""{_INSERT_COLUMNS}, outputs, cached_from, actual_cost, gpu_seconds, finished_at)
SELECT %(id)s, %(status)s, {_INSERT_VALUES}, %(outputs)s, %(cached_from)s,
    CASE WHEN %(cached_from)s::uuid IS NULL THEN NULL ELSE 0 END,
    CASE WHEN %(cached_from)s::uuid IS NULL THEN NULL ELSE 0 END,
    CASE WHEN %(cached_from)s::uuid IS NULL THEN NULL ELSE now() END
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *""".encode()


_COMPLETE_SET = (
    "status = 'succeeded', outputs = %(outputs)s, gpu_seconds = %(gpu)s, actual_cost = %(cost)s, "
    "error = NULL, error_kind = NULL, finished_at = now(), lease_expires_at = NULL, "
    "submitted_at = coalesce(submitted_at, claimed_at), started_at = coalesce(started_at, claimed_at)"
)


# What an attempt that did not succeed used on the GPU (kept as recorded when it did not measure any).
_USED_SET = ("gpu_seconds = coalesce(%(gpu)s::double precision, gpu_seconds), "
             "actual_cost = coalesce(%(cost)s::double precision, actual_cost)")


def _complete_params(
    job: Job, outputs: Sequence[JobOutput], gpu_seconds: float | None, actual_cost: float | None
) -> dict[str, Any]:
    """Parameters of the fenced success update."""
    return {
        "id": job.id, "attempt": job.attempts, "gpu": gpu_seconds, "cost": actual_cost,
        "outputs": Jsonb([o.model_dump(mode="json") for o in outputs]),
    }


@dataclass(frozen=True)
class ClaimSpec:
    """Who claims, for which server, with how much VRAM to offer, and for how long.

    `models` are the model files the server has loaded: queued jobs needing only those go first among
    jobs of the same priority, while the queue's oldest job has waited less than `affinity_seconds`.
    """

    worker: str
    server: str
    vram_free_gb: float
    known_servers: tuple[str, ...]
    lease_seconds: float
    models: tuple[str, ...] = ()
    affinity_seconds: float = 0.0

    def params(self) -> dict[str, Any]:
        """The claim function's arguments."""
        return {"worker": self.worker, "server": self.server, "vram": self.vram_free_gb,
                "known": list(self.known_servers), "lease": self.lease_seconds, "models": list(self.models),
                "affinity": self.affinity_seconds}


@dataclass(frozen=True)
class RatingToSync:
    """A job's current rating that the memory does not hold yet; `rated_at` stamps which rating it is."""

    job_id: uuid.UUID
    rating: int | None
    thumb: int | None
    rated_at: datetime
    images: int


# How long one connection attempt may take, and how long the pool keeps re-making a lost connection in the background
# before it gives that one up (it makes a new one when asked for a connection again).
CONNECT_TIMEOUT_SECONDS = 10
RECONNECT_TIMEOUT_SECONDS = 60.0


def open_pool(conninfo: str, *, min_size: int = 1, max_size: int = 8,
              timeout: float = 30.0) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
    """The ledger's connection pool (not opened yet), made to ride out a PostgreSQL restart.

    Each connection is checked as it leaves the pool (one empty query): after a restart the pool's connections are
    all dead, and without the check the first statement on each would fail; a dead one is dropped and re-made. A
    connection attempt gives up after CONNECT_TIMEOUT_SECONDS, and waiting for a connection after `timeout` seconds
    (`PoolTimeout`, which callers treat as the database being away: tools/ledger/outages.py).
    """
    return AsyncConnectionPool(
        conninfo, min_size=min_size, max_size=max_size, open=False, timeout=timeout,
        check=AsyncConnectionPool.check_connection, reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def _claim(row: DictRow | None) -> Claim | None:
    """A claimed row as a Claim (None when nothing was claimable)."""
    job = _job(row)
    return None if job is None else Claim(job=job, previous_server=job.previous_server, recovered=job.recovered)


def _job(row: DictRow | None) -> Job | None:
    """A row as a Job (None stays None)."""
    return None if row is None else Job.model_validate(row)


class JobLedger:
    """Async access to the `jobs` table through a psycopg connection pool (and one LISTEN connection for waiters)."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]], conninfo: str) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.notifications = NotificationHub(conninfo)

    @classmethod
    @asynccontextmanager
    async def open(cls, conninfo: str, *, min_size: int = 1, max_size: int = 8) -> AsyncIterator[Self]:
        """Migrate the schema, open a pool, and close it on exit."""
        try:
            await asyncio.to_thread(apply_migrations, conninfo)
        except psycopg.OperationalError as exc:
            raise LedgerUnavailableError(
                f"PostgreSQL is unreachable ({str(exc).strip().splitlines()[0]}); check DATABASE_URL, or unset "
                "it to use the embedded database"
            ) from exc
        pool = open_pool(conninfo, min_size=min_size, max_size=max_size)
        await pool.open(wait=True, timeout=30)
        ledger = cls(pool, conninfo)
        try:
            yield ledger
        finally:
            await ledger.notifications.close()
            await pool.close()

    async def _one(self, query: str, params: dict[str, Any] | Sequence[Any]) -> Job | None:
        """Run a statement returning at most one job row."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return _job(await cur.fetchone())

    # --- asking for work ------------------------------------------------------------------------------

    async def submit(
        self,
        request: JobRequest,
        planned: PlannedJob,
        *,
        max_attempts: int = 5,
        output_exists: Callable[[str], bool] | None = None,
    ) -> SubmitOutcome:
        """Record a job (or return the one with the same idempotency key); answer from the cache when allowed.

        Quotas are enforced here, in the same transaction as the insert, with the owner's account row locked:
        no front end can bypass them and concurrent submits cannot overshoot (QuotaExceededError). A request
        repeating a recorded idempotency key is answered with that job, never refused. Then the common case — a
        new key (or none) and no earlier identical success — is one INSERT; only when that inserts nothing does
        it look further: the job already recorded under the key, or a cached answer whose files still exist.
        """
        async with self.pool.connection() as conn, conn.transaction():
            gate = await open_gate(conn, request.owner)
            if gate.user is not None:
                known = await self._by_key(conn, request.idempotency_key, request.owner)
                if known is not None:
                    return known
                gate.admit(planned.images, planned.estimated_seconds or 0.0, planned.estimated_cost or 0.0)
            values = self._values(request, planned, max_attempts) | {"priority": gate.priority(request.priority)}
            cur = await conn.execute(_INSERT_UNLESS_CACHED, values)
            created = _job(await cur.fetchone())
            if created is not None:
                return SubmitOutcome(job=created, created=True, cached=False)
            existing = await self._by_key(conn, request.idempotency_key, request.owner)
            if existing is not None:
                return existing
            source = await self._cached_source(conn, planned.cache_key, output_exists)
            cached = {
                "status": "succeeded" if source else "queued", "cached_from": source.id if source else None,
                "outputs": Jsonb(source.model_dump(mode="json")["outputs"] if source else []),
            }
            cur = await conn.execute(_INSERT_CACHED, values | cached)
            created = _job(await cur.fetchone())
            if created is not None:
                return SubmitOutcome(job=created, created=True, cached=source is not None)
            # A concurrent submit with the key won.
            again = await self._by_key(conn, request.idempotency_key, request.owner)
        assert again is not None, "an insert that conflicted must have a row under its idempotency key"
        return again

    async def submit_many(
        self,
        items: Sequence[tuple[JobRequest, PlannedJob]],
        *,
        max_attempts: int = 5,
        output_exists: Callable[[str], bool] | None = None,
    ) -> list[SubmitOutcome | AtelierError]:
        """Record many jobs in one transaction (one round trip for the common case); same rules as `submit`.

        Each owner's quota admits rows in order; the rows past it get their QuotaExceededError in place. Rows the
        first pass does not insert (a key already used, a possible cache answer) go through `submit` one by one.
        Workers are woken once for the whole batch.
        """
        rows = [self._values(request, planned, max_attempts) for request, planned in items]
        results: list[SubmitOutcome | AtelierError | None] = [None] * len(items)
        created: dict[uuid.UUID, Job] = {}
        async with self.pool.connection() as conn, conn.transaction():
            gates = {owner: await open_gate(conn, owner) for owner in sorted({r.owner for r, _ in items})}
            keys = [r.idempotency_key for r, _ in items if r.idempotency_key and gates[r.owner].user is not None]
            cur = await conn.execute("SELECT idempotency_key FROM jobs WHERE idempotency_key = ANY(%s)", (keys,))
            known = {row["idempotency_key"] for row in await cur.fetchall()} if keys else set()
            admitted = []
            for index, ((request, planned), row) in enumerate(zip(items, rows, strict=True)):
                gate = gates[request.owner]
                row["priority"] = gate.priority(request.priority)
                if gate.user is not None and request.idempotency_key not in known:
                    try:
                        gate.admit(planned.images, planned.estimated_seconds or 0.0, planned.estimated_cost or 0.0)
                    except AtelierError as exc:
                        results[index] = exc
                        continue
                admitted.append(row)
            if admitted:
                async with conn.cursor() as insert:
                    await insert.executemany(_INSERT_UNLESS_CACHED, admitted, returning=True)
                    while True:
                        job = _job(await insert.fetchone())
                        if job is not None:
                            created[job.id] = job
                        if not insert.nextset():
                            break
        outcomes: list[SubmitOutcome | AtelierError] = []
        for (request, planned), row, refused in zip(items, rows, results, strict=True):
            job = created.get(row["id"])
            if refused is not None:
                outcomes.append(refused)
            elif job is not None:
                outcomes.append(SubmitOutcome(job=job, created=True, cached=False))
            else:
                try:
                    outcomes.append(await self.submit(request, planned, max_attempts=max_attempts,
                                                      output_exists=output_exists))
                except AtelierError as exc:
                    outcomes.append(exc)
        return outcomes

    @staticmethod
    def _values(request: JobRequest, planned: PlannedJob, max_attempts: int) -> dict[str, Any]:
        """The INSERT parameters of one job."""
        return {
            "id": uuid.uuid4(), "workflow": planned.workflow, "params": Jsonb(planned.params),
            "priority": request.priority, "owner": request.owner, "key": request.idempotency_key,
            "cache_key": planned.cache_key, "use_cache": request.use_cache, "vram": planned.vram_gb,
            "est_s": planned.estimated_seconds, "est_cost": planned.estimated_cost, "max": max_attempts,
            "batch": request.batch, "row": request.batch_row, "models": list(planned.models),
        }

    @staticmethod
    async def _by_key(conn: psycopg.AsyncConnection[DictRow], key: str | None, owner: str) -> SubmitOutcome | None:
        """The owner's job already recorded under an idempotency key, as a not-created outcome.

        Keys are unique across the ledger, so another owner's job under the same key is refused rather than handed
        back (it would show them someone else's prompt and images)."""
        if key is None:
            return None
        cur = await conn.execute("SELECT * FROM jobs WHERE idempotency_key = %s", (key,))
        job = _job(await cur.fetchone())
        if job is not None and job.owner != owner:
            raise IdempotencyKeyTakenError(f"the idempotency key {key!r} is already used by another owner's job; "
                                           "choose another key (a UUID is safe)")
        return None if job is None else SubmitOutcome(job=job, created=False, cached=job.cached_from is not None)

    async def _cached_source(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        key: str,
        output_exists: Callable[[str], bool] | None,
    ) -> Job | None:
        """The latest success with this cache key whose outputs still exist."""
        cur = await conn.execute(
            "SELECT * FROM jobs WHERE cache_key = %s AND status = 'succeeded' AND outputs <> '[]'::jsonb "
            "ORDER BY finished_at DESC LIMIT 5",
            (key,),
        )
        for row in await cur.fetchall():
            job = Job.model_validate(row)
            check = output_exists or (lambda _uri: True)
            found = await asyncio.gather(*(asyncio.to_thread(check, out.uri) for out in job.outputs))
            if all(found):
                return job
        return None

    # --- reading ---------------------------------------------------------------------------------------

    async def get(self, job_id: str | uuid.UUID, *, owner: str | None = None) -> Job:
        """One job by id or by a unique id prefix (at least 4 characters); JobNotFoundError otherwise.

        With `owner`, only that owner's jobs are looked at: another owner's job is not found, and a prefix is
        resolved among the owner's own jobs (so it never hints that someone else's job shares it).
        """
        text = str(job_id).strip().lower()
        try:
            key = uuid.UUID(text)
        except ValueError:
            return await self._by_prefix(text, owner)
        job = await self._one("SELECT * FROM jobs WHERE id = %s AND (%s::text IS NULL OR owner = %s)",
                              (key, owner, owner))
        if job is None:
            raise JobNotFoundError(text)
        return job

    async def _by_prefix(self, prefix: str, owner: str | None) -> Job:
        """The one job (of `owner`, when given) whose id starts with `prefix` (as `atelier jobs` shows them)."""
        if len(prefix) < 4 or any(c not in "0123456789abcdef-" for c in prefix):
            raise JobNotFoundError(prefix)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM jobs WHERE id::text LIKE %s AND (%s::text IS NULL OR owner = %s) LIMIT 2",
                (prefix + "%", owner, owner))
            rows = await cur.fetchall()
        if not rows:
            raise JobNotFoundError(prefix)
        if len(rows) > 1:
            raise JobNotFoundError(prefix, ambiguous=True)
        return Job.model_validate(rows[0])

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        owner: str | None = None,
        batch: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """The newest jobs first, optionally of one status, owner or batch."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM jobs WHERE (%(status)s::text IS NULL OR status = %(status)s) "
                "AND (%(owner)s::text IS NULL OR owner = %(owner)s) "
                "AND (%(batch)s::text IS NULL OR batch = %(batch)s) "
                "ORDER BY created_at DESC, id LIMIT %(limit)s",
                {"status": status, "owner": owner, "batch": batch, "limit": limit},
            )
            return [Job.model_validate(row) for row in await cur.fetchall()]

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status")
            return {str(row["status"]): int(row["n"]) for row in await cur.fetchall()}

    async def watch(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> AsyncIterator[Job]:
        """Yield each job once it is finished (LISTEN, no polling); TimeoutError when `timeout` passes first.

        It sleeps on the ledger's one LISTEN connection (`atelier_status`, shared with every other waiter) and
        rereads the jobs when one of them ends, or every 30 s in case a notification was lost with a connection.
        """
        wanted = {uuid.UUID(str(j)) for j in job_ids}
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with self.notifications.subscribe(wanted, [STATUS]) as ended:  # before the first read
            while wanted:
                for job in await self._many(list(wanted)):
                    if job.done:
                        wanted.discard(job.id)
                        yield job
                if not wanted:
                    return
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{len(wanted)} job(s) still unfinished after {timeout:g} s")
                await ended.wait(min(remaining or 30.0, 30.0))

    async def wait(self, job_ids: Sequence[str | uuid.UUID], timeout: float | None = None) -> list[Job]:
        """Wait until every job is finished; return them in the order given."""
        finished = {job.id: job async for job in self.watch(job_ids, timeout)}
        return [finished[uuid.UUID(str(j))] for j in job_ids]

    async def _many(self, ids: list[uuid.UUID]) -> list[Job]:
        """Jobs by id (missing ids are skipped)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM jobs WHERE id = ANY(%s)", (ids,))
            return [Job.model_validate(row) for row in await cur.fetchall()]

    # --- cancelling --------------------------------------------------------------------------------------

    async def cancel(self, job_id: str | uuid.UUID) -> Job:
        """Cancel a job: a queued one at once; a submitted or running one is flagged for its worker."""
        job = await self.get(job_id)
        updated = await self._one(
            """UPDATE jobs SET
                status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
                cancel_requested = status IN ('submitted', 'running') OR cancel_requested,
                updated_at = now()
            WHERE id = %s AND status NOT IN ('succeeded', 'failed', 'cancelled')
            RETURNING *""",
            (job.id,),
        )
        return updated or job

    # --- workers -------------------------------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        *,
        server: str,
        vram_free_gb: float,
        known_servers: Sequence[str],
        lease_seconds: float,
        models: Sequence[str] = (),
        affinity_seconds: float = 0.0,
    ) -> Claim | None:
        """Take the next job for `server` under a lease: a lapsed one first (recovery), else the best queued one."""
        return await self.claim_spec(ClaimSpec(worker, server, vram_free_gb, tuple(known_servers), lease_seconds,
                                               tuple(models), affinity_seconds))

    async def claim_spec(self, spec: ClaimSpec) -> Claim | None:
        """`claim` with its arguments in a ClaimSpec (see there)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CLAIM, spec.params())
            return _claim(await cur.fetchone())

    async def seconds_until_due(self, default: float) -> float:
        """Seconds until a delayed job becomes claimable or a lease lapses (`default` when nothing is due)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM least("
                " (SELECT min(not_before) FROM jobs WHERE status = 'queued' AND not_before > now()),"
                " (SELECT min(lease_expires_at) FROM jobs WHERE status IN ('submitted', 'running')"
                " AND lease_expires_at > now())"
                ") - now()) AS wait"
            )
            row = await cur.fetchone()
        wait = row["wait"] if row else None
        return default if wait is None else max(0.0, min(float(wait), default))

    async def _fenced(self, sets: str, params: dict[str, Any]) -> Job:
        """Apply an update only if the caller's attempt still owns the job; LeaseLostError otherwise."""
        job = await self._one(f"UPDATE jobs SET {sets}, updated_at = now() WHERE {_FENCE} RETURNING *", params)
        if job is None:
            raise LeaseLostError(str(params["id"]), int(params["attempt"]))
        return job

    async def mark_running(self, job: Job, *, server: str) -> Job:
        """ComfyUI started the prompt (or the worker attached to it on `server`)."""
        return await self._fenced(
            "status = 'running', server = %(server)s, submitted_at = coalesce(submitted_at, claimed_at), "
            "started_at = coalesce(started_at, now())",
            {"id": job.id, "attempt": job.attempts, "server": server},
        )

    async def set_server(self, job: Job, server: str) -> Job:
        """Record which ComfyUI this attempt sends the prompt to, before sending it."""
        return await self._fenced(
            "server = %(server)s", {"id": job.id, "attempt": job.attempts, "server": server}
        )

    async def complete(
        self, job: Job, outputs: Sequence[JobOutput], *, gpu_seconds: float | None, actual_cost: float | None
    ) -> Job:
        """Record success and its outputs, once: only the attempt that owns the job may."""
        return await self._fenced(_COMPLETE_SET, _complete_params(job, outputs, gpu_seconds, actual_cost))

    async def complete_and_claim(
        self,
        job: Job,
        outputs: Sequence[JobOutput],
        *,
        gpu_seconds: float | None,
        actual_cost: float | None,
        spec: ClaimSpec,
    ) -> tuple[Job | None, Claim | None]:
        """Record success and claim the next job in one round trip (pipelined); None for a lost lease."""
        async with self.pool.connection() as conn:
            async with conn.pipeline():
                done = await conn.execute(
                    f"UPDATE jobs SET {_COMPLETE_SET}, updated_at = now() WHERE {_FENCE} RETURNING *".encode(),
                    _complete_params(job, outputs, gpu_seconds, actual_cost),
                )
                claimed = await conn.execute(_CLAIM, spec.params())
            return _job(await done.fetchone()), _claim(await claimed.fetchone())

    async def fail(self, job: Job, error: str, kind: str, *, gpu_seconds: float | None = None,
                   actual_cost: float | None = None) -> Job:
        """Record a failure that no retry would fix, with the GPU time and cost it used before it failed (quotas
        charge them)."""
        return await self._fenced(
            "status = 'failed', error = %(error)s, error_kind = %(kind)s, finished_at = now(), "
            f"lease_expires_at = NULL, {_USED_SET}",
            {"id": job.id, "attempt": job.attempts, "error": error, "kind": kind, "gpu": gpu_seconds,
             "cost": actual_cost},
        )

    async def retry_later(self, job: Job, error: str, kind: str, *, delay_seconds: float,
                          count_failure: bool = True) -> Job:
        """A transient failure: back to the queue after `delay_seconds`, or failed once out of attempts.

        `count_failure=False` for a fault outside the job (the database was away): it goes back to the queue
        without using up one of its attempts.
        """
        return await self._fenced(
            "failures = failures + %(count)s, error = %(error)s, error_kind = %(kind)s, lease_expires_at = NULL, "
            "status = CASE WHEN failures + %(count)s >= max_attempts THEN 'failed' ELSE 'queued' END, "
            "finished_at = CASE WHEN failures + %(count)s >= max_attempts THEN now() ELSE NULL END, "
            "not_before = now() + make_interval(secs => %(delay)s)",
            {"id": job.id, "attempt": job.attempts, "error": error, "kind": kind, "delay": delay_seconds,
             "count": 1 if count_failure else 0},
        )

    async def record_cancelled(self, job: Job, *, gpu_seconds: float | None = None,
                               actual_cost: float | None = None) -> Job:
        """The worker removed or interrupted the prompt after a cancel request; what it ran until then is recorded
        (quotas charge it)."""
        return await self._fenced(
            f"status = 'cancelled', finished_at = now(), lease_expires_at = NULL, {_USED_SET}",
            {"id": job.id, "attempt": job.attempts, "gpu": gpu_seconds, "cost": actual_cost},
        )

    async def release(self, worker: str, job: Job | None = None) -> int:
        """Let other workers take `worker`'s held jobs at once, or only `job` (this attempt); how many were released.

        All of them at a clean shutdown; one job when a stopping worker claimed it but will not run it.
        """
        where = "worker = %s AND status IN ('submitted', 'running')"
        params: tuple[Any, ...] = (worker,)
        if job is not None:
            where += " AND id = %s AND attempts = %s"
            params += (job.id, job.attempts)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_expires_at = now() - interval '1 millisecond', updated_at = now() "
                f"WHERE {where}",
                params,
            )
            released = cur.rowcount
            if released:
                await conn.execute("SELECT pg_notify('atelier_jobs', '')")
            return released

    async def unindexed(self, limit: int = 64) -> list[Job]:
        """Succeeded jobs the memory should index now: never tried first, then those whose retry is due; oldest
        first. Jobs waiting for a retry (back-off) and skipped ones are left out."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT * FROM jobs WHERE {TO_INDEX} "
                "AND (memory_index_retry_at IS NULL OR memory_index_retry_at <= now()) "
                "ORDER BY memory_index_attempts, finished_at LIMIT %s",
                (limit,),
            )
            return [Job.model_validate(row) for row in await cur.fetchall()]

    async def mark_indexed(self, job_ids: Sequence[uuid.UUID], notes: Sequence[str | None] | None = None) -> None:
        """Record that the memory holds these jobs' images (with the ratings they had when read); a note says what
        it could not take (an image indexed without its pixels, and why)."""
        ids = list(job_ids)
        texts = list(notes) if notes is not None else [None] * len(ids)
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE jobs SET memory_indexed_at = now(), memory_index_retry_at = NULL, "
                "memory_index_error = s.note, "
                "memory_index_failed_at = CASE WHEN s.note IS NULL THEN memory_index_failed_at ELSE now() END "
                "FROM unnest(%s::uuid[], %s::text[]) AS s(id, note) WHERE jobs.id = s.id",
                (ids, texts),
            )

    async def ratings_to_sync(self, limit: int = 256) -> list[RatingToSync]:
        """Indexed jobs rated since the memory last copied their rating, oldest rating first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, rating, thumb, rated_at, greatest(jsonb_array_length(outputs), 1) AS images FROM jobs "
                "WHERE rated_at IS NOT NULL AND memory_indexed_at IS NOT NULL "
                "AND (memory_rated_at IS NULL OR memory_rated_at < rated_at) ORDER BY rated_at LIMIT %s",
                (limit,),
            )
            return [RatingToSync(job_id=row["id"], rating=row["rating"], thumb=row["thumb"],
                                 rated_at=row["rated_at"], images=row["images"]) for row in await cur.fetchall()]

    async def mark_ratings_synced(self, synced: Sequence[RatingToSync]) -> None:
        """Record which rating (by its stamp) the memory now holds; a rating given meanwhile stays to sync."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE jobs SET memory_rated_at = s.rated_at FROM unnest(%s::uuid[], %s::timestamptz[]) "
                "AS s(id, rated_at) WHERE jobs.id = s.id",
                ([r.job_id for r in synced], [r.rated_at for r in synced]),
            )

    async def rate(self, job_id: str | uuid.UUID, owner: str, *, rating: int | None, thumb: int | None) -> Job:
        """Store a 1–5 rating and/or a thumb (+1/-1) on one of `owner`'s jobs."""
        job = await self.get(job_id, owner=owner)  # someone else's job: as if it did not exist
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET rating = coalesce(%s, rating), thumb = coalesce(%s, thumb), updated_at = now(), "
                "rated_at = clock_timestamp() WHERE id = %s RETURNING *",
                (rating, thumb, job.id),
            )
            updated = _job(await cur.fetchone())
            # Whoever owns the memory copies the rating onto the image (tools/memory/indexer.py).
            await conn.execute("SELECT pg_notify('atelier_ratings', %s)", (str(job.id),))
        assert updated is not None
        return updated

    async def is_cancel_requested(self, job: Job) -> bool:
        """Whether someone asked to cancel this job since it was claimed."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT cancel_requested FROM jobs WHERE id = %s", (job.id,))
            row = await cur.fetchone()
            return bool(row and row["cancel_requested"])
