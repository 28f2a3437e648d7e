"""`atelier workflows`: the catalog as a table, `--explain "REQUEST"` (which workflow and why), and `import FILE`
(the user's models_config.json, checked and kept in the data folder)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atelier.agents.cost_router import RouteChoice, choose_route
from atelier.agents.route_request import RouteRequest, parse_route_request
from atelier.tools.catalog import list_templates, task_of
from atelier.tools.comfyui.model_inventory import fetch_inventories, folders_of
from atelier.tools.comfyui.probe import most_free_vram
from atelier.tools.comfyui.readiness import check_server
from atelier.tools.doctor import mask_secrets, readiness_lines
from atelier.tools.models_config import load_models_config
from atelier.tools.settings import Settings, load_settings
from atelier.tools.workflow_library import WorkflowLibrary, build_library, load_library

__all__ = ["explain_text", "import_config", "workflows", "workflows_app"]

workflows_app = typer.Typer(help="The workflow catalog; `--explain` a routing decision; `import` a models_config.json.")


@workflows_app.callback(invoke_without_command=True)
def workflows(
    ctx: typer.Context,
    measured: bool = typer.Option(False, "--measured",
                                  help="Add the times measured on your servers (opens the job database)."),
    explain: str | None = typer.Option(None, "--explain", metavar="REQUEST",
                                       help='Say which workflow a request gets and why, e.g. "urgent thumbnail" or '
                                            '"hero image with 16 GB free".'),
    vram: float | None = typer.Option(None, "--vram", min=0, help="Free VRAM in GB for --explain (default: what the "
                                                                  "request says, else what the servers report)."),
    ready: bool = typer.Option(False, "--ready", help="Ask each ComfyUI server which workflows it can run now and "
                                                      "which model files the others lack (and where to get them)."),
) -> None:
    """List the workflow catalog: task, tier, VRAM, typical time and cost, what each accepts (yours included)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    library = load_library(settings)
    times, seen = _measured_times(settings) if measured else ({}, {})
    console = Console()
    if explain is not None:
        console.print(explain_text(explain, settings, library, vram=vram, measured=times), highlight=False,
                      markup=False, soft_wrap=True)
        return
    console.print(_table(library, seen if measured else None))
    if ready:
        for url in settings.comfyui_urls:
            server = asyncio.run(check_server(url, library.templates))
            console.print(f"{url}:", highlight=False, markup=False)
            for line in readiness_lines(server):
                console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    for problem in library.errors:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    if library.config_file is not None:
        console.print(f"models config: {library.config_file} ({len(library.mappings)} models)", highlight=False,
                      markup=False)


def _table(library: WorkflowLibrary, seen: dict[str, str] | None) -> Table:
    """The catalog as a table (`seen`: measured times per workflow, when asked for)."""
    table = Table(title="Workflows")
    columns = ["name", "task", "quality", "VRAM GB", "≈ s", *(["measured s (runs)"] if seen is not None else []),
               "cost", "steps", "max size", "accepts", "model", "purpose"]
    for column in columns:
        table.add_column(column)
    for template in library.templates:
        entry = template.catalog
        accepts = ", ".join(sorted(template.bindings))
        timing = [seen.get(template.name, "—")] if seen is not None else []
        model = library.model_of(template.name) or ""
        if entry is None:
            table.add_row(template.name, task_of(template), "?", "?", "?", *timing, "?", "?", "?", accepts, model,
                          "(your workflow, no catalog entry: task read off its graph, time learned from its runs)")
            continue
        table.add_row(
            template.name, entry.task, entry.quality, f"{entry.vram_gb:g}", f"{entry.typical_seconds:g}", *timing,
            f"{entry.cost_per_image:g}", str(entry.recommended_steps or "—"), entry.max_resolution, accepts, model,
            entry.purpose,
        )
    return table


