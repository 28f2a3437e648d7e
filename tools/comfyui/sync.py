"""A small synchronous facade over the async ComfyUI client and generate tool, for scripts and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from atelier.tools.comfyui.client import ComfyClient, RunOutcome
from atelier.tools.comfyui.events import ComfyEvent
from atelier.tools.comfyui.models import QueueState, SystemStats, UploadedImage
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.schemas import GenerationParams, GenerationResult, ImageRef
from atelier.tools.settings import Settings

__all__ = ["SyncComfyClient", "run_workflow_sync"]


class SyncComfyClient:
    """Blocking twin of ComfyClient; one private event loop keeps the socket between calls."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client: ComfyClient = self._runner.run(_make_client(base_url, options))

    def __enter__(self) -> Self:
        """Enter the context."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Close on exit."""
        self.close()

    def close(self) -> None:
        """Close the socket, the HTTP pool and the private loop."""
        self._runner.run(self._client.aclose())
        self._runner.close()

    def run(
        self,
        graph: dict[str, Any],
        *,
        prompt_id: str | None = None,
        ui_workflow: dict[str, Any] | None = None,
        on_event: Callable[[ComfyEvent], None] | None = None,
    ) -> RunOutcome:
        """Submit and follow a prompt to the end (see ComfyClient.run)."""
        return self._runner.run(
            self._client.run(graph, prompt_id=prompt_id, ui_workflow=ui_workflow, on_event=on_event)
        )

    def download(self, ref: ImageRef) -> bytes:
        """The bytes of one output image."""
        return self._runner.run(self._client.download(ref))

    def save(self, ref: ImageRef, out_dir: Path) -> Path:
        """Download one output image into a folder."""
        return self._runner.run(self._client.save(ref, out_dir))

    def upload_image(self, image: Path | bytes, *, name: str | None = None) -> UploadedImage:
        """Upload an input image."""
        return self._runner.run(self._client.upload_image(image, name=name))

    def system_stats(self) -> SystemStats:
        """Version and memory per device."""
        return self._runner.run(self._client.system_stats())

    def queue(self) -> QueueState:
        """Running and pending prompt ids."""
        return self._runner.run(self._client.queue())

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Node definitions."""
        return self._runner.run(self._client.object_info(node_class))

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt."""
        self._runner.run(self._client.interrupt(prompt_id))

    def cancel(self, prompt_id: str) -> None:
        """Drop a waiting prompt or interrupt a running one."""
        self._runner.run(self._client.cancel(prompt_id))

    def free(self) -> None:
        """Unload models and free VRAM."""
        self._runner.run(self._client.free())


async def _make_client(base_url: str, options: dict[str, Any]) -> ComfyClient:
    """Create the async client inside the private loop (its asyncio objects bind to that loop)."""
    return ComfyClient(base_url, **options)


def run_workflow_sync(
    params: GenerationParams,
    *,
    settings: Settings,
    workflow: str | WorkflowTemplate | None = None,
    comfy_url: str | None = None,
    out_dir: Path | None = None,
    on_event: Callable[[ComfyEvent], None] | None = None,
) -> GenerationResult:
    """Blocking run_workflow: render, run, save, return where the images are."""
    from atelier.tools.comfyui.direct import run_workflow

    return asyncio.run(
        run_workflow(
            params, settings=settings, workflow=workflow, comfy_url=comfy_url, out_dir=out_dir, on_event=on_event
        )
    )
