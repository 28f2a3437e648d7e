"""Atelier's Gradio page: generate images on ComfyUI with live progress, and see every service's health.

The full chat (answers that illustrate themselves) arrives with the supervisor graph; until then
this page is the working front end over the same tool layer the CLI uses.
"""

from __future__ import annotations

import os

for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_name, _value)

from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from tools.catalog import list_templates  # noqa: E402
from tools.comfyui.events import ComfyEvent, NodeExecuting, StepProgress  # noqa: E402
from tools.doctor import ServiceCheck, run_doctor  # noqa: E402
from tools.errors import AtelierError  # noqa: E402
from tools.generate import generate_image  # noqa: E402
from tools.schemas import GenerationParams, parse_size  # noqa: E402
from tools.settings import Settings, load_settings  # noqa: E402

__all__ = ["build_app", "doctor_rows", "main"]

DOCTOR_COLUMNS = ["service", "status", "url", "version", "details"]


def doctor_rows(checks: list[ServiceCheck]) -> list[list[str]]:
    """The doctor's findings as table rows (same columns as `atelier doctor`)."""
    return [
        [c.service, c.status, c.url, c.version, "; ".join(c.details) if c.ok else c.hint] for c in checks
    ]


def _workflow_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, name) pairs for the workflow dropdown, from the catalog."""
    listing = list_templates([settings.workflows_dir] if settings.workflows_dir else [])
    choices = []
    for template in listing.templates:
        entry = template.catalog
        label = f"{template.name} — {entry.purpose}" if entry else template.name
        choices.append((label, template.name))
    return choices


def build_app(settings: Settings) -> gr.Blocks:
    """Build the page for these settings (no connection is opened until a button asks for one)."""

    async def refresh_doctor() -> list[list[str]]:
        return doctor_rows(await run_doctor(settings))

    async def generate(
        prompt: str, workflow: str, seed: float | None, size: str, progress: gr.Progress = gr.Progress()
    ) -> tuple[list[str], str]:
        try:
            width, height = parse_size(size) if size.strip() else (None, None)
            params = GenerationParams(
                prompt=prompt, seed=int(seed) if seed is not None else None, width=width, height=height
            )
        except ValueError as exc:
            raise gr.Error(str(exc).splitlines()[-1]) from None

        def on_event(event: ComfyEvent) -> None:
            if isinstance(event, StepProgress) and event.max:
                progress((event.value, event.max), desc=f"step {event.value}/{event.max}")
            elif isinstance(event, NodeExecuting):
                progress(None, desc=f"running node {event.node}")

        try:
            result = await generate_image(params, settings=settings, workflow=workflow, on_event=on_event)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        caption = f"{result.workflow} · seed {result.seed} · {result.seconds:.1f} s · prompt {result.prompt_id}"
        return [str(image.path) for image in result.images], caption

    choices = _workflow_choices(settings)
    with gr.Blocks(title="Atelier") as page:
        gr.Markdown("# Atelier\nImages from your own ComfyUI, and the health of every service behind them.")
        with gr.Tab("Generate"):
            with gr.Row():
                prompt = gr.Textbox(label="Prompt", placeholder="a red fox in snow, watercolor", scale=4)
                button = gr.Button("Generate", variant="primary", scale=1)
            with gr.Row():
                workflow = gr.Dropdown(choices=choices, value=settings.default_workflow, label="Workflow")
                seed = gr.Number(label="Seed (empty = random)", precision=0, value=None)
                size = gr.Textbox(label="Size (WxH, empty = workflow default)", value="")
            gallery = gr.Gallery(label="Images", columns=2, height="auto")
            caption = gr.Markdown()
            button.click(generate, inputs=[prompt, workflow, seed, size], outputs=[gallery, caption])
            prompt.submit(generate, inputs=[prompt, workflow, seed, size], outputs=[gallery, caption])
        with gr.Tab("Services"):
            table = gr.Dataframe(
                headers=DOCTOR_COLUMNS, label="atelier doctor", interactive=False, wrap=True,
                column_widths=["10%", "7%", "28%", "10%", "45%"],
            )
            again = gr.Button("Check again")
            again.click(refresh_doctor, outputs=table)
        page.load(refresh_doctor, outputs=table)
    result: gr.Blocks = page
    return result


def main(**launch: Any) -> None:
    """Start the page on ATELIER_CHAT_HOST:ATELIER_CHAT_PORT with the embedded defaults."""
    settings = load_settings()
    settings.outputs.mkdir(parents=True, exist_ok=True)
    page = build_app(settings)
    page.queue().launch(
        server_name=settings.chat_host,
        server_port=settings.chat_port,
        allowed_paths=[str(settings.outputs)],
        footer_links=["gradio"],
        **launch,
    )


if __name__ == "__main__":
    main()
