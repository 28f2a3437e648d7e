"""`atelier showcase BRIEF`: a product showcase from the command line, with progress, approval and its files."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

__all__ = ["showcase"]


def showcase(
    brief: str = typer.Argument(..., help="The product and what the showcase is for."),
    photo: Path | None = typer.Option(None, "--photo", help="A product photo every shot is made from "
                                      "(image-to-image: qwen-image-edit or img2img, by free VRAM)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve a plan over the approval thresholds without asking."),
    owner: str = typer.Option("cli", help="Whose showcase it is (and whose jobs)."),
    worker: bool = typer.Option(True, "--worker/--no-worker",
                                help="Also run a ledger worker here (off when your workers run elsewhere)."),
    as_json: bool = typer.Option(False, "--json", help="Print the showcase (manifest and files) as JSON."),
) -> None:
    """Plan the shots, make the images (asking before a costly plan), write a caption and copy for each, and make
    the gallery: its page, manifest and zip. Progress goes to stderr."""
    from atelier.graphs.showcase_run import (
        ShowcaseApproval,
        ShowcaseEnded,
        ShowcaseProgressed,
        ShowcaseReply,
        follow_showcase,
        new_thread,
    )
    from atelier.studio import studio
    from atelier.tools.inputs import InputStore
    from atelier.tools.settings import load_settings
    from atelier.tools.showcase.store import ShowcaseStore
    from atelier.tools.toolkit import ToolContext, showcase_info
    from atelier.tools.toolkit import as_json as json_ready

    settings = load_settings()
    errors = Console(stderr=True)

    async def run() -> int:
        name = (await asyncio.to_thread(InputStore(settings).put_file, photo)).name if photo else None
        async with studio(settings, worker=worker, with_memory=False) as services:
            thread = new_thread()
            decision: str | None = None
            text: str | None = brief
            while True:
                ended: ShowcaseEnded | None = None
                async for event in follow_showcase(services.showcase, thread, owner, brief=text, photo=name,
                                                   decision=decision):
                    if isinstance(event, ShowcaseProgressed):
                        errors.print(f"[dim]{event.stage}[/] {event.done}/{event.total} · {event.message}",
                                     highlight=False)
                    elif isinstance(event, ShowcaseReply):
                        errors.print(event.text, highlight=False, markup=False)
                    elif isinstance(event, ShowcaseApproval):
                        estimate = event.estimate
                        errors.print(f"{event.question} {estimate.get('images')} image(s), "
                                     f"~{float(estimate.get('seconds', 0)):g} s of GPU, cost "
                                     f"{float(estimate.get('cost', 0)):.4f}", highlight=False, markup=False)
                        for image in event.images:
                            errors.print(f"  {image.get('purpose')} on {image.get('workflow')}: {image.get('prompt')}",
                                         highlight=False, markup=False)
                    else:
                        ended = event
                if ended is not None:
                    break
                if yes:
                    decision = "approve"
                elif sys.stdin.isatty():
                    decision = "approve" if typer.confirm("Generate these images?", err=True) else "reject"
                else:
                    errors.print("Not approved: run again with --yes to approve a plan over the thresholds.")
                    decision = "reject"
                text = None
            if ended.showcase_id is None:
                return 1
            found = await ShowcaseStore.for_service(services.ledger).get(ended.showcase_id, owner=owner)
            info = showcase_info(ToolContext(settings=settings, ledger=services.ledger, owner=owner), found)
            if as_json:
                typer.echo(json.dumps(json_ready(info), ensure_ascii=False))
            else:
                typer.echo(f"showcase {info.showcase_id}: {info.status}, {info.images} of {info.planned} image(s)")
                typer.echo(f"page: {info.links.page}\nzip:  {info.links.zip}")
            return 0 if info.status == "ready" else 1

    raise typer.Exit(asyncio.run(run()))
