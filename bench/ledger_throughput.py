"""Ledger throughput: submit + claim + complete jobs/s with 4 worker processes, beside procrastinate.

Both queues run on the same local PostgreSQL, each in a fresh database, in the same run:
- Atelier: one submitter process (8 concurrent submits through LedgerService: planning, cache lookup,
  insert) while 4 worker processes claim (FOR UPDATE SKIP LOCKED, lease, attempt++) and complete
  (fenced update with an output list). Idle workers sleep on LISTEN.
- procrastinate (an established Postgres job queue): the same number of jobs deferred by 8 concurrent
  `defer_async` calls while 4 worker processes (`run_worker_async`, LISTEN/NOTIFY on) run a task that
  does nothing.
No ComfyUI: this measures the queue. Throughput = jobs / (first submit → last job recorded done).
The two queues run interleaved in rounds (one by one: Atelier then procrastinate, or the other way round on every
second round; then batched the same way), each run on a fresh database, so both see the same machine state: on a
shared machine a slow spell falls on one round of both, not on one queue. Each round prints its figures and the
submitting process's CPU per job (what one-by-one submits run out of under CPU contention); the ratios reported are
the medians of the rounds' ratios.
The procrastinate side needs the bench extra (pip install -e '.[bench]'); without it the bench says so and compares
Atelier's batched submits with its one-by-one submits only.
Run: .venv/bin/python bench/ledger_throughput.py [--jobs 5000] [--workers 4] [--rounds 3] [--smoke]
     [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
SMOKE = {"jobs": 40, "workers": 2, "rounds": 2}
QUEUES = ("atelier", "procrastinate")
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


@dataclass(frozen=True)
class Run:
    """One queue's run: jobs/s end to end, and the submitting process's CPU per job submitted."""

    jobs_per_s: float
    submit_cpu_us: float


def timed_submit(total: int, submit: Callable[[], None]) -> tuple[float, float]:
    """Run the submits; (when they started on perf_counter, the submitting process's CPU µs per job)."""
    cpu, started = time.process_time(), time.perf_counter()
    submit()
    return started, (time.process_time() - cpu) / total * 1e6


def bench_atelier(admin_url: str, total: int, data_dir: Path, workers: int, batch: int = 1) -> Run:
    """Atelier's ledger with `workers` worker processes."""
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
        started, cpu_us = timed_submit(total, lambda: asyncio.run(_atelier_submit(conninfo, total, data_dir, batch)))
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        with psycopg.connect(conninfo) as conn:
            query = "SELECT count(*) FILTER (WHERE status = 'succeeded'), max(attempts) FROM jobs"
            row = conn.execute(query).fetchone()
        assert row is not None and row[0] == total and row[1] == 1, f"atelier: {row}"
    return Run(total / elapsed, cpu_us)


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


def bench_procrastinate(admin_url: str, total: int, workers: int, batch: int = 1) -> Run:
    """procrastinate with `workers` worker processes."""
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
        started, cpu_us = timed_submit(total, lambda: asyncio.run(_procrastinate_submit(conninfo, total, batch)))
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
    return Run(total / elapsed, cpu_us)


# --- rounds --------------------------------------------------------------------------------------------


def round_order(index: int, queues: Sequence[str] = QUEUES) -> tuple[str, ...]:
    """The order the queues run in round `index` (0-based): as given on even rounds, reversed on odd ones, so
    neither always runs first (on a warm cache, or just after the other's vacuum)."""
    return tuple(queues) if index % 2 == 0 else tuple(reversed(queues))


def median_ratio(ours: Sequence[Run], theirs: Sequence[Run]) -> float:
    """The median over rounds of ours / theirs in jobs/s (each round's pair saw the same machine state)."""
    if not ours or len(ours) != len(theirs):
        raise ValueError(f"need the same number of rounds on both sides, got {len(ours)} and {len(theirs)}")
    return statistics.median(a.jobs_per_s / b.jobs_per_s for a, b in zip(ours, theirs, strict=True))


def median_rate(runs: Sequence[Run]) -> float:
    """The median jobs/s of some runs."""
    return statistics.median(run.jobs_per_s for run in runs)


def round_line(index: int, mode: str, runs: dict[str, Run]) -> str:
    """One round's figures for one submit mode, the queues in the order they ran, and the ratio when both ran."""
    shown = ", ".join(f"{queue} {run.jobs_per_s:6.0f} jobs/s (submit CPU {run.submit_cpu_us:5.0f} us/job)"
                      for queue, run in runs.items())
    ratio = (f", ratio {runs['atelier'].jobs_per_s / runs['procrastinate'].jobs_per_s:.2f}x"
             if len(runs) == len(QUEUES) else "")
    return f"round {index + 1} {mode:10s}: {shown}{ratio}"


def main() -> None:
    """Run the queues interleaved in rounds; print each round's figures and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="worker processes per queue")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the ratios are their medians)")
    parser.add_argument("--skip-baseline", action="store_true", help="leave procrastinate out")
    parser.add_argument("--admin-url", default=MACHINE_ADMIN_URL)
    args = parse_args(parser, SMOKE)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    import tempfile

    baseline = not (args.skip_baseline or missing("procrastinate"))
    queues = QUEUES if baseline else QUEUES[:1]
    modes = {"one by one": 1, "batched": BATCH}
    runs: dict[tuple[str, str], list[Run]] = {(q, m): [] for q in queues for m in modes}
    print(f"jobs: {args.jobs}, worker processes: {args.workers}, submitting tasks: {SUBMITTERS}, "
          f"rounds: {args.rounds}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for mode, batch in modes.items():
                ran: dict[str, Run] = {}
                for queue in round_order(index, queues):
                    ran[queue] = (bench_atelier(args.admin_url, args.jobs, Path(tmp), args.workers, batch=batch)
                                  if queue == "atelier" else
                                  bench_procrastinate(args.admin_url, args.jobs, args.workers, batch=batch))
                    runs[queue, mode].append(ran[queue])
                print(round_line(index, mode, ran), flush=True)
    single, batched = runs["atelier", "one by one"], runs["atelier", "batched"]
    print(f"medians of {args.rounds} round(s):")
    print(f"atelier, one submit per job       : {median_rate(single):7.0f} jobs/s (submit + claim + complete)")
    print(f"atelier, {BATCH} jobs per transaction: {median_rate(batched):7.0f} jobs/s (`atelier batch` path)")
    print(f"ratio batched / one by one        : {median_ratio(batched, single):7.2f}x")
    if not baseline:
        print("skipped: the comparison with procrastinate (--skip-baseline)" if args.skip_baseline
              else skipped_line("the comparison with procrastinate", "procrastinate"))
        return
    theirs, theirs_batched = runs["procrastinate", "one by one"], runs["procrastinate", "batched"]
    print(f"procrastinate, one defer per job  : {median_rate(theirs):7.0f} jobs/s (defer + fetch + finish)")
    print(f"procrastinate, {BATCH} per batch_defer: {median_rate(theirs_batched):7.0f} jobs/s")
    print(f"ratio vs procrastinate            : {median_ratio(single, theirs):7.2f}x one by one, "
          f"{median_ratio(batched, theirs_batched):.2f}x batched (median of the rounds' ratios)")
    print("target: >= 1000 jobs/s and ahead of procrastinate")


if __name__ == "__main__":
    main()
