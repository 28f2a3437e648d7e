"""The Services tab: each configured service's health as `atelier doctor` reports it (/services)."""

from __future__ import annotations

import gradio as gr

from atelier.chat.render import DOCTOR_COLUMNS, doctor_rows
from atelier.chat.runtime import ChatRuntime, Load
from atelier.tools.doctor import run_doctor

__all__ = ["services_tab"]


def services_tab(runtime: ChatRuntime) -> list[Load]:
    """The Services tab, laid out and wired; its table fills when the page loads."""

    async def doctor_table(request: gr.Request) -> list[list[str]]:
        await runtime.caller(request)
        return doctor_rows(await run_doctor(runtime.settings))

    with gr.Tab("Services"):
        table = gr.Dataframe(headers=DOCTOR_COLUMNS, label="atelier doctor", interactive=False, wrap=True)
        again = gr.Button("Check again")

    again.click(doctor_table, None, table, api_name="services")
    return [(doctor_table, table)]
