"""The Gallery tab: the caller's images in the memory, most recent or found by what they show (/search_images)."""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from atelier.chat.files import image_file
from atelier.chat.runtime import ChatRuntime, Load

__all__ = ["gallery_tab"]


def gallery_tab(runtime: ChatRuntime) -> list[Load]:
    """The Gallery tab, laid out and wired (nothing to fill at load: it searches when asked)."""

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

    with gr.Tab("Gallery"):
        with gr.Row():
            query = gr.Textbox(label="Search your images", placeholder="lighthouse at dusk", scale=5)
            search = gr.Button("Search", scale=1)
        found = gr.Markdown()
        pictures = gr.Gallery(label="Images", columns=4, height="auto", elem_id="gallery")

    hidden: dict[str, Any] = {"api_visibility": "private"}
    search.click(gallery, [query], [pictures, found], api_name="search_images")
    query.submit(gallery, [query], [pictures, found], **hidden)
    return []
