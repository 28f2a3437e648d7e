"""`atelier doctor`: the services, as a table (`atelier workflows` is atelier/cli/workflow_cmds.py)."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from atelier.tools.doctor import ServiceCheck, run_doctor
from atelier.tools.settings import load_settings

__all__ = ["doctor", "doctor_table"]


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
