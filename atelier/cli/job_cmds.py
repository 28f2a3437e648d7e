"""`atelier submit | jobs | job | cancel | batch`: put work in the ledger and follow it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier.cli.generate_cmd import generation_params
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore
from atelier.tools.intake.batch import read_batch
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings

__all__ = ["batch", "cancel", "job", "jobs", "submit"]

T = TypeVar("T")
BATCH_CHUNK = 200  # rows recorded per transaction
STATUS_STYLE = {"queued": "cyan", "submitted": "blue", "running": "magenta", "succeeded": "green",
                "failed": "red", "cancelled": "yellow"}


def _with_ledger(work: Callable[[LedgerService], Awaitable[T]]) -> T:
    """Open the ledger from settings, run `work`, close it."""

    async def runner() -> T:
        async with LedgerService.open(load_settings()) as svc:
            return await work(svc)

    return asyncio.run(runner())


def _print_json(jobs: list[Job]) -> None:
    """One JSON object per line, per job."""
    for item in jobs:
        typer.echo(json.dumps(item.summary()))


def _status(job: Job) -> str:
    """The status, coloured, with the cache or cancel hint."""
    text = f"[{STATUS_STYLE[job.status]}]{job.status}[/]"
    if job.cached_from is not None:
        text += " (cache)"
    elif job.cancel_requested and not job.done:
        text += " (cancelling)"
    return text


def _table(jobs: list[Job]) -> Table:
    """A compact table of jobs."""
    table = Table("id", "status", "workflow", "prompt", "owner", "tries", "created", "outputs",
                  caption="ids are shortened: `atelier job ID` takes any unique start of one")
    for item in jobs:
        table.add_row(
            str(item.id)[:8], _status(item), item.workflow.rsplit("/", 1)[-1], str(item.params.get("prompt", ""))[:40],
            item.owner, str(item.attempts), f"{item.created_at:%Y-%m-%d %H:%M:%S}", str(len(item.outputs)),
        )
    return table


def _details(job: Job, svc: LedgerService) -> None:
    """Everything about one job, for people."""
    console = Console()
    console.print(f"[bold]{job.id}[/]  {_status(job)}")
    rows = [
        ("workflow", job.workflow), ("prompt", str(job.params.get("prompt"))), ("seed", str(job.params.get("seed"))),
        ("owner", job.owner), ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} (failures {job.failures})"),
        ("server", job.server or "-"), ("worker", job.worker or "-"),
        ("created", str(job.created_at)), ("started", str(job.started_at or "-")),
        ("finished", str(job.finished_at or "-")),
        ("cost", f"estimated {job.estimated_cost}, actual {job.actual_cost}"),
        ("gpu seconds", f"{job.gpu_seconds:.2f}" if job.gpu_seconds is not None else "-"),
    ]
    if job.cached_from:
        rows.append(("answered from", str(job.cached_from)))
    if job.error:
        rows.append(("error", job.error))
    for name, value in rows:
        console.print(f"  {name:>12}: {value}", highlight=False)
    for out in job.outputs:
        console.print(f"  {'output':>12}: {svc.link(out.uri)}", highlight=False, soft_wrap=True)


def _progress(console: Console) -> Progress:
    """A progress bar for many jobs."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


async def _wait_with_bar(svc: LedgerService, jobs: list[Job], label: str) -> list[Job]:
    """Wait for jobs with a bar that moves as each one finishes."""
    console = Console(stderr=True)
    finished: dict[str, Job] = {}
    with _progress(console) as bar:
        task = bar.add_task(label, total=len(jobs))
        async for done in svc.watch([j.id for j in jobs]):
            finished[str(done.id)] = done
            bar.advance(task)
    return [finished[str(j.id)] for j in jobs]


