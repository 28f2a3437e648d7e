"""`atelier ingest`, `atelier rate` and `atelier memory …`: documents and images in the memory."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier.tools.settings import Settings, load_settings

if TYPE_CHECKING:
    from atelier.tools.memory.records import ImageHit
    from atelier.tools.memory.store import MemoryStore
    from atelier.tools.memory.tools import MemoryContext
    from atelier.tools.outputs.store import OutputStore

# The memory's modules (Qdrant, LangChain) take a second or more to import: commands import them when run,
# so that `atelier worker` and the other commands start fast.

__all__ = ["ingest", "memory_app", "rate"]

memory_app = typer.Typer(help="Search, index and maintain the memory of documents and images.", no_args_is_help=True)


@asynccontextmanager
async def _context(settings: Settings, *, ledger: bool,
                   outputs: OutputStore | None = None) -> AsyncIterator[MemoryContext]:
    """The memory (and the ledger when needed, with `outputs` or the configured output store), closed on exit."""
    from atelier.tools.ledger.service import LedgerService
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.tools import MemoryContext

    memory = open_memory(settings)
    try:
        if not ledger:
            yield MemoryContext(memory, settings)
            return
        async with LedgerService.open(settings, store=outputs) as svc:
            yield MemoryContext(memory, settings, svc)
    finally:
        memory.close()


def _image_table(hits: list[ImageHit]) -> Table:
    """Images found, best first."""
    table = Table("score", "job", "prompt", "workflow", "rating", "where")
    for hit in hits:
        image = hit.image
        stars = "★" * (image.rating or 0) + (" 👍" if image.thumb == 1 else " 👎" if image.thumb == -1 else "")
        table.add_row(f"{hit.score:.3f}", image.job_id[:8], image.prompt[:50], image.workflow, stars, image.uri)
    return table


def ingest(
    paths: list[Path] = typer.Argument(..., help="Markdown, text or PDF files, or folders of them."),
    owner: str = typer.Option("shared", help="Whose documents these are ('shared': everyone's)."),
) -> None:
    """Chunk and embed documents into the memory; re-ingesting unchanged files adds nothing."""
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.documents import chunk_file, find_documents

    settings = load_settings()
    files = find_documents(paths)
    memory = open_memory(settings)
    added = removed = chunks = 0
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("ingesting", total=len(files))
            for path in files:
                bar.update(task, description=f"ingesting {path.name}")
                pieces = chunk_file(path, owner)
                chunks += len(pieces)
                new, gone = memory.replace_source(str(path.expanduser().resolve()), owner, pieces)
                added, removed = added + new, removed + gone
                bar.advance(task)
        _settle(memory)
    finally:
        memory.close()
    typer.echo(f"{len(files)} file(s), {chunks} chunk(s): {added} new, {chunks - added} already in the memory, "
               f"{removed} outdated removed")


def _settle(memory: MemoryStore) -> None:
    """Fold what was just written into the search index, with a progress bar (searches work meanwhile)."""
    waiting = memory.unsettled()
    if not waiting:
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("indexing for search", total=waiting)
        while folded := memory.settle(2000):
            bar.advance(task, folded)


def rate(
    job_id: str = typer.Argument(..., help="The job whose image you rate."),
    stars: int | None = typer.Option(None, min=1, max=5, help="1 to 5 stars."),
    up: bool = typer.Option(False, "--up", help="Thumbs up."),
    down: bool = typer.Option(False, "--down", help="Thumbs down."),
    owner: str = typer.Option("cli", help="Whose image it is."),
) -> None:
    """Rate an image: stored in the ledger and in the memory, and used for your style profile."""
    from atelier.tools.memory.tools import RateImageArgs, rate_image

    thumb = "up" if up else "down" if down else None
    try:
        args = RateImageArgs(job_id=job_id, owner=owner, stars=stars, thumb=thumb)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).splitlines()[-1]) from None

    async def work() -> None:
        async with _context(load_settings(), ledger=True) as ctx:
            result = await rate_image(ctx, args)
        typer.echo(f"{result.job_id}: stars {result.stars or '-'}, thumb {result.thumb or '-'}")

    asyncio.run(work())


@memory_app.command("search")
def search(
    query: str = typer.Argument(..., help="What you are looking for."),
    images: bool = typer.Option(False, "--images", help="Search images instead of documents."),
    owner: str = typer.Option("cli", help="Whose memory (plus shared items)."),
    k: int = typer.Option(5, min=1, max=100, help="How many results."),
    workflow: str | None = typer.Option(None, help="Images: only this workflow."),
    min_rating: int | None = typer.Option(None, min=1, max=5, help="Images: only rated at least this."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per result."),
) -> None:
    """Search documents (with sources) or images (with scores)."""
    from atelier.tools.memory.tools import SearchDocumentsArgs, SearchImagesArgs, search_documents, search_images

    async def work() -> None:
        async with _context(load_settings(), ledger=False) as ctx:
            if images:
                hits = await search_images(ctx, SearchImagesArgs(query=query, owner=owner, k=k, workflow=workflow,
                                                                 min_rating=min_rating))
                if as_json:
                    for hit in hits:
                        typer.echo(hit.model_dump_json())
                else:
                    Console().print(_image_table(hits))
                return
            found = await search_documents(ctx, SearchDocumentsArgs(query=query, owner=owner, k=k))
            for doc in found:
                if as_json:
                    typer.echo(doc.model_dump_json())
                else:
                    Console().print(f"[bold]{doc.score:.3f}[/] {doc.citation()}\n  {doc.text[:300]}", highlight=False)

    asyncio.run(work())


@memory_app.command("similar")
def similar(
    target: str = typer.Argument(..., help="A job id in the memory, or an image file."),
    by: str = typer.Option("meaning", help="meaning (caption/prompt) or look (colours and layout)."),
    owner: str = typer.Option("cli", help="Whose memory (plus shared items)."),
    k: int = typer.Option(8, min=1, max=100),
) -> None:
    """Images like a given one."""
    from atelier.tools.memory.tools import SimilarImagesArgs, similar_images

    is_file = Path(target).expanduser().is_file()
    args = SimilarImagesArgs(owner=owner, k=k, by="look" if by == "look" else "meaning",
                             job_id=None if is_file else target, image_path=target if is_file else None)

    async def work() -> None:
        async with _context(load_settings(), ledger=False) as ctx:
            Console().print(_image_table(await similar_images(ctx, args)))

    asyncio.run(work())


@memory_app.command("style")
def style(owner: str = typer.Option("cli", help="Whose taste."), limit: int = typer.Option(10, min=1)) -> None:
    """Your best-rated modifiers, workflows and prompts."""
    from atelier.tools.memory.tools import StyleProfileArgs, style_profile

    async def work() -> None:
        async with _context(load_settings(), ledger=False) as ctx:
            profile = await style_profile(ctx, StyleProfileArgs(owner=owner, limit=limit))
        typer.echo(json.dumps(profile.model_dump(), indent=2, ensure_ascii=False))

    asyncio.run(work())


@memory_app.command("index")
def index(follow: bool = typer.Option(False, "--follow", help="Keep indexing as jobs succeed (Ctrl-C stops).")) -> None:
    """Index the images of succeeded jobs not in the memory yet (this process owns the memory meanwhile)."""
    from atelier.tools.memory.indexer import MemoryIndexer
    from atelier.tools.outputs.store import build_output_store

    async def work() -> None:
        settings = load_settings()
        outputs = await asyncio.to_thread(build_output_store, settings)
        async with _context(settings, ledger=True, outputs=outputs) as ctx:
            assert ctx.ledger is not None
            indexer = MemoryIndexer.for_service(ctx.ledger, ctx.memory)
            if not follow:
                typer.echo(f"{await indexer.catch_up()} image(s) indexed")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            Console(stderr=True).print(f"indexing into {ctx.memory.location}; Ctrl-C to stop", highlight=False)
            await indexer.follow(stop)

    asyncio.run(work())


@memory_app.command("reindex")
def reindex() -> None:
    """Re-embed every collection with the configured model (after changing ATELIER_EMBED_MODEL)."""
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.store import DOCUMENTS, IMAGES

    memory = open_memory(load_settings(), verify_model=False)
    try:
        counts = memory.reindex()
    finally:
        memory.close()
    typer.echo(f"re-embedded {counts.get(DOCUMENTS, 0)} document chunk(s) and {counts.get(IMAGES, 0)} image(s) "
               f"with {memory.embedder.name}")


@memory_app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="postgres or qdrant: the backend to copy into."),
    source: str | None = typer.Option(
        None, "--from", help="local (the old folder), qdrant or postgres; default: the other backend (for --to "
                             "postgres: the Qdrant server at QDRANT_URL, else the old local folder)."),
    batch: int = typer.Option(512, min=1, help="Items per write."),
) -> None:
    """Copy the documents and images of one memory backend into the other, vectors as they are (safe to rerun)."""
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.embeddings import build_embedder
    from atelier.tools.memory.migration import Source, migrate_memory, migration_source, open_source, stored_counts
    from atelier.tools.memory.store import Backend

    if to not in ("postgres", "qdrant"):
        raise typer.BadParameter("use postgres or qdrant", param_hint="--to")
    if source not in (None, "local", "qdrant", "postgres"):
        raise typer.BadParameter("use local, qdrant or postgres", param_hint="--from")
    settings = load_settings()
    target = cast(Backend, to)
    origin = migration_source(settings, target, cast(Source | None, source))
    embedder = build_embedder(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (closing(open_source(settings, origin, embedder)) as reader,
          closing(open_memory(settings, embedder, backend=target)) as writer,
          Progress(*columns, console=Console(stderr=True)) as bar):
        tasks = {c: bar.add_task(c, total=n) for c, n in stored_counts(reader).items()}
        counts = migrate_memory(reader, writer, batch=batch,
                                progress=lambda c, done: bar.update(tasks[c], completed=done))
        if waiting := writer.unsettled():  # pgvector: fold the copied rows into its HNSW indexes
            fold = bar.add_task("indexing for search", total=waiting)
            while folded := writer.settle(2000):
                bar.advance(fold, folded)
    for collection, copied in counts.items():
        typer.echo(f"{collection}: {copied} copied from {origin} to {to}")


@memory_app.command("status")
def status(
    recent: int = typer.Option(5, min=0, max=100, help="How many of the latest problems to show."),
    retry_skipped: bool = typer.Option(False, "--retry-skipped", help="Give the skipped jobs another try now."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as one JSON object."),
) -> None:
    """How indexing stands: jobs indexed, waiting, retrying and skipped, ratings to copy, and the latest reasons."""
    from dataclasses import asdict

    from atelier.tools.ledger.service import LedgerService

    async def work() -> None:
        async with LedgerService.open(load_settings()) as svc:  # the ledger only: the memory may be open elsewhere
            if retry_skipped:
                typer.echo(f"{await svc.retry_skipped_indexing()} skipped job(s) will be indexed again")
            state = await svc.memory_index_status(recent)
        if as_json:
            typer.echo(json.dumps(asdict(state), default=str))
            return
        typer.echo(f"indexed {state.indexed} ({state.partial} without some pixels), waiting {state.waiting}, "
                   f"retrying {state.retrying}, skipped {state.skipped}; ratings to copy {state.ratings_pending}"
                   + (f"; next retry at {state.next_retry_at:%Y-%m-%d %H:%M:%S %Z}" if state.next_retry_at else ""))
        for problem in state.recent:
            what = {"indexed": "indexed without some pixels", "retrying": f"retrying ({problem.attempts} failed)",
                    "skipped": f"skipped after {problem.attempts} attempts"}.get(problem.state, problem.state)
            when = f" at {problem.at:%Y-%m-%d %H:%M:%S}" if problem.at else ""
            typer.echo(f"  {problem.job_id} {what}{when}: {problem.reason}")

    asyncio.run(work())
