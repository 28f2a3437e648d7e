"""`atelier prompts …` (the versioned prompt library) and `atelier ab …` (A/B tests over prompts and workflows).

The CLI is the operator's: it acts as an admin (it may save versions of anyone's prompt and stop anyone's test),
and what it creates is authored by the login name. Templates render in a worker process within
ATELIER_TEMPLATE_SECONDS, as on the servers.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from atelier.cli.job_cmds import _with_ledger
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.prompts.models import ABReport, ABTest, PromptDraft, VariantSpec

__all__ = ["ab_app", "fork", "parse_pairs", "parse_variant", "prompts_app"]

prompts_app = typer.Typer(help="The prompt library: versioned Jinja2 prompts with usage and ratings.",
                          no_args_is_help=True)
ab_app = typer.Typer(help="A/B tests: compare prompt versions or workflows on people's ratings.", no_args_is_help=True)


def _author() -> str:
    """Who is saving (the login name; 'local' when there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """`key=value` options as a dict; values that read as JSON (numbers, true, lists) are taken as such."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise AtelierError(f"{option} '{pair}' is not key=value; e.g. {option} subject='a red kettle'")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


def parse_variant(text: str) -> VariantSpec:
    """`LABEL=prompt@version[,workflow=NAME][,weight=N]` or `LABEL=workflow=NAME` as a variant."""
    label, sep, rest = text.partition("=")
    fix = "e.g. --variant A=hero@1 or --variant B=hero@2,workflow=txt2img-hq,weight=2"
    if not sep or not rest:
        raise AtelierError(f"--variant '{text}' is not LABEL=ARM; {fix}")
    fields: dict[str, Any] = {"label": label.strip()}
    for part in (p.strip() for p in rest.split(",")):
        if part.startswith("workflow="):
            fields["workflow"] = part.removeprefix("workflow=")
        elif part.startswith("weight="):
            fields["weight"] = part.removeprefix("weight=")
        elif "@" in part:
            name, _, version = part.partition("@")
            fields["prompt"], fields["version"] = name, version
        else:
            raise AtelierError(f"--variant '{text}': cannot read '{part}'; {fix}")
    try:
        return VariantSpec.model_validate(fields)
    except ValueError as exc:
        raise AtelierError(f"--variant '{text}': {exc}; {fix}") from exc


@prompts_app.command("list")
def list_prompts(
    category: str | None = typer.Option(None, help="Only this category."),
    purpose: str | None = typer.Option(None, help="Only prompts for this purpose (hero, lifestyle, …)."),
    tag: str | None = typer.Option(None, help="Only prompts with this tag."),
    search: str | None = typer.Option(None, help="A word in the name or description."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The library: each prompt's category, purpose, tags and newest version."""
    prompts = _with_ledger(lambda svc: svc.prompts.search(category=category, purpose=purpose, tag=tag, query=search))
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in prompts], indent=2))
        return
    table = Table("name", "category", "purpose", "tags", "versions", "description", title="Prompts")
    for p in prompts:
        table.add_row(p.name, p.category, p.purpose or "—", ", ".join(p.tags), str(p.latest), p.description[:60])
    Console().print(table)


@prompts_app.command("save")
def save(
    name: str = typer.Argument(..., help="The prompt's name (lower-case letters, digits, . _ -)."),
    template: str | None = typer.Option(None, "--template", "-t", help="The Jinja2 template text."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Read the template from this file."),
    negative: str | None = typer.Option(None, help="The negative prompt (default: the newest version's)."),
    default: list[str] = typer.Option([], "--default", "-d",
                                      help="A variable's default, name=value (repeat; default: the newest version's)."),
    category: str | None = typer.Option(None, help="Its category (kept when not given)."),
    purpose: str | None = typer.Option(None, help="The purpose the designer uses it for: hero, lifestyle, …"),
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeat); replaces the tags when given."),
    description: str | None = typer.Option(None, help="What the prompt is for."),
    note: str = typer.Option("", help="What changed in this version."),
) -> None:
    """Save a prompt: a changed template, negative or defaults becomes a new version; metadata is updated."""
    if (template is None) == (file is None):
        raise AtelierError("give the template with --template TEXT or --file PATH (one of them)")
    text = template if template is not None else file.read_text(encoding="utf-8") if file else ""
    draft = PromptDraft(name=name, template=text, negative=negative,
                        defaults=parse_pairs(default, "--default") if default else None,
                        category=category, purpose=purpose, tags=tag or None, description=description, note=note)
    result = _with_ledger(lambda svc: svc.prompts.save(draft, author=_author(), admin=True))
    what = "saved as version" if result.created else "unchanged; newest is version"
    typer.echo(f"{result.prompt.name}: {what} {result.version.version} "
               f"(variables: {', '.join(result.version.variable_names()) or 'none'})")


@prompts_app.command("fork")
def fork(
    source: str = typer.Argument(..., help="The prompt to copy."),
    name: str = typer.Argument(..., help="The new prompt's name (not in the library yet)."),
    note: str = typer.Option("", help="The new version's note (default: 'forked from SOURCE@VERSION')."),
) -> None:
    """Copy a prompt's newest version into a new prompt of your own (its purpose is not copied: set it with save)."""
    result = _with_ledger(lambda svc: svc.prompts.fork(source, name, author=_author(), note=note))
    typer.echo(f"{result.prompt.name}: forked from {source} as version 1 "
               f"(variables: {', '.join(result.version.variable_names()) or 'none'})")


