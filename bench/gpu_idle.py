"""GPU idle time between jobs: Atelier's worker beside the polling worker of integration-ideas §6.

100 jobs of 200 ms each (txt2img, 10 steps of 20 ms on the fake ComfyUI) go through the ledger on the
local PostgreSQL. The fake records when it starts and ends each execution; the idle fraction is the time
it spent not executing between the first start and the last end.
- Atelier: `atelier worker` as its own process (two slots: the next prompt waits inside ComfyUI while the
  current one runs; LISTEN wakes it, the WebSocket says when a prompt is done).
- Baseline (§6): poll the table for the next job (5 s when empty), submit, poll /history every 2 s,
  download, mark done — one job at a time, written here from the user's sketch.
Run: .venv/bin/python bench/gpu_idle.py [--jobs 100] [--baseline-jobs 20] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.tools.ledger.models import JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings
from bench.smoke import parse_args
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.pg import MACHINE_ADMIN_URL, fresh_database

ROOT = Path(__file__).resolve().parents[1]
STEPS, STEP_SECONDS = 10, 0.02  # 200 ms of sampling per job
SMOKE = {"jobs": 3, "baseline_jobs": 2}  # two jobs at least: idle time is measured between jobs


def idle_fraction(spans: list[tuple[str, float, float]]) -> tuple[float, float]:
    """(idle fraction, busy seconds) between the first execution start and the last end."""
    spans = sorted(spans, key=lambda s: s[1])
    busy = sum(end - start for _, start, end in spans)
    window = spans[-1][2] - spans[0][1]
    return 1.0 - busy / window, busy


async def submit(conninfo: str, settings_dir: Path, jobs: int, fake_url: str) -> list[str]:
    """Queue `jobs` distinct 200 ms jobs; return their ids."""
    settings = load_settings(data_dir=settings_dir, comfyui_urls=fake_url)
    async with LedgerService.open(settings, conninfo=conninfo, store=LocalOutputStore(settings_dir / "out")) as svc:
        requests = [JobRequest(params=GenerationParams(prompt=f"idle {i}", seed=i, steps=STEPS), use_cache=False)
                    for i in range(jobs)]
        outcomes = await svc.submit_many(requests)
    return [str(o.job.id) for o in outcomes if not isinstance(o, Exception)]


async def wait_done(conninfo: str, ids: list[str], label: str) -> None:
    """Show a bar until every job is finished (LISTEN)."""
    from atelier.tools.ledger.store import JobLedger

    async with JobLedger.open(conninfo) as ledger:
        with Progress() as bar:
            task = bar.add_task(label, total=len(ids))
            async for _job in ledger.watch(ids, timeout=900):
                bar.advance(task)


def run_atelier(jobs: int, tmp: Path) -> tuple[float, float, float]:
    """Idle fraction, busy seconds and wall seconds with Atelier's worker."""
    with FakeComfyUI(step_seconds=STEP_SECONDS, models=INSTALLED_MODELS, output_dir=tmp / "comfy-a") as fake, \
            fresh_database(MACHINE_ADMIN_URL, "bench_idle") as conninfo:
        ids = asyncio.run(submit(conninfo, tmp / "a", jobs, fake.url))
        env = os.environ | {"DATABASE_URL": conninfo, "COMFYUI_URLS": fake.url, "ATELIER_DATA_DIR": str(tmp / "a")}
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "atelier.cli.main", "worker"], cwd=ROOT, env=env)
        try:
            asyncio.run(wait_done(conninfo, ids, "atelier worker"))
        finally:
            worker.terminate()
            worker.wait(20)
        wall = time.perf_counter() - started
        idle, busy = idle_fraction(fake.execution_spans)
        assert sum(fake.execution_counts.values()) == jobs
    return idle, busy, wall


def run_baseline(jobs: int, tmp: Path) -> tuple[float, float, float]:
    """The same with the §6 polling worker (on the same ledger table)."""
    from atelier.tools.comfyui.direct import resolve_workflow
    from atelier.tools.comfyui.templates import render

    settings = load_settings(data_dir=tmp / "b")
    template = resolve_workflow("txt2img", settings)
    with FakeComfyUI(step_seconds=STEP_SECONDS, models=INSTALLED_MODELS, output_dir=tmp / "comfy-b") as fake, \
            fresh_database(MACHINE_ADMIN_URL, "bench_idle_base") as conninfo:
        ids = asyncio.run(submit(conninfo, tmp / "b", jobs, fake.url))
        started = time.perf_counter()
        with psycopg.connect(conninfo, autocommit=True) as db, httpx.Client(base_url=fake.url) as http, \
                Progress() as bar:
            task = bar.add_task("§6 polling worker", total=len(ids))
            done = 0
            while done < len(ids):
                row = db.execute(
                    "UPDATE jobs SET status = 'running', started_at = now() WHERE id = ("
                    " SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, created_at"
                    " LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, params"
                ).fetchone()
                if row is None:
                    time.sleep(5)
                    continue
                job_id, params = str(row[0]), GenerationParams.model_validate(row[1])
                http.post("/prompt", json={"prompt": render(template, params), "prompt_id": job_id})
                while True:  # poll until complete
                    entry = http.get(f"/history/{job_id}").json().get(job_id)
                    if entry and entry.get("status", {}).get("completed"):
                        break
                    time.sleep(2)
                image = next(iter(entry["outputs"].values()))["images"][0]
                http.get("/view", params=image)
                db.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = %s", (job_id,))
                done += 1
                bar.advance(task)
        wall = time.perf_counter() - started
        idle, busy = idle_fraction(fake.execution_spans)
    return idle, busy, wall


def main() -> None:
    """Run both and print the idle fractions and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--baseline-jobs", type=int, default=20, help="the baseline needs ~2 s per job")
    args = parse_args(parser, SMOKE)
    if args.jobs < 2 or args.baseline_jobs < 2:
        parser.error("--jobs and --baseline-jobs must be at least 2 (idle time is measured between jobs)")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ours, ours_busy, ours_wall = run_atelier(args.jobs, tmp)
        base, base_busy, base_wall = run_baseline(args.baseline_jobs, tmp)
    print(f"atelier worker   : {args.jobs} jobs, GPU idle {ours:6.2%} between jobs "
          f"(busy {ours_busy:.1f} s, wall {ours_wall:.1f} s incl. start-up)")
    print(f"§6 polling worker: {args.baseline_jobs} jobs, GPU idle {base:6.2%} between jobs "
          f"(busy {base_busy:.1f} s, wall {base_wall:.1f} s)")
    print(f"idle ratio       : {base / ours if ours else float('inf'):.1f}x less idle time; target: idle < 2 %")


if __name__ == "__main__":
    main()
