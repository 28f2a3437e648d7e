"""`atelier workflows` and `atelier doctor`: the catalog and the services, as tables."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from tools.catalog import list_templates
from tools.doctor import ServiceCheck, run_doctor
from tools.settings import load_settings

__all__ = ["doctor", "doctor_table", "workflows"]


def workflows() -> None:
    """List the workflow catalog: purpose, tier, VRAM, typical time and cost, what each accepts."""
    settings = load_settings()
    listing = list_templates([settings.workflows_dir] if settings.workflows_dir else [])
    table = Table(title="Workflows")
    for column in ("name", "quality", "VRAM GB", "≈ s", "cost", "steps", "max size", "accepts", "purpose"):
        table.add_column(column)
    for template in listing.templates:
        entry = template.catalog
        accepts = ", ".join(sorted(template.bindings))
        if entry is None:
            table.add_row(template.name, "?", "?", "?", "?", "?", "?", accepts, "(user workflow, no sidecar)")
            continue
        table.add_row(
            template.name, entry.quality, f"{entry.vram_gb:g}", f"{entry.typical_seconds:g}",
            f"{entry.cost_per_image:g}", str(entry.recommended_steps or "—"), entry.max_resolution, accepts,
            entry.purpose,
        )
    console = Console()
    console.print(table)
    for problem in listing.errors:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False)


def doctor_table(checks: list[ServiceCheck]) -> Table:
    """The doctor's findings as a rich table."""
    table = Table(title="Atelier services")
    for column in ("service", "status", "url", "version", "details"):
        table.add_column(column)
    colours = {"ok": "green", "DOWN": "bold red", "down": "yellow"}
    for check in checks:
        details = "; ".join(check.details) if check.ok else check.hint
        status = f"[{colours[check.status]}]{check.status}[/]"
        table.add_row(check.service, status, check.url, check.version, details)
    return table


def doctor(
    comfy_url: list[str] | None = typer.Option(None, "--comfy-url", help="Check this ComfyUI instead (repeatable)."),
) -> None:
    """Check every configured service; exit 1 when a required one is down."""
    settings = load_settings()
    checks = asyncio.run(run_doctor(settings, comfy_urls=comfy_url or None))
    Console().print(doctor_table(checks))
    if any(c.status == "DOWN" for c in checks):
        raise typer.Exit(1)
