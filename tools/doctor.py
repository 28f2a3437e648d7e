"""Health checks of every configured service: reachable, version, VRAM and models.

What a check reports (its URL, details, hint) goes to terminals and web pages, so secrets in it are masked
when it is made (`mask_secrets`): a URL's password or lone userinfo, secret query parameters, a libpq
`password=` entry.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from atelier.tools.catalog import list_templates
from atelier.tools.comfyui.probe import probe_stats
from atelier.tools.comfyui.readiness import ServerReadiness, check_server
from atelier.tools.comfyui.rest import ComfyREST
from atelier.tools.comfyui.template_models import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.service_errors import OLLAMA_START
from atelier.tools.settings import Settings
from atelier.tools.vision import vision_status
from atelier.tools.workflow_library import load_library

__all__ = ["ServiceCheck", "check_comfyui", "check_ollama", "check_postgres", "check_qdrant", "check_vision",
           "mask_secrets", "run_doctor"]

MASK = "***"
# scheme://user:password@ or scheme://token@ (userinfo ends at the first "@" before any "/", "?" or "#").
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^@/?#\s]+)@")
_SECRET_NAMES = r"password|passwd|pwd|pass|sslpassword|secret|token|access_token|api[_-]?key|apikey|key"
# ?password=… / &token=… in a URL.
_QUERY = re.compile(rf"(?P<lead>[?&;](?:{_SECRET_NAMES})=)[^&#\s]*", re.IGNORECASE)
# password=… in a libpq key/value connection string (quoted or not).
_KEYWORD = re.compile(r"(?P<lead>(?<!\S)(?:password|sslpassword)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Schemes whose lone userinfo is a role name, not a credential.
_NAMED_USER_SCHEMES = ("postgres://", "postgresql://")


def _userinfo(match: re.Match[str]) -> str:
    """`user:***@` for user and password; `***@` for a lone userinfo (a token), but a database's role stays."""
    user, sep, _ = match["info"].partition(":")
    if sep:
        return f"{match['scheme']}{user}:{MASK}@"
    return match[0] if match["scheme"].lower() in _NAMED_USER_SCHEMES else f"{match['scheme']}{MASK}@"


def mask_secrets(text: str) -> str:
    """The text with every connection secret in it masked: URL passwords and userinfo, secret query
    parameters, libpq `password=` entries (user, host, port and database stay readable)."""
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY.sub(lambda m: m["lead"] + MASK, text)
    return _KEYWORD.sub(lambda m: m["lead"] + MASK, text)


@dataclass
class ServiceCheck:
    """One row of `atelier doctor`: a service, whether it answered, and what it reported."""

    service: str
    url: str
    ok: bool
    required: bool
    version: str = ""
    details: list[str] = field(default_factory=list)
    hint: str = ""

    def __post_init__(self) -> None:
        """Mask secrets in everything the check will show."""
        self.url = mask_secrets(self.url)
        self.hint = mask_secrets(self.hint)
        self.details = [mask_secrets(line) for line in self.details]

    @property
    def status(self) -> str:
        """'ok', 'DOWN' (required and failing) or 'down' (optional and failing)."""
        if self.ok:
            return "ok"
        return "DOWN" if self.required else "down"


