"""The chat page: a header (who is signed in, which services are down) over one tab per concern.

`build_page(runtime)` composes the Blocks from the tab functions (chat_tab.py, gallery_tab.py, queue_tab.py,
prompts_tab.py, services_tab.py); each action asks the runtime (runtime.py) who is calling and which services to
act through.
"""

from __future__ import annotations

import gradio as gr

from atelier.chat.chat_tab import chat_tab
from atelier.chat.gallery_tab import gallery_tab
from atelier.chat.prompts_tab import prompts_tab
from atelier.chat.queue_tab import queue_tab
from atelier.chat.render import service_banner
from atelier.chat.runtime import ChatRuntime
from atelier.chat.services_tab import services_tab
from atelier.tools.doctor import mask_secrets, run_doctor

__all__ = ["build_page"]


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

    async def whoami(request: gr.Request) -> str:
        """With accounts, who is signed in and a way out; nothing in local mode."""
        if not runtime.accounts:
            return ""
        me = await runtime.caller(request)
        role = " (admin)" if me.is_admin else ""
        return f"Signed in as **{me.user_id}**{role}"

    with gr.Blocks(title="Atelier") as page:
        gr.Markdown("# Atelier\nAsk, plan, and make images on your own ComfyUI and Ollama.")
        with gr.Row(visible=runtime.accounts, equal_height=True):
            signed_in = gr.Markdown(elem_id="signed-in")
            gr.Button("Log out", link="logout", size="sm", scale=0, min_width=100, elem_id="log-out")
        notice = gr.Markdown(elem_id="service-banner")
        loads = [*chat_tab(runtime), *gallery_tab(runtime), *queue_tab(runtime), *prompts_tab(runtime),
                 *services_tab(runtime)]
        page.load(banner, None, notice, api_name="service_banner")
        page.load(whoami, None, signed_in, api_visibility="private")
        for fill, component in loads:
            page.load(fill, None, component, api_visibility="private")
    result: gr.Blocks = page
    return result
