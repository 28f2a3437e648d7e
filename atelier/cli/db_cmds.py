"""`atelier db status` and `atelier db stop`: the embedded PostgreSQL used when DATABASE_URL is unset."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from atelier.tools.ledger.database import EmbeddedStatus, embedded_status, stop_embedded
from atelier.tools.settings import load_settings

__all__ = ["db_app", "status", "status_table", "stop"]

db_app = typer.Typer(
    help="The embedded PostgreSQL that Atelier processes share when DATABASE_URL is unset.",
    no_args_is_help=True,
)


def status_table(state: EmbeddedStatus, *, database_url_set: bool) -> Table:
    """The embedded server's state as a two-column rich table."""
    table = Table(title="Embedded PostgreSQL")
    table.add_column("")
    table.add_column("value")
    running = "[green]yes[/]" if state.running else "no"
    table.add_row("data folder", str(state.data_dir))
    table.add_row("initialised", "yes" if state.initialised else "no (created on first use)")
    table.add_row("running", running)
    table.add_row("server pid", str(state.server_pid) if state.server_pid is not None else "—")
    table.add_row("uri", state.uri or "—")
    table.add_row("live Atelier pids", ", ".join(map(str, state.user_pids)) or "none")
    table.add_row("orphaned", "[yellow]yes[/]: no live Atelier process uses it; the next one adopts it, "
                  "`atelier db stop` stops it" if state.orphaned else "no")
    if state.stray_pids:
        strays = ", ".join(map(str, state.stray_pids))
        table.add_row("stray servers", f"[yellow]postgres pid(s) {strays}[/] still serve a deleted copy of this "
                      "folder; `atelier db stop` stops them")
    table.add_row("dead pids pruned", ", ".join(map(str, state.pruned_pids)) or "none")
    if database_url_set:
        table.add_row("note", "[yellow]DATABASE_URL is set: Atelier uses that server, not this one[/]")
    return table


@db_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show the embedded server: folder, running or not, its pid and URI, the Atelier processes using it."""
    settings = load_settings()
    state = embedded_status(settings)
    database_url_set = settings.database_url is not None
    if as_json:
        typer.echo(json.dumps({**state.as_dict(), "database_url_set": database_url_set}))
        return
    Console().print(status_table(state, database_url_set=database_url_set))


@db_app.command("stop")
def stop(
    force: bool = typer.Option(False, "--force", help="Stop it even while live Atelier processes use it."),
) -> None:
    """Stop the embedded server (fast shutdown); refused while other live Atelier processes use it."""
    message = stop_embedded(load_settings(), force=force)
    Console().print(message, highlight=False, soft_wrap=True)