def submit(
    prompt: str = typer.Argument(..., help="What the image should show."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Workflow name or path to an API-format JSON."),
    seed: int | None = typer.Option(None, help="Noise seed (random when omitted, then fixed in the job)."),
    steps: int | None = typer.Option(None, help="Sampling steps."),
    size: str | None = typer.Option(None, help="Image size as WIDTHxHEIGHT, e.g. 768x512."),
    negative: str | None = typer.Option(None, help="What to avoid."),
    image: Path | None = typer.Option(None, "--image", help="Input image for img2img / upscale workflows."),
    priority: int = typer.Option(0, help="Higher runs first."),
    owner: str = typer.Option("cli", help="Who asks (shown in `atelier jobs`)."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key: the same key twice returns the same job."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run on the GPU even if an identical job succeeded."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to finish and print its outputs."),
    reuse: bool = typer.Option(
        False, "--reuse", help="First look in the memory: if an image close enough exists, offer it (no GPU)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """Queue one generation as a job and print its id (it runs on whichever worker is free)."""
    params = generation_params(prompt, negative, seed, steps, size, image, load_settings())
    if reuse and _offer_existing(prompt, owner):
        return
    request = JobRequest(params=params, workflow=workflow, priority=priority, owner=owner,
                         idempotency_key=key, use_cache=not no_cache)

    async def work(svc: LedgerService) -> None:
        outcome = await svc.submit(request)
        job = outcome.job
        if wait and not job.done:
            job = (await _wait_with_bar(svc, [job], "waiting for a worker"))[0]
        if as_json:
            _print_json([job])
        elif wait:
            _details(job, svc)
        else:
            typer.echo(str(job.id))
            if outcome.cached:
                typer.echo("answered from the result cache (use --no-cache to run it again)", err=True)
            elif not outcome.created:
                typer.echo("a job with this --key already exists; that is its id", err=True)
        if wait and job.status != "succeeded":
            raise typer.Exit(1)

    _with_ledger(work)


def _offer_existing(prompt: str, owner: str) -> bool:
    """With --reuse: print an existing close-enough image and return True; False to go on and generate."""
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.store import MemoryLockedError
    from atelier.tools.memory.tools import MemoryContext, ReuseArgs, suggest_reuse

    settings = load_settings()
    console = Console(stderr=True)
    try:
        memory = open_memory(settings)
    except MemoryLockedError as exc:
        console.print(f"[yellow]no reuse check:[/] {exc}", highlight=False)
        return False
    try:
        found = asyncio.run(suggest_reuse(MemoryContext(memory, settings), ReuseArgs(prompt=prompt, owner=owner)))
    finally:
        memory.close()
    if found is None:
        return False
    image = found.hit.image
    typer.echo(image.job_id)
    console.print(f"an earlier image is {found.hit.score:.2f} similar (threshold {found.threshold:.2f}): "
                  f"{image.uri} — prompt {image.prompt!r}; run without --reuse to generate anyway", highlight=False)
    return True


def jobs(
    status: str | None = typer.Option(None, "--status", "-s", help="Only jobs in this status."),
    owner: str | None = typer.Option(None, help="Only jobs of this owner."),
    limit: int = typer.Option(50, help="At most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per job."),
) -> None:
    """List jobs, newest first."""
    if status is not None and status not in STATUS_STYLE:
        raise typer.BadParameter(f"unknown status {status!r}; use one of {', '.join(STATUS_STYLE)}",
                                 param_hint="--status")

    async def work(svc: LedgerService) -> None:
        found = await svc.list_jobs(status=status, owner=owner, limit=limit)
        if as_json:
            _print_json(found)
        else:
            Console().print(_table(found))

    _with_ledger(work)


def job(
    job_id: str = typer.Argument(..., help="The job id (as printed by submit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """Show one job: status, timings, cost, error and output links."""

    async def work(svc: LedgerService) -> None:
        found = await svc.get(job_id)
        _print_json([found]) if as_json else _details(found, svc)

    _with_ledger(work)


def cancel(
    job_id: str = typer.Argument(..., help="The job id."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """Cancel a job: a queued one at once; a running one is removed from ComfyUI or interrupted by its worker."""

    async def work(svc: LedgerService) -> None:
        found = await svc.cancel(job_id)
        if as_json:
            _print_json([found])
        elif found.status == "cancelled":
            typer.echo(f"{found.id} cancelled")
        elif found.done:
            typer.echo(f"{found.id} had already {found.status}; nothing to cancel")
        else:
            typer.echo(f"{found.id} is {found.status}: its worker will stop it now")

    _with_ledger(work)


def batch(
    file: Path = typer.Argument(..., help="A .csv (header row) or .jsonl file: one job per row."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Workflow for rows without a workflow column."),
    owner: str = typer.Option("batch", help="Whose jobs the rows make (a file cannot say)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every row on the GPU."),
    wait: bool = typer.Option(False, "--wait", help="Wait until every row's job has finished."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per job at the end."),
) -> None:
    """Queue one job per row; rerunning the same file adds nothing twice and skips finished rows."""
    batch_name, rows = read_batch(file, owner=owner, workflow=workflow, use_cache=not no_cache,
                                  inputs=InputStore(load_settings()))
    console = Console(stderr=True)

    async def work(svc: LedgerService) -> None:
        made: list[Job] = []
        new = existing = 0
        bad: list[str] = []
        templates: dict[str, WorkflowTemplate] = {}
        with _progress(console) as bar:
            task = bar.add_task(f"submitting {file.name}", total=len(rows))
            for start in range(0, len(rows), BATCH_CHUNK):
                chunk = rows[start:start + BATCH_CHUNK]
                bad.extend(f"line {row.line}: {row.error}" for row in chunk if row.request is None)
                good = [row for row in chunk if row.request is not None]
                results = await svc.submit_many([row.request for row in good if row.request], templates=templates)
                for row, outcome in zip(good, results, strict=True):
                    if isinstance(outcome, AtelierError):
                        bad.append(f"line {row.line}: {outcome}")
                    else:
                        made.append(outcome.job)
                        new, existing = new + outcome.created, existing + (not outcome.created)
                bar.advance(task, len(chunk))
        bad.sort(key=lambda text: int(text.split(":", 1)[0].removeprefix("line ")))
        for line in bad:
            console.print(f"[red]skipped[/] {line}", highlight=False)
        finished = sum(j.done for j in made)
        console.print(f"batch {batch_name}: {new} new job(s), {existing} already in the ledger "
                      f"({finished} finished), {len(bad)} bad row(s)", highlight=False)
        final = made
        if wait and any(not j.done for j in made):
            final = await _wait_with_bar(svc, made, "running")
        if as_json:
            _print_json(final)
        if bad or any(j.status in ("failed", "cancelled") for j in final if j.done):
            raise typer.Exit(1)

    _with_ledger(work)
