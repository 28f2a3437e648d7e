"""The job API's live side: `WS /jobs/{id}/events` (replay after a cursor, then follow) and preview frames.

A client sends nothing; it receives JSON events — `status` (a snapshot on connect), `submitted`, `started`,
`progress` (step/max), `preview` (base64 data URL, a link, or nothing: `?previews=`), `retrying`, and one
final `done` (with image links), `failed` or `cancelled`, after which the server closes the socket. Every
stored event carries its `seq`: reconnecting with `?after=<last seq>` yields exactly the events missed.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
import base64
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from tools.errors import AtelierError
from tools.ledger.events import JobEvent
from tools.ledger.service import LedgerService

__all__ = ["NOT_FOUND_CLOSE", "add_event_routes"]

NOT_FOUND_CLOSE = 4404
PreviewMode = Literal["base64", "link", "none"]


def _image_links(base: str, event: JobEvent) -> list[str]:
    """Atelier-served links to a finished job's images."""
    return [f"{base}/jobs/{event.job_id}/images/{n}" for n in range(int(event.data.get("images", 0)))]


def _message(event: JobEvent, base: str, previews: PreviewMode) -> dict[str, Any] | None:
    """One event as the JSON the socket sends (None: a preview the client asked not to get)."""
    body = event.as_json()
    if event.kind == "preview":
        if previews == "none" or event.preview is None:
            return None
        if previews == "base64":
            body["image"] = f"data:{event.preview_type};base64,{base64.b64encode(event.preview).decode()}"
        else:
            body["url"] = f"{base}/jobs/{event.job_id}/previews/{event.seq}"
    if event.kind == "done":
        body["images"] = _image_links(base, event)
    return body


def add_event_routes(api: FastAPI, ledger: Callable[[Any], LedgerService]) -> None:
    """Add the events socket and the preview route to the job API (`ledger(request_or_socket)` finds the ledger)."""

    @api.websocket("/jobs/{job_id}/events")
    async def events(
        socket: WebSocket, job_id: str,
        after: Annotated[int, Query(ge=0, description="Last seq already seen (reconnect).")] = 0,
        previews: Annotated[PreviewMode, Query()] = "base64",
    ) -> None:
        """Replay the job's events after `after`, follow it live, send the final event and close."""
        svc = ledger(socket)
        await socket.accept()
        try:
            job = await svc.get(job_id)
        except AtelierError as exc:
            await socket.close(code=NOT_FOUND_CLOSE, reason=str(exc)[:120])
            return
        base = str(socket.base_url).rstrip("/").replace("ws://", "http://").replace("wss://", "https://")
        await socket.send_json({"type": "status", "job": str(job.id), "seq": None, "status": job.status,
                                "workflow": job.workflow.rsplit("/", 1)[-1]})
        try:
            async for event in svc.events.follow([job.id], after):
                message = _message(event, base, previews)
                if message is not None:
                    await socket.send_json(message)
        except WebSocketDisconnect:
            return
        await socket.close()

    @api.get("/jobs/{job_id}/previews/{seq}", summary="A live preview frame of a running job",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "Replaced or job ended"}})
    async def preview(job_id: str, seq: int, request: Request) -> Response:
        """The preview bytes (only the newest frame of a running job is kept)."""
        svc = ledger(request)
        job = await svc.get(job_id)
        event = await svc.events.preview(job.id, seq)
        if event is None or event.preview is None:
            raise HTTPException(404, f"preview {seq} of job {job.id} is gone (a newer frame replaced it, or the job "
                                     "ended); follow WS /jobs/{id}/events for the current one")
        return Response(event.preview, media_type=event.preview_type or "image/jpeg")