@prompts_app.command("show")
def show(
    name: str = typer.Argument(..., help="The prompt's name."),
    version: int | None = typer.Option(None, help="A version (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One version: its template, variables, defaults and negative prompt."""
    found = _with_ledger(lambda svc: svc.prompts.version(name, version))
    if as_json:
        typer.echo(json.dumps({**found.model_dump(mode="json"), "variables": found.variable_names()}, indent=2))
        return
    console = Console()
    console.print(f"[bold]{found.ref}[/] by {found.author}, {found.created_at:%Y-%m-%d %H:%M}"
                  + (f" — {found.note}" if found.note else ""), highlight=False)
    console.print(found.template, markup=False, highlight=False)
    console.print(f"variables: {', '.join(found.variable_names()) or 'none'}; defaults: {json.dumps(found.defaults)}",
                  highlight=False)
    if found.negative:
        console.print(f"negative: {found.negative}", highlight=False)


@prompts_app.command("history")
def history(name: str = typer.Argument(..., help="The prompt's name."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every version with its usage and ratings (liked = ★4–5 or thumb up; score = (liked+1)/(rated+2))."""

    async def read(svc: LedgerService) -> tuple[list[Any], dict[int, Any]]:
        return await svc.prompts.history(name), {s.version: s for s in await svc.prompts.stats(name)}

    versions, stats = _with_ledger(read)
    if as_json:
        typer.echo(json.dumps([{**v.model_dump(mode="json"), "stats": stats[v.version].model_dump()}
                               for v in versions], indent=2))
        return
    table = Table("version", "when", "by", "note", "uses", "rated", "liked", "★ mean", "score", title=name)
    for v in versions:
        s = stats[v.version]
        table.add_row(str(v.version), f"{v.created_at:%Y-%m-%d %H:%M}", v.author, v.note[:40], str(s.uses),
                      str(s.rated), str(s.liked), f"{s.mean_stars:.2f}" if s.mean_stars is not None else "—",
                      f"{s.score:.2f}")
    Console().print(table)


@prompts_app.command("render")
def render(
    name: str = typer.Argument(..., help="The prompt's name."),
    version: int | None = typer.Option(None, help="A version (default: the newest)."),
    var: list[str] = typer.Option([], "--var", "-v", help="A variable's value, name=value (repeat)."),
) -> None:
    """Print the prompt text for these values (the version's defaults fill the rest)."""
    values = parse_pairs(var, "--var")

    async def work(svc: LedgerService) -> str:
        found = await svc.prompts.version(name, version)
        return await found.render_async(values, seconds=svc.settings.template_seconds)

    typer.echo(_with_ledger(work))


def _test_table(tests: list[ABTest]) -> Table:
    """Tests with their variants."""
    table = Table("name", "status", "purpose", "variants", "min ratings", "created", title="A/B tests")
    for t in tests:
        arms = "; ".join(f"{v.label}: {v.describe()}" + (f" ×{v.weight}" if v.weight != 1 else "") for v in t.variants)
        table.add_row(t.name, t.status, t.purpose or "—", arms, str(t.min_ratings), f"{t.created_at:%Y-%m-%d}")
    return table


@ab_app.command("create")
def create(
    name: str = typer.Argument(..., help="The test's name."),
    variant: list[str] = typer.Option(..., "--variant", help="LABEL=prompt@version[,workflow=NAME][,weight=N] or "
                                                             "LABEL=workflow=NAME (repeat, at least twice)."),
    purpose: str | None = typer.Option(None, help="Apply it to the designer's images of this purpose."),
    min_ratings: int = typer.Option(20, help="Ratings each variant needs before the report decides."),
    description: str = typer.Option("", help="What the test asks."),
) -> None:
    """Start an A/B test; requests are assigned a variant by a hash of their key (the same request, the same arm)."""
    specs = [parse_variant(v) for v in variant]
    test = _with_ledger(lambda svc: svc.abtests.create(name, specs, _author(), purpose=purpose,
                                                       min_ratings=min_ratings, description=description))
    Console().print(_test_table([test]))


@ab_app.command("list")
def list_tests(status: str | None = typer.Option(None, help="running or stopped.")) -> None:
    """Every A/B test, newest first."""
    Console().print(_test_table(_with_ledger(lambda svc: svc.abtests.all(status=status))))


@ab_app.command("stop")
def stop(name: str = typer.Argument(..., help="The test's name.")) -> None:
    """Stop assigning variants (the data and the report stay); the CLI may stop anyone's test."""
    test = _with_ledger(lambda svc: svc.abtests.stop(name, _author(), admin=True))
    typer.echo(f"{test.name}: stopped")


def report_table(report: ABReport) -> Table:
    """A report as a table: one row per variant."""
    table = Table("variant", "arm", "uses", "rated", "liked", "like rate", "★ mean", "P(best)",
                  title=f"A/B test {report.test} ({report.status})")
    for row in report.variants:
        table.add_row(row.label, row.arm, str(row.uses), str(row.rated), str(row.liked),
                      f"{row.like_rate:.0%}" if row.like_rate is not None else "—",
                      f"{row.mean_stars:.2f}" if row.mean_stars is not None else "—", f"{row.p_best:.3f}")
    return table


@ab_app.command("report")
def report(name: str = typer.Argument(..., help="The test's name."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each variant's rating, sample size and P(best); whether the difference is significant; what to do."""
    result = _with_ledger(lambda svc: svc.abtests.report(name))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    console = Console()
    console.print(report_table(result))
    chi = (f"chi-square {result.chi2:.3f}, p = {result.p_value:.4f}" if result.chi2 is not None
           else "chi-square: not defined yet")
    console.print(f"{'significant' if result.significant else 'not significant'}; {chi}", highlight=False)
    console.print(f"[bold]recommendation:[/] {result.recommendation}", highlight=False)
    console.print(f"[dim]{result.method}[/]", highlight=False)
