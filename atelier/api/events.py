"""The job API's live side: `WS /jobs/{id}/events` (replay after a cursor, then follow) and preview frames.

A client sends nothing; it receives JSON events — `status` (a snapshot on connect), `submitted`, `started`,
`progress` (step/max), `preview` (base64 data URL, a link, or nothing: `?previews=`), `retrying`, and one
final `done` (with image links), `failed` or `cancelled`, after which the server closes the socket. Every
stored event carries its `seq`: reconnecting with `?after=<last seq>` yields exactly the events missed.

Sockets cost no database connection of their own (they sleep on the ledger's one LISTEN connection), but each
user may hold only ATELIER_MAX_EVENT_SOCKETS_PER_USER of them open on one server process: the next one is closed
with code 4429 and the reason. A socket's place is freed as soon as it closes, from either side. While the
database is away a socket is closed with 1013 (try again later): reconnect with `?after=` to miss nothing.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
import base64
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from atelier.api.outage import AWAY_CLOSE, AWAY_CLOSE_REASON, database_away
from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.service import LedgerService

__all__ = ["INT64_MAX", "JOB_ID_PATTERN", "NOT_FOUND_CLOSE", "TOO_MANY_SOCKETS_CLOSE", "SocketPlaces",
           "add_event_routes"]

log = logging.getLogger("atelier.api")

NOT_FOUND_CLOSE = 4404
# Like HTTP 429: the user already holds as many event sockets as this server allows.
TOO_MANY_SOCKETS_CLOSE = 4429
# A job id as the API takes it: the full UUID, or (as `atelier jobs` shows them) a unique prefix of 4+ hex digits.
JOB_ID_PATTERN = r"^[0-9a-fA-F][0-9a-fA-F-]{3,35}$"
# Event sequence numbers are PostgreSQL `bigint`s.
INT64_MAX = 2**63 - 1
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


class SocketPlaces:
    """How many event sockets each user holds open on this server process, against a per-user cap."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.held: Counter[str] = Counter()

    @contextlib.contextmanager
    def place(self, user: str) -> Iterator[bool]:
        """Hold one of `user`'s places for the block (True), or none when all are taken (False)."""
        if self.held[user] >= self.per_user:
            yield False
            return
        self.held[user] += 1
        try:
            yield True
        finally:
            self.held[user] -= 1
            if not self.held[user]:
                del self.held[user]

    def refusal(self, user: str) -> str:
        """The close reason for a socket over the cap (a WebSocket close reason holds at most 123 bytes)."""
        return (f"{user[:24]} already has {self.per_user} open event sockets here (the limit, "
                "ATELIER_MAX_EVENT_SOCKETS_PER_USER); close one first")