def _gb(value: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{value / 2**30:.1f} GiB"


async def check_comfyui(url: str, *, timeout: float = 5.0,
                        templates: Sequence[WorkflowTemplate] = ()) -> ServiceCheck:
    """Ask one ComfyUI for its version, devices' VRAM, installed checkpoints and which workflows it can run now."""
    rest = ComfyREST(url, timeout=timeout)
    try:
        status = await probe_stats(rest, url)
        if status.stats is None:
            return ServiceCheck("ComfyUI", url, False, True, hint=str(status.error))
        details = [f"{d.name}: {_gb(d.vram_free)} free of {_gb(d.vram_total)}" for d in status.stats.devices]
        checkpoints = await rest.models("checkpoints")
        details.append(f"{len(checkpoints)} checkpoint(s)" + (f": {', '.join(checkpoints[:4])}" if checkpoints else ""))
        if templates:
            details.extend(readiness_lines(await check_server(url, templates, timeout=timeout)))
        return ServiceCheck("ComfyUI", url, True, True, status.stats.comfyui_version, details)
    except AtelierError as exc:
        return ServiceCheck("ComfyUI", url, False, True, hint=str(exc))
    finally:
        await rest.aclose()


def readiness_lines(server: ServerReadiness) -> list[str]:
    """Which workflows the server can run now, and for each other one the files it lacks and where to get them."""
    if server.error:
        return [f"could not list its models: {server.error}"]
    lines = [f"ready to run: {', '.join(server.ready) or 'none of the workflows'}"]
    for workflow in server.not_ready:
        lines.append(f"{workflow.workflow} needs " + "; ".join(m.describe() for m in workflow.missing))
    return lines


async def check_ollama(url: str, *, required: bool, timeout: float = 5.0) -> ServiceCheck:
    """Ask Ollama for its version and pulled models."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            version = (await http.get("/api/version")).json().get("version", "?")
            models = [m.get("model") or m.get("name") for m in (await http.get("/api/tags")).json().get("models", [])]
        details = [f"{len(models)} model(s)" + (f": {', '.join(map(str, models[:5]))}" if models else "")]
        return ServiceCheck("Ollama", url, True, required, str(version), details)
    except (httpx.HTTPError, ValueError) as exc:
        hint = f"unreachable ({type(exc).__name__}); {OLLAMA_START}"
        return ServiceCheck("Ollama", url, False, required, hint=hint)


async def check_vision(settings: Settings, *, timeout: float = 5.0) -> ServiceCheck:
    """The vision model that captions images (ATELIER_VISION_MODEL): unset (optional, fine), or pulled on Ollama and
    able to see images (required once set: a person asked for captions)."""
    status = await vision_status(settings, timeout=timeout)
    if not status.configured:
        return ServiceCheck("Vision model", "ATELIER_VISION_MODEL", True, False, "unset", status.details)
    return ServiceCheck("Vision model", f"{status.model} on {settings.ollama_url}", status.ready, True,
                        "", status.details, hint=status.problem or "")


async def check_qdrant(url: str | None, api_key: str | None, data_dir: Path, *, timeout: float = 5.0) -> ServiceCheck:
    """Ask a Qdrant server for its version, or say that the memory lives in PostgreSQL (pgvector)."""
    if url is None:
        details = ["no QDRANT_URL: pgvector in Atelier's PostgreSQL (shared by every process; "
                   "`atelier memory migrate --to qdrant` moves it to a server)"]
        return ServiceCheck("Memory", "pgvector in the ledger's database", True, False, "pgvector", details)
    headers = {"api-key": api_key} if api_key else {}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers) as http:
            body = (await http.get("/")).json()
        return ServiceCheck("Qdrant", url, True, True, str(body.get("version", "?")))
    except (httpx.HTTPError, ValueError) as exc:
        return ServiceCheck("Qdrant", url, False, True, hint=f"unreachable ({type(exc).__name__}); check QDRANT_URL")


async def check_postgres(database_url: str | None, data_dir: Path) -> ServiceCheck:
    """Connect to DATABASE_URL and read the server version, or describe the embedded default."""
    if database_url is None:
        from atelier.tools.ledger.database import embedded_status
        from atelier.tools.settings import load_settings

        where = data_dir / "postgres"
        state = await asyncio.to_thread(embedded_status, load_settings(data_dir=data_dir))
        if state.running:
            details = [f"no DATABASE_URL: embedded server running (pid {state.server_pid}), "
                       f"{len(state.user_pids)} Atelier process(es) using it"]
        else:
            details = ["no DATABASE_URL: embedded server, started on first use"]
        return ServiceCheck("PostgreSQL", f"embedded: {where}", True, False, "embedded", details)
    shown = mask_secrets(database_url)
    try:
        conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(database_url), timeout=5.0)
        async with conn:
            cursor = await conn.execute("SHOW server_version")
            row = await cursor.fetchone()
        return ServiceCheck("PostgreSQL", shown, True, True, str(row[0]) if row else "?")
    except (OSError, TimeoutError) as exc:
        return ServiceCheck("PostgreSQL", shown, False, True, hint=f"{exc}".strip() or type(exc).__name__)
    except psycopg.Error as exc:
        return ServiceCheck("PostgreSQL", shown, False, True, hint=f"{type(exc).__name__}: {exc}".strip())


async def run_doctor(settings: Settings, *, comfy_urls: list[str] | None = None) -> list[ServiceCheck]:
    """Check every configured service concurrently; ComfyUI and explicitly configured services are required."""
    urls = comfy_urls or settings.comfyui_urls
    ollama_required = "ollama_url" in settings.model_fields_set
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    database = settings.database_url.get_secret_value() if settings.database_url else None
    config_problem: ServiceCheck | None = None
    try:
        templates = load_library(settings).templates
    except AtelierError as exc:  # a bad models_config.json: readiness on the workflows alone, and the file's fault
        templates = list_templates(settings.workflow_dirs).templates
        config_problem = ServiceCheck("Models config", str(settings.models_config_file), False, True, hint=str(exc))
    checks = await asyncio.gather(
        *(check_comfyui(url, templates=templates) for url in urls),
        check_ollama(settings.ollama_url, required=ollama_required),
        check_vision(settings),
        check_qdrant(settings.qdrant_url, key, settings.data_dir),
        check_postgres(database, settings.data_dir),
    )
    return [*checks, *([config_problem] if config_problem else [])]