def explain_text(text: str, settings: Settings, library: WorkflowLibrary, *, vram: float | None = None,
                 measured: dict[str, float] | None = None) -> str:
    """The routing decision for a request in words: what was read, the choice, the rules tried, the alternatives.

    Free VRAM: `vram`, else what the request says, else what the servers report; the servers' model lists rule out
    workflows none of them can run (when they answer)."""
    purposes = library.config.routing_rules.by_purpose if library.config else ()
    request = parse_route_request(text, purposes)
    free = vram if vram is not None else request.vram_free_gb
    if free is None:
        free = asyncio.run(most_free_vram(settings.comfyui_urls, timeout=3.0))
    inventories = asyncio.run(fetch_inventories(settings.comfyui_urls, folders_of(library.templates), timeout=3.0))
    route = choose_route(request.purpose, urgency=request.urgency, vram_free_gb=free, budget=request.budget,
                         measured=measured, library=library, inventories=inventories)
    return _decision(text, request, free, len(inventories), route)


def _decision(text: str, request: RouteRequest, free: float | None, servers: int, route: RouteChoice) -> str:
    """The explanation's lines."""
    read = (f"purpose {request.purpose or '(none)'}, urgency {request.urgency}, "
            f"{f'{free:g} GB' if free is not None else 'unknown'} VRAM free"
            + (f", budget {request.budget:g} per image" if request.budget is not None else "")
            + (f"; model files listed by {servers} server(s)" if servers else "; no server listed its model files"))
    lines = [f"Request: {text!r} → {read}",
             f"Decision: {route.workflow}" + (f" — by {route.rule}" if route.rule else " — by the catalog heuristics"),
             f"  {route.reason}"]
    if route.rules_skipped:
        lines.append("Rules that did not apply:")
        lines += [f"  - {rule}" for rule in route.rules_skipped]
    lines.append("Alternatives:" if route.alternatives else "Alternatives: none (no other workflow does this task)")
    lines += [f"  - {alternative.workflow}: {alternative.why}" for alternative in route.alternatives]
    return "\n".join(lines)


@workflows_app.command("import")
def import_config(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="A models_config.json (integration-ideas §12; // comments allowed)."),
) -> None:
    """Check a models_config.json against your workflows, keep a copy in the data folder (used from then on) and
    print which workflow runs each model."""
    settings = load_settings()
    config = load_models_config(path)
    library = build_library(list_templates(settings.workflow_dirs), config, path)
    target = settings.imported_models_config
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=".models_config.", delete=False) as handle:
        handle.write(path.read_bytes())
    os.replace(handle.name, target)
    console = Console()
    table = Table(title=f"Models of {path.name} → workflows")
    for column in ("model", "workflow", "matched by", "task", "quality", "VRAM GB", "≈ s", "cost", "max size"):
        table.add_column(column)
    for mapping in library.mappings.values():
        entry = mapping.entry
        table.add_row(mapping.model, mapping.workflow, mapping.matched_by, entry.task, entry.quality,
                      f"{entry.vram_gb:g}", f"{entry.typical_seconds:g}", f"{entry.cost_per_image:g}",
                      entry.max_resolution)
    console.print(table)
    for where, model in config.routing_rules.named():
        console.print(f"{where} → {model} (workflow {library.mappings[model].workflow})", highlight=False,
                      markup=False)
    console.print(f"imported to {target}; the router uses it from now on", highlight=False, markup=False)
    if settings.models_config is not None and settings.models_config.expanduser() != target:
        console.print(f"[yellow]note:[/] ATELIER_MODELS_CONFIG={settings.models_config} is set and is used instead; "
                      "unset it to use the imported copy", highlight=False)


def _measured_times(settings: Settings) -> tuple[dict[str, float], dict[str, str]]:
    """Per workflow from the ledger's measurements: the mean seconds, and the text shown ("avg s (runs)", per server
    when it ran on several)."""
    from atelier.tools.ledger.service import LedgerService

    async def read() -> tuple[dict[str, float], dict[str, str]]:
        async with LedgerService.open(settings) as svc:
            timings = await svc.timings.all()
            estimates = await svc.timings.estimates()
        shown: dict[str, str] = {}
        for name, seconds in estimates.items():
            mine = [t for t in timings if t.workflow.rsplit("/", 1)[-1] == name]
            runs = sum(t.runs for t in mine)
            servers = "; ".join(f"{mask_secrets(t.server)}: {t.avg_seconds:.3g}" for t in mine) if len(mine) > 1 else ""
            shown[name] = f"{seconds:.3g} ({runs})" + (f" [{servers}]" if servers else "")
        return estimates, shown

    return asyncio.run(read())