async def _until_disconnect(socket: WebSocket) -> None:
    """Return when the client goes away (clients send nothing; anything they send is ignored)."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _send_all(socket: WebSocket, events: AsyncIterator[JobEvent], base: str, previews: PreviewMode) -> None:
    """Send each event as it comes (until the final one)."""
    async for event in events:
        message = _message(event, base, previews)
        if message is not None:
            await socket.send_json(message)


def add_event_routes(
    api: FastAPI, ledger: Callable[[Any], LedgerService], errors: Callable[..., dict[int | str, dict[str, Any]]],
    caller: Callable[..., Any], socket_caller: Callable[[WebSocket], Awaitable[Principal]],
    *, max_sockets_per_user: int = 32,
) -> None:
    """Add the events socket and the preview route; `ledger(request)` finds the ledger, `errors(*codes)` documents.

    `caller` is the HTTP dependency giving the request's Principal, `socket_caller(socket)` the same for the
    socket; a job its caller may not see is answered as unknown. Each user may hold `max_sockets_per_user` event
    sockets open at once (per app, so per server process).
    """
    places = SocketPlaces(max_sockets_per_user)
    api.state.event_socket_places = places

    @api.websocket("/jobs/{job_id}/events")
    async def events(
        socket: WebSocket, job_id: str,
        after: Annotated[int, Query(ge=0, le=INT64_MAX, description="Last seq already seen (reconnect).")] = 0,
        previews: Annotated[PreviewMode, Query()] = "base64",
    ) -> None:
        """Replay the job's events after `after`, follow it live, send the final event and close."""
        svc = ledger(socket)
        await socket.accept()
        try:
            await _admit(socket, svc, job_id, after, previews)
        except Exception as exc:
            if not database_away(exc):
                raise
            log.warning("event socket closed: the database is away (%s)", type(exc).__name__)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may be gone already
                await socket.close(code=AWAY_CLOSE, reason=AWAY_CLOSE_REASON)

    async def _admit(socket: WebSocket, svc: LedgerService, job_id: str, after: int, previews: PreviewMode) -> None:
        """Authenticate the socket, hold one of its user's places, and serve it."""
        try:
            principal = await socket_caller(socket)
        except AuthError as exc:
            await socket.close(code=4000 + exc.status, reason=str(exc)[:120])
            return
        with places.place(principal.user_id) as admitted:
            if not admitted:
                await socket.close(code=TOO_MANY_SOCKETS_CLOSE, reason=places.refusal(principal.user_id))
                return
            await _serve(socket, svc, job_id, principal, after, previews)

    async def _serve(socket: WebSocket, svc: LedgerService, job_id: str, principal: Principal, after: int,
                     previews: PreviewMode) -> None:
        """The socket of an admitted caller: snapshot, replay, follow; ends when the job or the client does."""
        try:
            job = await svc.get(job_id, owner=principal.sees_only)
        except AtelierError as exc:
            if database_away(exc):
                raise
            await socket.close(code=NOT_FOUND_CLOSE, reason=str(exc)[:120])
            return
        base = str(socket.base_url).rstrip("/").replace("ws://", "http://").replace("wss://", "https://")
        try:
            await socket.send_json({"type": "status", "job": str(job.id), "seq": None, "status": job.status,
                                    "workflow": job.workflow.rsplit("/", 1)[-1]})
        except WebSocketDisconnect:
            return
        # Follow until the job ends, but stop at once when the client leaves (its place is freed then, not at the
        # job's next event). One anyio task group: whichever side finishes first cancels the other, and a
        # cancellation from outside (the server closing the socket) unwinds both cleanly.
        ended = {"job": False, "client": False}

        async def follow_job() -> None:
            try:
                await _send_all(socket, svc.events.follow([job.id], after), base, previews)
                ended["job"] = True
            except WebSocketDisconnect:
                ended["client"] = True
            group.cancel_scope.cancel()

        async def watch_client() -> None:
            await _until_disconnect(socket)
            ended["client"] = True
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(follow_job)
            group.start_soon(watch_client)
        if ended["job"] and not ended["client"]:
            await socket.close()

    @api.get("/jobs/{job_id}/previews/{seq}", summary="A live preview frame of a running job", response_class=Response,
             responses={200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The frame (JPEG unless ComfyUI sent another format)"},
                        **errors(401, 403, 404, 422)})
    async def preview(
        job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The job's UUID or a unique prefix of it.")],
        seq: Annotated[int, Path(ge=0, le=INT64_MAX, description="The `seq` of a `preview` event.")],
        request: Request, principal: Annotated[Principal, Depends(caller)],
    ) -> Response:
        """The preview bytes (only the newest frame of a running job is kept)."""
        svc = ledger(request)
        job = await svc.get(job_id, owner=principal.sees_only)
        event = await svc.events.preview(job.id, seq)
        if event is None or event.preview is None:
            raise HTTPException(404, f"preview {seq} of job {job.id} is gone (a newer frame replaced it, or the job "
                                     "ended); follow WS /jobs/{id}/events for the current one")
        return Response(event.preview, media_type=event.preview_type or "image/jpeg")
