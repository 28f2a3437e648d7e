"""The Gallery tab: the caller's images in the memory (most recent or found by what they show, /search_images), and
their product showcases: make one from a brief and an optional product photo (approval, progress across the set),
and look at any of them (its images with captions and copy, its page and zip to download)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from atelier.chat.files import image_file
from atelier.chat.runtime import ChatRuntime, Load
from atelier.chat.showcase_view import approval_html, choice_label, downloads, header_html, pictures, progress_html
from atelier.graphs.showcase_run import ShowcaseApproval, ShowcaseEnded, ShowcaseProgressed, follow_showcase, new_thread
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore
from atelier.tools.showcase.store import ShowcaseStore

__all__ = ["gallery_tab"]

# What every showcase action updates: status, approval buttons, the run's thread, the list, header, images, files.
Updates = tuple[Any, Any, Any, Any, Any, Any, Any]


def gallery_tab(runtime: ChatRuntime) -> list[Load]:
    """The Gallery tab, laid out and wired; the list of showcases fills when the page loads."""
    running: set[str] = set()  # showcase threads a click of this page is running now (never run one twice)

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
            path = await image_file(runtime, job, record.output_index)
            if path is not None:
                marks = [f"★{record.rating}"] if record.rating else []
                marks += ["thumbs up"] if record.thumb == 1 else ["thumbs down"] if record.thumb == -1 else []
                items.append((str(path), " · ".join([*marks, record.prompt[:80]])))
        note = f"{len(items)} image(s)" + (f" for “{query}”" if query.strip() else " (most recent)")
        return items, note

    async def choices(owner: str, selected: str | None = None) -> Any:
        """The list of the owner's showcases, `selected` chosen."""
        services = await runtime.get()
        found = await ShowcaseStore.for_service(services.ledger).recent(owner, 50)
        return gr.Dropdown(choices=[(choice_label(s), str(s.id)) for s in found], value=selected)

    async def listed(request: gr.Request) -> Any:
        me = await runtime.caller(request)
        return await choices(me.user_id)

    async def shown(showcase_id: str | None, request: gr.Request) -> tuple[str, list[tuple[str, str]], list[str]]:
        """The selected showcase: header, images with their words, and its files."""
        if not showcase_id:
            return "", [], []
        services = await runtime.get()
        me = await runtime.caller(request)
        try:
            showcase = await ShowcaseStore.for_service(services.ledger).get(showcase_id, owner=me.user_id)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return header_html(showcase), await pictures(runtime, showcase), await downloads(runtime, showcase)

    async def follow(thread: str, request: gr.Request, **run: Any) -> AsyncIterator[Updates]:
        """Run (or answer, or continue) a showcase in `thread`, yielding the tab's updates as it goes."""
        services = await runtime.get()
        me = await runtime.caller(request)
        if thread in running:
            raise gr.Error("This showcase is already running; wait for it.")
        running.add(thread)
        keep = gr.skip()
        lines: list[str] = []
        try:
            async for event in follow_showcase(services.showcase, thread, me.user_id, **run):
                if isinstance(event, ShowcaseProgressed):
                    lines = [progress_html(event)]
                    yield "".join(lines), gr.Row(visible=False), thread, keep, keep, keep, keep
                elif isinstance(event, ShowcaseApproval):
                    yield approval_html(event), gr.Row(visible=True), thread, keep, keep, keep, keep
                    return
                elif isinstance(event, ShowcaseEnded):
                    if event.showcase_id is None:
                        yield "<p>Nothing was made.</p>", gr.Row(visible=False), "", keep, keep, keep, keep
                        return
                    header, images, files = await shown(event.showcase_id, request)
                    done = f"<p>The showcase is made ({event.status}).</p>"
                    yield (done, gr.Row(visible=False), "", await choices(me.user_id, event.showcase_id), header,
                           images, files)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            running.discard(thread)

    async def make(brief: str, photo: str | None, request: gr.Request) -> AsyncIterator[Updates]:
        if not brief.strip():
            raise gr.Error("Describe the product first: what it is and what the showcase is for.")
        services = await runtime.get()
        name = None
        if photo:
            try:
                name = (await asyncio.to_thread(InputStore(services.settings).put_file, Path(photo))).name
            except AtelierError as exc:
                raise gr.Error(str(exc)) from None
        async for update in follow(new_thread(), request, brief=brief, photo=name):
            yield update

    async def approve(thread: str, request: gr.Request) -> AsyncIterator[Updates]:
        async for update in follow(thread, request, decision="approve"):
            yield update

    async def reject(thread: str, request: gr.Request) -> AsyncIterator[Updates]:
        async for update in follow(thread, request, decision="reject"):
            yield update

    async def resume(showcase_id: str | None, request: gr.Request) -> AsyncIterator[Updates]:
        """Continue the selected showcase when it stopped midway (the server restarted while it waited)."""
        if not showcase_id:
            raise gr.Error("Choose a showcase first.")
        services = await runtime.get()
        me = await runtime.caller(request)
        try:
            showcase = await ShowcaseStore.for_service(services.ledger).get(showcase_id, owner=me.user_id)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        async for update in follow(showcase.thread, request):
            yield update

    with gr.Tab("Gallery"):
        with gr.Row():
            query = gr.Textbox(label="Search your images", placeholder="lighthouse at dusk", scale=5)
            search = gr.Button("Search", scale=1)
        found = gr.Markdown()
        images = gr.Gallery(label="Images", columns=4, height="auto", elem_id="gallery")

        gr.Markdown("## Product showcases\nA brief (and, if you like, a photo of the product) becomes a shot list, "
                    "the images, a caption and marketing copy for each, and a gallery page you can download.")
        with gr.Row():
            with gr.Column(scale=3):
                brief = gr.Textbox(label="Product brief", lines=3, elem_id="showcase-brief",
                                   placeholder="Our hand-hammered copper espresso cup, for the spring catalogue")
                make_button = gr.Button("Make a showcase", variant="primary", elem_id="showcase-make")
            photo = gr.Image(label="Product photo (optional)", type="filepath", sources=["upload"], height=180,
                             scale=2, elem_id="showcase-photo")
        status = gr.HTML(elem_id="showcase-status")
        with gr.Row(visible=False, elem_id="showcase-approval") as decide:
            approve_button = gr.Button("Approve", variant="primary")
            reject_button = gr.Button("Reject")
        thread = gr.State("")
        with gr.Row(equal_height=True):
            chosen = gr.Dropdown(label="Your showcases", choices=[], scale=5, elem_id="showcase-list")
            refresh = gr.Button("Refresh", scale=1)
            resume_button = gr.Button("Continue", scale=1, elem_id="showcase-continue")
        header = gr.HTML(elem_id="showcase-header")
        shots = gr.Gallery(label="Showcase images", columns=4, height="auto", elem_id="showcase-gallery")
        files = gr.File(label="Download the gallery (page and zip)", file_count="multiple", interactive=False,
                        elem_id="showcase-files")

    hidden: dict[str, Any] = {"api_visibility": "private"}
    search.click(gallery, [query], [images, found], api_name="search_images")
    query.submit(gallery, [query], [images, found], **hidden)
    outputs = [status, decide, thread, chosen, header, shots, files]
    make_button.click(make, [brief, photo], outputs, api_name="make_showcase")
    approve_button.click(approve, [thread], outputs, api_name="approve_showcase")
    reject_button.click(reject, [thread], outputs, api_name="reject_showcase")
    resume_button.click(resume, [chosen], outputs, api_name="continue_showcase")
    refresh.click(listed, None, chosen, api_name="showcases")
    chosen.input(shown, [chosen], [header, shots, files], api_name="show_showcase")
    return [(listed, chosen)]
