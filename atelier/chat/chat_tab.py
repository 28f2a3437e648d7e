"""The Chat tab: a conversation with the supervisor, its images drawn as they render, approvals, ratings.

`chat_tab(runtime)` lays the tab out and wires it; `ChatActions` is what its controls do (named Gradio API
endpoints /chat, /approve, /reject, /open_conversation, /new_conversation and /rate).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from atelier.agents.cost_router import QUALITIES
from atelier.api.outage import AWAY_MESSAGE, database_away
from atelier.chat.files import drop_previews, image_file, options_grid, preview_file
from atelier.chat.render import approval_text, image_message, status_line
from atelier.chat.runtime import ChatRuntime, Load
from atelier.studio import Approval, ChatOptions, EarlierImages, ImagesQueued, Reply, Token, run_turn, thread_history
from atelier.tools.catalog import list_templates, task_of
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job
from atelier.tools.memory.tools import MemoryContext, RateImageArgs, rate_image
from atelier.tools.settings import Settings
from atelier.tools.workflow_library import build_library, load_library

__all__ = ["FEEDBACK", "STARS", "ChatActions", "chat_tab", "workflow_choices"]

log = logging.getLogger(__name__)
STARS = ("★1", "★2", "★3", "★4", "★5")
FEEDBACK = ("Like", "Dislike", *STARS)


def workflow_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, name) pairs for the workflow option ("" is automatic): every text-to-image workflow, shipped or in
    the user's folders, with a catalog entry or not (then its task is read off its graph)."""
    choices = [("automatic (by purpose, VRAM and cost)", "")]
    try:
        library = load_library(settings)
    except AtelierError as exc:  # a bad models config: list the workflows as they are, say why in the log
        log.warning("the workflow list ignores the models config: %s", exc)
        library = build_library(list_templates(settings.workflow_dirs))
    for template in library.templates:
        if task_of(template) != "txt2img":
            continue
        entry = template.catalog
        tier = entry.quality if entry is not None else "yours, no catalog entry"
        choices.append((f"{template.name} — {tier}", template.name))
    return choices


