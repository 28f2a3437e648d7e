"""`atelier` entry point: the typer app, global options and one clear error line instead of a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from atelier.cli import (
    api_cmd,
    db_cmds,
    generate_cmd,
    info_cmds,
    inputs_cmd,
    job_cmds,
    mcp_cmd,
    memory_cmds,
    prompt_cmds,
    showcase_cmd,
    user_cmds,
    watch_cmd,
    worker_cmd,
    workflow_cmds,
)
from atelier.tools.errors import AtelierError

__all__ = ["app", "main"]

app = typer.Typer(
    name="atelier",
    help="Atelier: a multi-agent studio on ComfyUI, Ollama, Qdrant and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("generate")(generate_cmd.generate)
app.command("doctor")(info_cmds.doctor)
app.command("submit")(job_cmds.submit)
app.command("jobs")(job_cmds.jobs)
app.command("job")(job_cmds.job)
app.command("cancel")(job_cmds.cancel)
app.command("batch")(job_cmds.batch)
app.command("worker")(worker_cmd.worker)
app.command("api")(api_cmd.api)
app.command("mcp")(mcp_cmd.mcp)
app.command("watch")(watch_cmd.watch)
app.command("ingest")(memory_cmds.ingest)
app.command("rate")(memory_cmds.rate)
app.command("showcase")(showcase_cmd.showcase)
app.add_typer(db_cmds.db_app, name="db")
app.add_typer(memory_cmds.memory_app, name="memory")
app.add_typer(prompt_cmds.prompts_app, name="prompts")
app.add_typer(prompt_cmds.ab_app, name="ab")
app.add_typer(user_cmds.users_app, name="users")
app.add_typer(inputs_cmd.inputs_app, name="inputs")
app.add_typer(workflow_cmds.workflows_app, name="workflows")


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Atelier's command line (`--debug` is acted on in `main`, around the whole app)."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; an AtelierError prints one red message and exits 1 (with --debug, the traceback too).

    SIGTERM and SIGHUP end any command with a normal exit (status 128+N), so the embedded PostgreSQL's last user
    stops it.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if argv is None:  # the process's own entry point (a caller passing argv keeps its signal handlers)
        # Commands open the ledger from a worker thread (asyncio.to_thread), where the embedded PostgreSQL cannot
        # install its handlers: without these, a SIGTERM to `atelier submit --wait` would skip the exit that stops
        # it. Long-running commands put their graceful handlers on top (worker's and watch's stop events, uvicorn).
        from atelier.tools.ledger.database import install_exit_signal_handlers

        install_exit_signal_handlers()
    try:
        app(args=args, standalone_mode=True)
    except AtelierError as exc:
        if debug:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
