"""`atelier watch DIR`: a drop zone — files dropped in DIR/inbox/<workflow>/ become jobs, results land in DIR."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from atelier.tools.intake.dropzone import DropZone, DropZoneOptions, Outcome
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions

__all__ = ["watch"]


class _Wake(FileSystemEventHandler):
    """Forward every file-system event under the inbox to the event loop as a wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self.loop = loop
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Wake the scanner (the scan itself decides what is ready)."""
        self.loop.call_soon_threadsafe(self.wake.set)


def watch(
    folder: Path = typer.Argument(..., help="Drop-zone folder (inbox/, processing/, done/, failed/, outputs/)."),
    owner: str = typer.Option("dropzone", "--owner", help="Owner of the jobs (shown in `atelier jobs`)."),
    worker: bool = typer.Option(False, "--worker", help="Also run a worker in this process."),
    comfy_url: list[str] = typer.Option(
        [], "--comfy-url", help="With --worker: ComfyUI server(s) to feed (default: COMFYUI_URLS)."
    ),
    slots: int = typer.Option(2, min=1, help="With --worker: prompts kept inside each ComfyUI at once."),
    lease_seconds: float | None = typer.Option(None, min=2, help="With --worker: lease length."),
    stable_seconds: float = typer.Option(
        0.5, min=0.05, help="A file is taken once its size and mtime held this long (and no one writes it)."
    ),
    rescan_seconds: float = typer.Option(2.0, min=0.1, help="Re-scan this often even without file events."),
    priority: int = typer.Option(0, help="Priority of the jobs (higher runs first)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every file and job."),
) -> None:
    """Watch DIR/inbox/<workflow>/: each dropped prompt or image becomes a job, exactly once, even across crashes."""
    settings = load_settings()
    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = DropZoneOptions(owner=owner, stable_seconds=stable_seconds, rescan_seconds=rescan_seconds,
                              priority=priority)

    async def run() -> None:
        stop = asyncio.Event()
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with LedgerService.open(settings) as svc:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("starting")

                def report(outcome: Outcome) -> None:
                    if outcome.ok:
                        bar.console.print(f"[green]done[/] {outcome.workflow}/{outcome.name} → "
                                          f"{len(outcome.outputs)} output(s)", highlight=False)
                    else:
                        bar.console.print(f"[red]failed[/] {outcome.workflow}/{outcome.name}: {outcome.error}",
                                          highlight=False, soft_wrap=True)
                    if outcome.caption:
                        bar.console.print(f"  captioned: {outcome.caption}", highlight=False, markup=False,
                                          soft_wrap=True)
                    elif outcome.caption_skipped:
                        bar.console.print(f"  caption skipped: {outcome.caption_skipped}", highlight=False,
                                          markup=False, soft_wrap=True)

                zone = DropZone(folder, svc, options, on_outcome=report)
                names = await asyncio.to_thread(zone.prepare)
                tasks: list[asyncio.Task[None]] = []
                if worker:
                    work = Worker.for_service(svc, WorkerOptions(
                        servers=list(comfy_url) or list(settings.comfyui_urls), slots_per_server=slots,
                        lease_seconds=lease_seconds or settings.lease_seconds))
                    tasks.append(asyncio.create_task(work.run(stop), name="worker"))
                observer = Observer()
                observer.schedule(_Wake(loop, wake), str(zone.folder("inbox")), recursive=True)
                observer.start()
                console.print(f"watching {zone.folder('inbox')} for {', '.join(names)}"
                              f"{' (with a worker)' if worker else ''}; Ctrl-C to stop", highlight=False)
                tasks.append(asyncio.create_task(zone.run(stop, wake), name="dropzone"))
                try:
                    while not stop.is_set():
                        bar.update(task, description=f"{zone.done} done, {zone.failed} failed, "
                                                     f"{zone.pending} running, {zone.watching} settling")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 0.5)
                finally:
                    stop.set()
                    observer.stop()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await asyncio.to_thread(observer.join, 5)
            console.print(f"stopped: {zone.done} done, {zone.failed} failed, {zone.pending} left in processing/")

    asyncio.run(run())
