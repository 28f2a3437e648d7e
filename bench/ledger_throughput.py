"""Ledger throughput: submit + claim + complete jobs/s with 4 worker processes, beside procrastinate.

Both queues run on the same local PostgreSQL, each in a fresh database, in the same run:
- Atelier: one submitter process (8 concurrent submits through LedgerService: planning, cache lookup,
  insert) while 4 worker processes claim (FOR UPDATE SKIP LOCKED, lease, attempt++) and complete
  (fenced update with an output list). Idle workers sleep on LISTEN.
- procrastinate (an established Postgres job queue): the same number of jobs deferred by 8 concurrent
  `defer_async` calls while 4 worker processes (`run_worker_async`, LISTEN/NOTIFY on) run a task that
  does nothing.
No ComfyUI: this measures the queue. Throughput = jobs / (first submit → last job recorded done).
The procrastinate side needs the bench extra (pip install -e '.[bench]'); without it the bench says so and compares
Atelier's batched submits with its one-by-one submits only.
Run: .venv/bin/python bench/ledger_throughput.py [--jobs 5000] [--workers 4] [--smoke]
     [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.tools.ledger.migrations import apply_migrations
from bench.smoke import missing, parse_args, skipped_line
from tests.pg import MACHINE_ADMIN_URL, fresh_database

BATCH = 200
SUBMITTERS = 8
SERVER = "http://bench:8188"
SMOKE = {"jobs": 40, "workers": 2}
SUBMIT_MODULES = ("atelier.tools.comfyui.direct", "atelier.tools.ledger.service", "atelier.tools.outputs.store")


# --- Atelier ---------------------------------------------------------------------------------------------


async def _atelier_worker(conninfo: str, total: int, ready: mp.Event, done: Any) -> None:  # type: ignore[valid-type]
    """Claim and complete until every job is done; sleep on LISTEN when there is nothing to claim."""
    from atelier.tools.ledger.store import ClaimSpec, JobLedger

    async with JobLedger.open(conninfo, min_size=1, max_size=2) as ledger, \
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listen:
        await listen.execute("LISTEN atelier_jobs")
        ready.set()  # type: ignore[attr-defined]
        spec = ClaimSpec(f"bench-{mp.current_process().pid}", SERVER, 100.0, (SERVER,), 30.0)
        claim = None
        while True:
            if claim is None:
                claim = await ledger.claim(spec.worker, server=SERVER, vram_free_gb=spec.vram_free_gb,
                                           known_servers=spec.known_servers, lease_seconds=spec.lease_seconds)
            if claim is not None:  # record it and take the next in one round trip, as the worker does
                _done, claim = await ledger.complete_and_claim(claim.job, [], gpu_seconds=0.0, actual_cost=0.0,
                                                               spec=spec)
                with done.get_lock():
                    done.value += 1
                continue
            if done.value >= total:
                return
            async for _note in listen.notifies(timeout=0.05, stop_after=1):
                pass


def _run_atelier_worker(conninfo: str, total: int, ready: mp.Event, done: Any) -> None:  # type: ignore[valid-type]
    """Process entry point."""
    asyncio.run(_atelier_worker(conninfo, total, ready, done))


async def _atelier_submit(conninfo: str, total: int, data_dir: Path, batch: int) -> None:
    """Submit `total` distinct jobs from SUBMITTERS concurrent tasks, one by one or `batch` per transaction."""
    from atelier.tools.comfyui.direct import resolve_workflow
    from atelier.tools.ledger.models import JobRequest
    from atelier.tools.ledger.service import LedgerService
    from atelier.tools.outputs.store import LocalOutputStore
    from atelier.tools.schemas import GenerationParams
    from atelier.tools.settings import load_settings

    settings = load_settings(data_dir=data_dir, comfyui_urls=SERVER)
    template = resolve_workflow("txt2img", settings)
    async with LedgerService.open(settings, conninfo=conninfo, store=LocalOutputStore(data_dir)) as svc:
        await svc.ledger.pool.resize(min_size=SUBMITTERS, max_size=SUBMITTERS)

        async def submitter(start: int) -> None:
            mine = [JobRequest(params=GenerationParams(prompt=f"bench {i}", seed=i))
                    for i in range(start, total, SUBMITTERS)]
            if batch <= 1:
                for request in mine:
                    await svc.submit(request, template=template)
                return
            for first in range(0, len(mine), batch):
                await svc.submit_many(mine[first:first + batch], templates={"txt2img": template})

        await asyncio.gather(*(submitter(s) for s in range(SUBMITTERS)))


def bench_atelier(admin_url: str, total: int, data_dir: Path, workers: int, batch: int = 1) -> float:
    """Jobs per second for Atelier's ledger with `workers` worker processes."""
    with fresh_database(admin_url, "bench_atelier") as conninfo:
        apply_migrations(conninfo)
        ctx = mp.get_context("spawn")
        ready = [ctx.Event() for _ in range(workers)]
        done = ctx.Value("i", 0)
        procs = [ctx.Process(target=_run_atelier_worker, args=(conninfo, total, r, done)) for r in ready]
        for proc in procs:
            proc.start()
        for event in ready:
            event.wait(60)
        for module in SUBMIT_MODULES:  # imported before the clock starts, as procrastinate is by its schema step
            importlib.import_module(module)
        started = time.perf_counter()
        asyncio.run(_atelier_submit(conninfo, total, data_dir, batch))
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        with psycopg.connect(conninfo) as conn:
            query = "SELECT count(*) FILTER (WHERE status = 'succeeded'), max(attempts) FROM jobs"
            row = conn.execute(query).fetchone()
        assert row is not None and row[0] == total and row[1] == 1, f"atelier: {row}"
    return total / elapsed