async def _refusals_shown(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass a turn's events on; an AtelierError (another user's conversation, a quota) becomes a message box, and so
    does the database being away (a sentence saying to retry, never a stack trace)."""
    try:
        async for event in events:
            yield event
    except Exception as exc:
        if database_away(exc):
            log.warning("chat turn stopped: the database is away (%s)", type(exc).__name__)
            raise gr.Error(AWAY_MESSAGE) from None
        if isinstance(exc, AtelierError):
            raise gr.Error(str(exc)) from None
        raise


def options_of(workflow: str, quality: str, illustrate: str, target: float | None = None) -> ChatOptions:
    """The run's options from the page's controls ("" and "auto" mean: let Atelier choose)."""
    return ChatOptions(workflow=workflow or None, quality=None if quality == "auto" else quality,
                       illustrate=illustrate,  # type: ignore[arg-type]
                       target_seconds=target if target and target > 0 else None)


class ChatActions:
    """What the Chat tab's controls do, on one runtime (each action first asks who is calling)."""

    def __init__(self, runtime: ChatRuntime) -> None:
        self.runtime = runtime

    async def thread_choices(self, request: gr.Request) -> Any:
        """The caller's recent conversations, for the list."""
        services = await self.runtime.get()
        me = await self.runtime.caller(request)
        threads = await services.threads.recent(me.user_id)
        return gr.update(choices=[(t.title, t.id) for t in threads])

    async def follow(self, history: list[dict[str, Any]], jobs_map: dict[str, str], jobs: list[Job],
                     events: AsyncIterator[JobEvent]) -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, str]]]:
        """Draw each job's progress into its message until every job ends."""
        runtime = self.runtime
        slots: dict[str, int] = {}
        by_id = {str(job.id): job for job in jobs}
        for job in jobs:
            history.append(image_message(status_line(job), None))
            slots[str(job.id)] = len(history) - 1
            jobs_map[str(len(history) - 1)] = str(job.id)
        yield history, jobs_map
        async for event in events:
            if event.job_id not in by_id:
                continue
            job, index = by_id[event.job_id], slots[event.job_id]
            if event.kind == "preview":
                preview = await asyncio.to_thread(preview_file, runtime, event)
                text = history[index]["content"][0]
                history[index] = image_message(text, preview)
            elif event.final and event.job is not None:
                by_id[event.job_id] = event.job
                await asyncio.to_thread(drop_previews, runtime, event.job_id)
                image = await image_file(runtime, event.job)
                history[index] = image_message(status_line(event.job, event), image)
            else:
                current = history[index]["content"]
                keep = Path(current[1]["path"]) if len(current) > 1 else None
                history[index] = image_message(status_line(job, event), keep)
            yield history, jobs_map

    async def turn(self, history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str, options: ChatOptions,
                   owner: str, *, message: str | None = None,
                   resume: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Stream one turn into the chat: (history, jobs map, approval box, approval text)."""
        services = await self.runtime.get()
        hidden = gr.update(visible=False)
        streaming: dict[str, int] = {}
        queued: list[Job] = []
        found: tuple[EarlierImages, int] | None = None  # a request for options: its grid and where it is shown
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
            elif isinstance(event, EarlierImages):
                grid = await options_grid(self.runtime, event.earlier, [], pending=event.variations)
                history.append(image_message(_grid_caption(event), grid))
                found = (event, len(history) - 1)
            elif isinstance(event, ImagesQueued):
                queued = event.jobs
                continue
            yield history, jobs_map, hidden, ""
        if queued:
            async for drawn, mapped in self.follow(history, jobs_map, queued,
                                                   services.ledger.events.follow([j.id for j in queued])):
                yield drawn, mapped, hidden, ""
            if found is not None:  # the grid again, with the variations as they ended
                event, index = found
                now = [await services.ledger.get(job.id) for job in queued]
                grid = await options_grid(self.runtime, event.earlier, now)
                history[index] = image_message(_grid_caption(event), grid)
                yield history, jobs_map, hidden, ""
        else:
            yield history, jobs_map, hidden, ""

    async def send(self, text: str, history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str,
                   workflow: str, quality: str, illustrate: str, target: float | None = None,
                   request: gr.Request | None = None) -> AsyncIterator[Any]:
        """/chat: a new message, answered (and illustrated) as it streams."""
        if not text.strip():
            raise gr.Error("Type a message first.")
        me = await self.runtime.caller(request)
        history = [*history, {"role": "user", "content": text}]
        yield "", history, jobs_map, gr.update(visible=False), ""
        async for drawn, mapped, box, question in _refusals_shown(self.turn(
                history, jobs_map, thread, options_of(workflow, quality, illustrate, target), me.user_id,
                message=text)):
            yield "", drawn, mapped, box, question

    def decide(self, action: str) -> Any:
        """/approve or /reject: answer the pending approval and stream the rest of the turn."""
        async def resume(history: list[dict[str, Any]], jobs_map: dict[str, str], thread: str, workflow: str,
                         quality: str, illustrate: str, target: float | None = None,
                         request: gr.Request | None = None) -> AsyncIterator[Any]:
            me = await self.runtime.caller(request)
            history = [*history, {"role": "user", "content": "Approved." if action == "approve" else "Rejected."}]
            yield history, jobs_map, gr.update(visible=False), ""
            async for update in _refusals_shown(self.turn(history, jobs_map, thread,
                                                          options_of(workflow, quality, illustrate, target),
                                                          me.user_id, resume={"action": action})):
                yield update
        return resume

    async def open_thread(self, thread: str, request: gr.Request) -> AsyncIterator[Any]:
        """/open_conversation: redraw a saved conversation; keep its unfinished images moving."""
        runtime = self.runtime
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
            history.append(image_message(status_line(item.job), await image_file(runtime, item.job)))
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
            async for drawn, mapped in self.follow(history, jobs_map, running,
                                                   services.ledger.events.follow([j.id for j in running])):
                yield thread, drawn, mapped, box, text

    async def new_thread(self, request: gr.Request) -> tuple[str, list[Any], dict[str, str], Any, str, Any]:
        """/new_conversation: an empty chat on a fresh thread id."""
        await self.runtime.caller(request)
        return str(uuid.uuid4()), [], {}, gr.update(visible=False), "", gr.update(value=None)

    async def feedback(self, jobs_map: dict[str, str], data: gr.LikeData, request: gr.Request) -> str:
        """/rate: thumbs or ★ under an image rate its job (and its image in the memory)."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        job_id = jobs_map.get(str(index))
        if job_id is None:
            gr.Info("Ratings are for images: use the thumbs or ★ under a picture.")
            return ""
        services = await self.runtime.get()
        me = await self.runtime.caller(request)
        liked = data.liked
        stars = int(liked[-1]) if isinstance(liked, str) and liked in STARS else None
        thumb = None if stars is not None else ("up" if liked is True else "down")
        args = RateImageArgs(job_id=job_id, owner=me.user_id, stars=stars, thumb=thumb)
        try:
            if services.memory is not None:
                result = await rate_image(MemoryContext(services.memory, self.runtime.settings, services.ledger), args)
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


def _grid_caption(found: EarlierImages) -> str:
    """The line above the options grid."""
    return (f"{len(found.earlier)} earlier image(s) like “{found.query}” (grey) beside {found.variations} new "
            "variation(s) (green)")


def chat_tab(runtime: ChatRuntime) -> list[Load]:
    """The Chat tab, laid out and wired; its conversation list fills when the page loads."""
    act = ChatActions(runtime)
    thread = gr.State(lambda: str(uuid.uuid4()))
    jobs_map = gr.State(dict)
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
            workflow = gr.Dropdown(label="Workflow", choices=workflow_choices(runtime.settings), value="")
            quality = gr.Radio(["auto", *QUALITIES], value="auto", label="Quality")
            illustrate = gr.Radio(["auto", "always", "never"], value="auto", label="Illustrate answers")
            target = gr.Number(label="Target seconds per image (empty or 0: none)", value=None,
                               info="Steps quality down until the measured time fits.")

    options = [workflow, quality, illustrate, target]
    chat_out = [message, chat, jobs_map, approval_box, approval]
    hidden: dict[str, Any] = {"api_visibility": "private"}
    message.submit(act.send, [message, chat, jobs_map, thread, *options], chat_out, concurrency_limit=None,
                   api_name="chat").then(act.thread_choices, None, threads, **hidden)
    send_button.click(act.send, [message, chat, jobs_map, thread, *options], chat_out, concurrency_limit=None,
                      **hidden).then(act.thread_choices, None, threads, **hidden)
    for button, action in ((approve, "approve"), (reject, "reject")):
        button.click(act.decide(action), [chat, jobs_map, thread, *options], [chat, jobs_map, approval_box, approval],
                     concurrency_limit=None, api_name=action)
    threads.input(act.open_thread, [threads], [thread, chat, jobs_map, approval_box, approval],
                  concurrency_limit=None, api_name="open_conversation")
    new.click(act.new_thread, None, [thread, chat, jobs_map, approval_box, approval, threads],
              api_name="new_conversation")
    chat.like(act.feedback, [jobs_map], [rated], api_name="rate")
    return [(act.thread_choices, threads)]
