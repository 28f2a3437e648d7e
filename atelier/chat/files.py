"""Files the chat page shows: a job's image as a local file (copied from a remote output store once) and the
preview frames of a job being rendered, kept in the data folder's chat-cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

from atelier.chat.grid import Tile, draw_grid
from atelier.chat.runtime import ChatRuntime
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job
from atelier.tools.memory.records import EarlierImage

__all__ = ["drop_previews", "image_file", "options_grid", "preview_file"]

_STATE = {"succeeded": "done", "submitted": "queued", "running": "rendering"}


async def image_file(runtime: ChatRuntime, job: Job, index: int = 0) -> Path | None:
    """A local file of a job's image the page can show (copied from a remote store when needed)."""
    if index >= len(job.outputs):
        return None
    output = job.outputs[index]
    if output.uri.startswith("file://"):
        return Path(output.uri.removeprefix("file://"))
    target = runtime.cache_dir() / f"{job.id}-{index}{Path(output.key).suffix or '.png'}"
    if not target.exists():
        services = await runtime.get()
        image = await services.ledger.output(job, index)
        await asyncio.to_thread(target.write_bytes, image.data)
    return target


def preview_file(runtime: ChatRuntime, event: JobEvent) -> Path | None:
    """Write a preview frame where the page can show it (replacing the job's previous one)."""
    if event.preview is None:
        return None
    suffix = ".png" if event.preview_type == "image/png" else ".jpg"
    drop_previews(runtime, event.job_id)
    path = runtime.cache_dir() / f"{event.job_id}-preview-{event.seq}{suffix}"
    path.write_bytes(event.preview)
    return path


def drop_previews(runtime: ChatRuntime, job_id: str) -> None:
    """Delete the preview frames kept for a job (a new frame, or its final image, replaces them)."""
    for old in runtime.cache_dir().glob(f"{job_id}-preview-*"):
        old.unlink(missing_ok=True)



async def options_grid(runtime: ChatRuntime, earlier: list[EarlierImage], new: list[Job], pending: int = 0) -> Path:
    """One grid of the earlier images found (with their similarity) beside the new variations (`new` jobs as they
    are now, or `pending` blank cells before they are queued)."""
    services = await runtime.get()
    tiles = []
    for image in earlier:
        try:
            job = await services.ledger.get(image.job_id)
            path = await image_file(runtime, job, image.output_index)
        except (AtelierError, OSError):  # its job or file is gone: the cell says so
            path = None
        tiles.append(Tile(path, f"earlier · {image.score:.2f}" + ("" if path else " · gone")))
    for job in new:
        path = await image_file(runtime, job) if job.status == "succeeded" else None
        tiles.append(Tile(path, f"new · {_STATE.get(job.status, job.status)}", new=True))
    tiles += [Tile(None, "new · to be made", new=True) for _ in range(pending)]
    return await asyncio.to_thread(draw_grid, tiles, runtime.cache_dir())
