"""`atelier workflows` and `atelier doctor`: the catalog and the services, as tables."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from atelier.tools.catalog import list_templates
from atelier.tools.doctor import ServiceCheck, mask_secrets, run_doctor
from atelier.tools.settings import Settings, load_settings

__all__ = ["doctor", "doctor_table", "workflows"]


def workflows(
    measured: bool = typer.Option(False, "--measured",
                                  help="Add the times measured on your servers (opens the job database)."),
) -> None:
    """List the workflow catalog: purpose, tier, VRAM, typical time and cost, what each accepts."""
    settings = load_settings()
    listing = list_templates([settings.workflows_dir] if settings.workflows_dir else [])
    seen = _measured_times(settings) if measured else {}
    table = Table(title="Workflows")
    columns = ["name", "quality", "VRAM GB", "≈ s", *(["measured s (runs)"] if measured else []), "cost", "steps",
               "max size", "accepts", "purpose"]
    for column in columns:
        table.add_column(column)
    for template in listing.templates:
        entry = template.catalog
        accepts = ", ".join(sorted(template.bindings))
        timing = [seen.get(template.name, "—")] if measured else []
        if entry is None:
            table.add_row(template.name, "?", "?", "?", *timing, "?", "?", "?", accepts, "(user workflow, no sidecar)")
            continue
        table.add_row(
            template.name, entry.quality, f"{entry.vram_gb:g}", f"{entry.typical_seconds:g}", *timing,
            f"{entry.cost_per_image:g}", str(entry.recommended_steps or "—"), entry.max_resolution, accepts,
            entry.purpose,
        )
    console = Console()
    console.print(table)
    for problem in listing.errors:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False)


def _measured_times(settings: Settings) -> dict[str, str]:
    """Per workflow: "avg s (runs)", and per server when it ran on several (from the ledger's measurements)."""
    from atelier.tools.ledger.service import LedgerService

    async def read() -> dict[str, str]:
        async with LedgerService.open(settings) as svc:
            timings = await svc.timings.all()
            estimates = await svc.timings.estimates()
        shown: dict[str, str] = {}
        for name, seconds in estimates.items():
            mine = [t for t in timings if t.workflow.rsplit("/", 1)[-1] == name]
            runs = sum(t.runs for t in mine)
            servers = "; ".join(f"{mask_secrets(t.server)}: {t.avg_seconds:.3g}" for t in mine) if len(mine) > 1 else ""
            shown[name] = f"{seconds:.3g} ({runs})" + (f" [{servers}]" if servers else "")
        return shown

    return asyncio.run(read())


def doctor_table(checks: list[ServiceCheck]) -> Table:
    """The doctor's findings as a rich table (their secrets are masked when the checks are made)."""
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
