"""Cost of quota enforcement in the ledger's submit, against submits with no account, in the same run.

Three runs on fresh databases of the local PostgreSQL, each SUBMITTERS concurrent tasks submitting `--jobs` jobs:
- baseline: owners with no account (local mode: the gate finds no user row and locks nothing);
- accounts, 8 users: each task submits as its own user with all four quotas set (high enough never to refuse),
  so every submit locks that user's row and counts today's and this month's use;
- accounts, 1 user: every task submits as the same user, so the row lock serialises the submits — the price
  of "concurrent submits cannot overshoot".
Prints submits/s and each ratio to the baseline. No ComfyUI and no worker: this measures the submit path.
Run: .venv/bin/python bench/quota_overhead.py [--jobs 2000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
     [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.smoke import parse_args
from tests.pg import MACHINE_ADMIN_URL, fresh_database

SUBMITTERS = 8
SERVER = "http://bench:8188"
SMOKE = {"jobs": 40}


async def _submit_all(conninfo: str, total: int, data_dir: Path, owners: list[str], accounts: bool,
                      progress: Progress) -> float:
    """Seconds to submit `total` jobs from SUBMITTERS tasks; task i submits as owners[i % len(owners)]."""
    from atelier.tools.accounts.directory import UserDirectory
    from atelier.tools.accounts.models import Quotas
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
        if accounts:
            directory = UserDirectory(svc.ledger.pool)
            roomy = Quotas(images_per_day=10 * total, gpu_seconds_per_day=1e9, budget_per_month=1e9,
                           max_concurrent=10 * total)
            for owner in sorted(set(owners)):
                await directory.create(owner, quotas=roomy)
        task = progress.add_task(f"{len(set(owners))} owner(s), accounts={accounts}", total=total)

        async def submitter(index: int) -> None:
            owner = owners[index % len(owners)]
            for i in range(index, total, SUBMITTERS):
                request = JobRequest(params=GenerationParams(prompt=f"bench {i}", seed=i), owner=owner)
                await svc.submit(request, template=template)
                progress.advance(task)

        started = time.perf_counter()
        await asyncio.gather(*(submitter(s) for s in range(SUBMITTERS)))
        return time.perf_counter() - started


def run(admin_url: str, total: int, owners: list[str], accounts: bool, progress: Progress) -> float:
    """Submits per second for one configuration, on its own fresh database."""
    with fresh_database(admin_url, "bench_quota") as conninfo, tempfile.TemporaryDirectory() as data:
        seconds = asyncio.run(_submit_all(conninfo, total, Path(data), owners, accounts, progress))
        import psycopg

        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM jobs").fetchone()
        assert row is not None and row[0] == total, f"expected {total} jobs, found {row}"
    return total / seconds


def main() -> None:
    """Run the three configurations and print submits/s with ratios to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--admin-url", default=MACHINE_ADMIN_URL)
    args = parse_args(parser, SMOKE)
    users = [f"user{i}" for i in range(SUBMITTERS)]
    with Progress(transient=True) as progress:
        baseline = run(args.admin_url, args.jobs, users, False, progress)
        spread = run(args.admin_url, args.jobs, users, True, progress)
        single = run(args.admin_url, args.jobs, ["ana"], True, progress)
    table = Table("submits", "owners", "submits/s", "× baseline", title=f"{args.jobs} submits, {SUBMITTERS} tasks")
    table.add_row("no accounts (baseline)", str(SUBMITTERS), f"{baseline:,.0f}", "1.00")
    table.add_row("accounts with quotas", str(SUBMITTERS), f"{spread:,.0f}", f"{spread / baseline:.2f}")
    table.add_row("accounts with quotas", "1", f"{single:,.0f}", f"{single / baseline:.2f}")
    Console().print(table)
    print(f"ratio to the baseline: {spread / baseline:.2f}x with accounts and quotas ({SUBMITTERS} users), "
          f"{single / baseline:.2f}x with every submit as one user")


if __name__ == "__main__":
    main()
