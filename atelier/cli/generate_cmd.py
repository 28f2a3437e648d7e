"""`atelier generate`: render a workflow, run it on ComfyUI with a live step bar, save the PNGs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from atelier.tools.comfyui.events import Cached, ComfyEvent, NodeExecuting, Queued, Reconnected, StepProgress
from atelier.tools.comfyui.sync import run_workflow_sync
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore
from atelier.tools.schemas import GenerationParams, parse_size
from atelier.tools.settings import Settings, load_settings
from atelier.tools.workflow_library import resolve_effective

__all__ = ["StepBars", "generate", "generation_params"]


class StepBars:
    """Turns ComfyUI events into rich progress: one bar per sampling node, a status line otherwise."""

    def __init__(self, progress: Progress, graph: dict[str, dict[str, object]]) -> None:
        self.progress = progress
        self.graph = graph
        self.status = progress.add_task("queued", total=None, steps="")
        self.bars: dict[str, TaskID] = {}

    def _name(self, node: str | None) -> str:
        """'KSampler #3' for a node id."""
        if node is None:
            return "node"
        entry = self.graph.get(node) or {}
        return f"{entry.get('class_type', 'node')} #{node}"

    def __call__(self, event: ComfyEvent) -> None:
        """Update the display for one event."""
        if isinstance(event, Queued):
            self.progress.update(self.status, description=f"queued as {event.prompt_id[:8]}")
        elif isinstance(event, Cached) and event.nodes:
            self.progress.update(self.status, description=f"{len(event.nodes)} node(s) cached")
        elif isinstance(event, NodeExecuting):
            self.progress.update(self.status, description=f"running {self._name(event.node)}")
        elif isinstance(event, Reconnected):
            self.progress.update(self.status, description=f"re-checked ComfyUI: {event.reason}")
        elif isinstance(event, StepProgress):
            key = event.node or "?"
            if key not in self.bars:
                self.bars[key] = self.progress.add_task(self._name(event.node), total=event.max, steps="")
            steps = f"{event.value}/{event.max}"
            self.progress.update(self.bars[key], completed=event.value, total=event.max, steps=steps)


def generation_params(
    prompt: str, negative: str | None, seed: int | None, steps: int | None, size: str | None, image: Path | None,
    settings: Settings,
) -> GenerationParams:
    """Validate the command's options into GenerationParams, with errors that name the option.

    A local `--image` is checked and copied into the inputs store; the job names the stored copy.
    """
    width = height = None
    if size is not None:
        try:
            width, height = parse_size(size)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--size") from None
    try:
        return GenerationParams(
            prompt=prompt, negative=negative, seed=seed, steps=steps, width=width, height=height,
            input_image=InputStore(settings).put_file(image).name if image else None,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc).splitlines()[-1]) from None


def generate(
    prompt: str = typer.Argument(..., help="What the image should show."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Workflow name or path to an API-format JSON."),
    seed: int | None = typer.Option(None, help="Noise seed (random when omitted)."),
    steps: int | None = typer.Option(None, help="Sampling steps."),
    size: str | None = typer.Option(None, help="Image size as WIDTHxHEIGHT, e.g. 768x512."),
    negative: str | None = typer.Option(None, help="What to avoid."),
    image: Path | None = typer.Option(None, "--image", help="Input image for img2img / upscale workflows."),
    comfy_url: str | None = typer.Option(None, "--comfy-url", help="ComfyUI URL (default: COMFYUI_URLS)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the PNGs (default: the data folder)."),
) -> None:
    """Generate image(s) with a live progress bar, save the PNGs and print their paths."""
    settings = load_settings()
    params = generation_params(prompt, negative, seed, steps, size, image, settings)
    template = resolve_effective(workflow, settings)
    for note in template.inference_notes:
        typer.echo(f"inferred: {note}", err=True)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars = StepBars(progress, template.graph)
        try:
            result = run_workflow_sync(
                params, settings=settings, workflow=template, comfy_url=comfy_url, out_dir=out, on_event=bars
            )
        except AtelierError:
            progress.update(bars.status, description="[red]failed", total=1, completed=0)
            raise
        done = f"done in {result.seconds:.1f} s (seed {result.seed})"
        progress.update(bars.status, description=done, total=1, completed=1)
    for saved in result.images:
        typer.echo(str(saved.path))
