"""The Queue tab: the caller's jobs (an admin's: everyone's, with accounts), cancel and retry (/jobs, /cancel_job,
/retry_job)."""

from __future__ import annotations

import gradio as gr

from atelier.chat.runtime import ChatRuntime, Load
from atelier.tools.errors import AtelierError

__all__ = ["QUEUE_COLUMNS", "queue_tab"]

QUEUE_COLUMNS = ["job", "status", "workflow", "prompt", "created", "error"]


def queue_tab(runtime: ChatRuntime) -> list[Load]:
    """The Queue tab, laid out and wired; its table fills when the page loads."""

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

    with gr.Tab("Queue"):
        queue_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, wrap=True, label="Your jobs",
                                   column_widths=["24%", "9%", "10%", "31%", "14%", "12%"])
        with gr.Row():
            job_id = gr.Textbox(label="Job id (or its start)", scale=3)
            cancel = gr.Button("Cancel job")
            retry = gr.Button("Retry job")
            refresh = gr.Button("Refresh")
        queue_note = gr.Markdown()

    refresh.click(queue_rows, None, queue_table, api_name="jobs")
    cancel.click(cancel_job, [job_id], [queue_table, queue_note], api_name="cancel_job")
    retry.click(retry_job, [job_id], [queue_table, queue_note], api_name="retry_job")
    return [(queue_rows, queue_table)]
