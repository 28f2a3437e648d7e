"""`atelier users …`: accounts, roles, priority tiers, quotas and API keys (secrets shown once)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from atelier.cli.job_cmds import _with_ledger
from atelier.tools.accounts.models import Quotas, User
from atelier.tools.accounts.quotas import TIER_PRIORITY
from atelier.tools.ledger.service import LedgerService

__all__ = ["users_app"]

users_app = typer.Typer(help="Accounts: users, roles, tiers, quotas and API keys.", no_args_is_help=True)


def _limit(value: float | None) -> str:
    """A quota for people: a number, or ∞."""
    return "∞" if value is None else f"{value:g}"


def _table(users: list[User]) -> Table:
    """Users with their tier and quotas."""
    table = Table("user", "role", "tier", "images/day", "GPU s/day", "budget/month", "concurrent", "state",
                  title="Users")
    for u in users:
        q = u.quotas
        table.add_row(u.id, u.role, u.tier, _limit(q.images_per_day), _limit(q.gpu_seconds_per_day),
                      _limit(q.budget_per_month), _limit(q.max_concurrent), "disabled" if u.disabled_at else "active")
    return table


def _quotas(images_per_day: int | None, gpu_seconds_per_day: float | None, budget_per_month: float | None,
            max_concurrent: int | None) -> Quotas:
    """The quota options given (negative = unlimited), as a Quotas with only those fields set."""
    given = {"images_per_day": images_per_day, "gpu_seconds_per_day": gpu_seconds_per_day,
             "budget_per_month": budget_per_month, "max_concurrent": max_concurrent}
    values = {name: (None if value < 0 else value) for name, value in given.items() if value is not None}
    return Quotas.model_validate(values)


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="The user name (lower-case letters, digits, . _ -)."),
    admin: bool = typer.Option(False, "--admin", help="An admin sees and manages everyone's work."),
    tier: str = typer.Option("standard", help=f"Priority tier: {', '.join(TIER_PRIORITY)}."),
    display_name: str = typer.Option("", help="A name for people."),
    images_per_day: int | None = typer.Option(None, help="Images per UTC day."),
    gpu_seconds_per_day: float | None = typer.Option(None, help="ComfyUI seconds per UTC day."),
    budget_per_month: float | None = typer.Option(None, help="Cost per UTC month."),
    max_concurrent: int | None = typer.Option(None, help="Jobs queued or running at once."),
    key: bool = typer.Option(True, "--key/--no-key", help="Also make an API key (shown once)."),
) -> None:
    """Create a user (and, by default, an API key for them)."""
    quotas = _quotas(images_per_day, gpu_seconds_per_day, budget_per_month, max_concurrent)

    async def work(svc: LedgerService) -> tuple[User, str | None]:
        directory = svc.accounts
        user = await directory.create(name, role="admin" if admin else "user", display_name=display_name, tier=tier,
                                      quotas=quotas)
        made = await directory.create_key(name, "first key") if key else None
        return user, made.secret if made else None

    user, secret = _with_ledger(work)
    Console().print(_table([user]))
    if secret:
        typer.echo(f"API key (shown once, store it now): {secret}")


@users_app.command("list")
def list_users(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every user with role, tier and quotas."""
    users = _with_ledger(lambda svc: svc.accounts.all())
    if as_json:
        typer.echo(json.dumps([u.model_dump(mode="json") for u in users], indent=2))
        return
    Console().print(_table(users))


@users_app.command("quota")
def quota(
    name: str = typer.Argument(..., help="The user."),
    images_per_day: int | None = typer.Option(None, help="Images per UTC day (-1: unlimited)."),
    gpu_seconds_per_day: float | None = typer.Option(None, help="ComfyUI seconds per UTC day (-1: unlimited)."),
    budget_per_month: float | None = typer.Option(None, help="Cost per UTC month (-1: unlimited)."),
    max_concurrent: int | None = typer.Option(None, help="Jobs queued or running at once (-1: unlimited)."),
    tier: str | None = typer.Option(None, help=f"Priority tier: {', '.join(TIER_PRIORITY)}."),
    role: str | None = typer.Option(None, help="admin or user."),
) -> None:
    """Change a user's quotas, tier or role (options not given stay as they are)."""
    quotas = _quotas(images_per_day, gpu_seconds_per_day, budget_per_month, max_concurrent)
    if role not in (None, "admin", "user"):
        raise typer.BadParameter("role is admin or user", param_hint="--role")
    user = _with_ledger(lambda svc: svc.accounts.update(name, quotas=quotas, tier=tier,
                                                            role="admin" if role == "admin" else
                                                            "user" if role == "user" else None))
    Console().print(_table([user]))


@users_app.command("disable")
def disable(name: str = typer.Argument(..., help="The user.")) -> None:
    """Refuse the user's keys and tokens (their work stays)."""
    user = _with_ledger(lambda svc: svc.accounts.update(name, disabled=True))
    typer.echo(f"{user.id}: disabled")


@users_app.command("enable")
def enable(name: str = typer.Argument(..., help="The user.")) -> None:
    """Let a disabled user back in."""
    user = _with_ledger(lambda svc: svc.accounts.update(name, disabled=False))
    typer.echo(f"{user.id}: enabled")


@users_app.command("key")
def key(
    name: str = typer.Argument(..., help="The user."),
    label: str = typer.Option("", "--label", help="What the key is for (e.g. n8n)."),
    expires_in_days: float | None = typer.Option(None, help="Expire after this many days."),
) -> None:
    """Make an API key; the secret is printed once and only its hash is stored."""
    made = _with_ledger(lambda svc: svc.accounts.create_key(name, label, expires_in_days=expires_in_days))
    typer.echo(f"API key {made.key.prefix} for {name} (shown once, store it now): {made.secret}")


@users_app.command("keys")
def keys(name: str | None = typer.Argument(None, help="Only this user's keys.")) -> None:
    """API keys: id, prefix, owner, label, last use, state (never the secret)."""
    found = _with_ledger(lambda svc: svc.accounts.keys(name))
    table = Table("id", "prefix", "user", "label", "created", "last used", "state", title="API keys")
    for k in found:
        state = "revoked" if k.revoked_at else "expires " + f"{k.expires_at:%Y-%m-%d}" if k.expires_at else "active"
        table.add_row(k.id[:8], k.prefix, k.user_id, k.name, f"{k.created_at:%Y-%m-%d}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "—", state)
    Console().print(table)


@users_app.command("revoke")
def revoke(key_ref: str = typer.Argument(..., help="The key's prefix or id.")) -> None:
    """Revoke an API key: it and every token issued for it stop working at once."""
    revoked = _with_ledger(lambda svc: svc.accounts.revoke(key_ref))
    typer.echo(f"API key {revoked.prefix} of {revoked.user_id}: revoked")