# --- procrastinate ---------------------------------------------------------------------------------------


async def _noop(i: int) -> None:
    """The benchmark's empty task."""


def _procrastinate_app(conninfo: str) -> tuple[Any, Any]:
    """A procrastinate App with one task that does nothing (typed loosely: procrastinate is a bench-only extra)."""
    import procrastinate

    app: Any = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4))
    return app, app.task(name="noop")(_noop)


async def _procrastinate_worker(conninfo: str, total: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    """Run a worker until every job has succeeded."""
    app, _noop = _procrastinate_app(conninfo)
    async with app.open_async():
        task = asyncio.create_task(app.run_worker_async(concurrency=1, install_signal_handlers=False,
                                                        delete_jobs="never"))
        ready.set()  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            while True:
                cur = await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
                row = await cur.fetchone()
                if row and row[0] >= total:
                    break
                await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _run_procrastinate_worker(conninfo: str, total: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    """Process entry point."""
    asyncio.run(_procrastinate_worker(conninfo, total, ready))


async def _procrastinate_submit(conninfo: str, total: int, batch: int) -> None:
    """Defer `total` jobs from SUBMITTERS concurrent tasks, one by one or `batch` per call."""
    app, noop = _procrastinate_app(conninfo)
    async with app.open_async():

        async def submitter(start: int) -> None:
            mine = list(range(start, total, SUBMITTERS))
            if batch <= 1:
                for i in mine:
                    await noop.defer_async(i=i)
                return
            for first in range(0, len(mine), batch):
                await noop.batch_defer_async(*({"i": i} for i in mine[first:first + batch]))

        await asyncio.gather(*(submitter(s) for s in range(SUBMITTERS)))


async def _procrastinate_schema(conninfo: str) -> None:
    """Install procrastinate's schema."""
    app, _noop = _procrastinate_app(conninfo)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def bench_procrastinate(admin_url: str, total: int, workers: int, batch: int = 1) -> float:
    """Jobs per second for procrastinate with `workers` worker processes."""
    with fresh_database(admin_url, "bench_procrastinate") as conninfo:
        asyncio.run(_procrastinate_schema(conninfo))
        ctx = mp.get_context("spawn")
        ready = [ctx.Event() for _ in range(workers)]
        procs = [ctx.Process(target=_run_procrastinate_worker, args=(conninfo, total, r)) for r in ready]
        for proc in procs:
            proc.start()
        for event in ready:
            event.wait(60)
        time.sleep(0.5)  # let the workers reach their LISTEN
        started = time.perf_counter()
        asyncio.run(_procrastinate_submit(conninfo, total, batch))
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
    return total / elapsed


def main() -> None:
    """Run both and print the figures and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="worker processes per queue")
    parser.add_argument("--skip-baseline", action="store_true", help="leave procrastinate out")
    parser.add_argument("--admin-url", default=MACHINE_ADMIN_URL)
    args = parse_args(parser, SMOKE)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        single = bench_atelier(args.admin_url, args.jobs, Path(tmp), args.workers)
        batched = bench_atelier(args.admin_url, args.jobs, Path(tmp), args.workers, batch=BATCH)
    print(f"jobs: {args.jobs}, worker processes: {args.workers}, submitting tasks: {SUBMITTERS}")
    print(f"atelier, one submit per job       : {single:7.0f} jobs/s (submit + claim + complete)")
    print(f"atelier, {BATCH} jobs per transaction: {batched:7.0f} jobs/s (`atelier batch` path)")
    print(f"ratio batched / one by one        : {batched / single:7.2f}x")
    if args.skip_baseline or missing("procrastinate"):
        print("skipped: the comparison with procrastinate (--skip-baseline)" if args.skip_baseline
              else skipped_line("the comparison with procrastinate", "procrastinate"))
        return
    theirs = bench_procrastinate(args.admin_url, args.jobs, args.workers)
    theirs_batched = bench_procrastinate(args.admin_url, args.jobs, args.workers, batch=BATCH)
    print(f"procrastinate, one defer per job  : {theirs:7.0f} jobs/s (defer + fetch + finish)")
    print(f"procrastinate, {BATCH} per batch_defer: {theirs_batched:7.0f} jobs/s")
    print(f"ratio vs procrastinate            : {single / theirs:7.2f}x one by one, "
          f"{batched / theirs_batched:.2f}x batched")
    print("target: >= 1000 jobs/s and ahead of procrastinate")


if __name__ == "__main__":
    main()
