"""Files the chat page shows: a job's image as a local file (copied from a remote output store once) and the
preview frames of a job being rendered, kept in the data folder's chat-cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

from atelier.chat.runtime import ChatRuntime
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job

__all__ = ["drop_previews", "image_file", "preview_file"]


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

