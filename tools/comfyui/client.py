"""Async ComfyUI client: idempotent submit, prompt-filtered WebSocket progress, reconnect and resync.

One client owns one WebSocket (`/ws?clientId=…`) that it opens before the first POST and keeps
open. Each submitted prompt gets its own event queue, registered *before* the POST under the
prompt id we chose, so no early message is missed. When the socket drops, or stays silent while
a prompt should be running, every waiting prompt re-reads `/queue` and `/history/{id}`: a prompt
found in history finishes from there, one still queued keeps waiting (no overall timeout), and one
in neither is reported lost (ComfyUI restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from atelier.tools.comfyui.events import (
    TERMINAL,
    ComfyEvent,
    Failed,
    Interrupted,
    NodeOutput,
    Queued,
    Reconnected,
    Succeeded,
    events_from_history,
    parse_binary,
    parse_message,
)
from atelier.tools.comfyui.models import QueueState, SystemStats, UploadedImage
from atelier.tools.comfyui.rest import ComfyREST
from atelier.tools.errors import (
    ComfyExecutionError,
    ComfyInterruptedError,
    ComfyLostError,
    ComfyNoOutputsError,
    ComfyUIError,
    ComfyUnreachableError,
)
from atelier.tools.schemas import ImageRef

__all__ = ["ComfyClient", "EventCallback", "RunOutcome"]

EventCallback = Callable[[ComfyEvent], Awaitable[None] | None]


class _Resync:
    """Marker put on a prompt's queue: the socket was re-established or went silent; re-read state."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class _Watch:
    """Per-prompt mailbox the socket reader fills."""

    queue: asyncio.Queue[ComfyEvent | _Resync | ComfyUIError] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class RunOutcome:
    """A finished prompt: its id and the images each output node wrote."""

    prompt_id: str
    outputs: dict[str, tuple[ImageRef, ...]]
    seconds: float

    @property
    def images(self) -> list[tuple[str, ImageRef]]:
        """Every (node id, image) pair in node order."""
        return [(node, ref) for node, refs in self.outputs.items() for ref in refs]


class ComfyClient:
    """Client of one ComfyUI server; use as `async with ComfyClient(url) as comfy: await comfy.run(graph)`."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        timeout: float = 30.0,
        silence_seconds: float = 30.0,
        down_seconds: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.rest = ComfyREST(self.base_url, timeout=timeout, transport=transport)
        self.silence_seconds = silence_seconds
        self.down_seconds = down_seconds
        self._watches: dict[str, _Watch] = {}
        self._reader: asyncio.Task[None] | None = None
        self._first_connect: asyncio.Future[None] | None = None
        self._current_prompt: str | None = None
        self.reconnects = 0

    @property
    def ws_url(self) -> str:
        """The WebSocket URL this client listens on."""
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        return f"{scheme}://{self.base_url.split('://', 1)[1]}/ws?clientId={self.client_id}"

    async def __aenter__(self) -> Self:
        """Enter: nothing is opened until needed."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Exit: close the socket and the HTTP pool."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the socket reader and close HTTP connections."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        await self.rest.aclose()

    # --- the WebSocket -----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the WebSocket (once) and wait until it is up; raise ComfyUnreachableError if it can't be."""
        if self._reader is not None and not self._reader.done():
            if self._first_connect is not None:
                await asyncio.shield(self._first_connect)
            return
        self._first_connect = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_forever(), name=f"comfyui-ws-{self.base_url}")
        await asyncio.shield(self._first_connect)

    async def _read_forever(self) -> None:
        """Keep a socket open: read, dispatch, and on loss reconnect with backoff and ask for resync."""
        delay = 0.05
        down_since: float | None = None
        while True:
            try:
                async with connect(
                    self.ws_url, max_size=None, open_timeout=10, ping_interval=20, ping_timeout=20, close_timeout=1
                ) as ws:
                    if self._first_connect is not None and not self._first_connect.done():
                        self._first_connect.set_result(None)
                    else:
                        self._broadcast(_Resync("the WebSocket reconnected"))
                    down_since, delay = None, 0.05
                    await self._read(ws)
                reason = "the WebSocket closed"
            except (TimeoutError, OSError, WebSocketException) as exc:
                reason = f"the WebSocket failed: {type(exc).__name__}: {exc}"
                if self._first_connect is not None and not self._first_connect.done():
                    self._first_connect.set_exception(ComfyUnreachableError(self.base_url, str(exc) or reason))
                    self._reader = None
                    return
            self._current_prompt = None
            self.reconnects += 1
            now = time.monotonic()
            down_since = down_since or now
            if self._watches and now - down_since > self.down_seconds:
                error = ComfyUnreachableError(self.base_url, f"{reason}; still down after {self.down_seconds:.0f} s")
                self._broadcast(error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read(self, ws: ClientConnection) -> None:
        """Dispatch every message of one socket connection to the prompt it belongs to."""
        async for raw in ws:
            if isinstance(raw, bytes):
                preview = parse_binary(raw, self._current_prompt)
                if preview is not None:
                    self._deliver(preview.prompt_id, preview)
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            kind, data = message.get("type"), message.get("data") or {}
            if not isinstance(kind, str) or not isinstance(data, dict):
                continue
            self._track_current(kind, data)
            event = parse_message(kind, data)
            if event is not None:
                self._deliver(event.prompt_id, event)

    def _track_current(self, kind: str, data: dict[str, Any]) -> None:
        """Remember which prompt is executing, to attribute preview frames that carry no prompt id."""
        if kind in ("execution_start", "executing") and data.get("prompt_id"):
            self._current_prompt = None if kind == "executing" and data.get("node") is None else data["prompt_id"]
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self._current_prompt = None

    def _deliver(self, prompt_id: str, item: ComfyEvent | _Resync | ComfyUIError) -> None:
        """Queue an item for a prompt this client watches; drop it otherwise."""
        watch = self._watches.get(prompt_id)
        if watch is not None:
            watch.queue.put_nowait(item)

    def _broadcast(self, item: _Resync | ComfyUIError) -> None:
        """Queue an item for every watched prompt."""
        for watch in self._watches.values():
            watch.queue.put_nowait(item)

    # --- submitting and following prompts ----------------------------------------------

    async def locate(self, prompt_id: str) -> str | None:
        """Where ComfyUI has this prompt: 'running', 'pending', 'history' or None (unknown)."""
        queue = await self.rest.queue()
        if prompt_id in queue.running:
            return "running"
        if prompt_id in queue.pending:
            return "pending"
        return "history" if await self.rest.history(prompt_id) is not None else None

    async def submit(
        self,
        graph: dict[str, Any],
        *,
        prompt_id: str | None = None,
        ui_workflow: dict[str, Any] | None = None,
        front: bool = False,
    ) -> Queued:
        """Queue a prompt under our own id, socket first; a retried id already known is not sent again."""
        retried = prompt_id is not None
        prompt_id = prompt_id or str(uuid.uuid4())
        await self.connect()
        self._watches.setdefault(prompt_id, _Watch())
        try:
            if retried:
                where = await self.locate(prompt_id)
                if where is not None:
                    if where == "history":
                        self._deliver(prompt_id, _Resync("the prompt had already run"))
                    return Queued(prompt_id, -1)
            payload: dict[str, Any] = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
            if ui_workflow is not None:
                payload["extra_data"] = {"extra_pnginfo": {"workflow": ui_workflow}}
            if front:
                payload["front"] = True
            answer = await self._post_once(payload, prompt_id)
        except BaseException:
            self._watches.pop(prompt_id, None)
            raise
        return Queued(prompt_id, int(answer.get("number", -1)))

    async def _post_once(self, payload: dict[str, Any], prompt_id: str) -> dict[str, Any]:
        """POST /prompt; after a lost answer, look the id up before trying again (never queue it twice)."""
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return await self.rest.post_prompt(payload)
            except ComfyUnreachableError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)
                with contextlib.suppress(ComfyUnreachableError):
                    if await self.locate(prompt_id) is not None:
                        return {"prompt_id": prompt_id, "number": -1}
        raise AssertionError("unreachable")  # pragma: no cover

    async def events(self, prompt_id: str) -> AsyncIterator[ComfyEvent]:
        """Yield a submitted prompt's events until a terminal one (Succeeded, Failed, Interrupted)."""
        watch = self._watches.setdefault(prompt_id, _Watch())
        seen_outputs: set[str] = set()
        try:
            while True:
                try:
                    item = await asyncio.wait_for(watch.queue.get(), timeout=self.silence_seconds)
                except TimeoutError:
                    item = _Resync(f"no message for {self.silence_seconds:g} s")
                if isinstance(item, ComfyUIError):
                    raise item
                batch = await self._resync(prompt_id, item.reason) if isinstance(item, _Resync) else [item]
                for event in batch:
                    if isinstance(event, NodeOutput):
                        if event.node in seen_outputs:
                            continue
                        seen_outputs.add(event.node)
                    yield event
                    if isinstance(event, TERMINAL):
                        return
        finally:
            self._watches.pop(prompt_id, None)

    async def _resync(self, prompt_id: str, reason: str) -> list[ComfyEvent]:
        """Re-read /queue then /history: still queued → keep waiting; finished → its events; neither → lost."""
        deadline = time.monotonic() + self.down_seconds
        while True:
            try:
                queue = await self.rest.queue()
                if prompt_id in queue:
                    return [Reconnected(prompt_id, reason)]
                entry = await self.rest.history(prompt_id)
                break
            except ComfyUnreachableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        if entry is None:
            raise ComfyLostError(prompt_id, self.base_url)
        events = events_from_history(prompt_id, entry)
        if not events or not isinstance(events[-1], TERMINAL):
            return [Reconnected(prompt_id, reason)]  # history entry without a status yet: keep waiting
        return [Reconnected(prompt_id, reason), *events]

    async def run(
        self,
        graph: dict[str, Any],
        *,
        prompt_id: str | None = None,
        ui_workflow: dict[str, Any] | None = None,
        on_event: EventCallback | None = None,
    ) -> RunOutcome:
        """Submit and follow a prompt to the end; raise the matching ComfyUIError when it does not succeed."""
        started = time.perf_counter()
        queued = await self.submit(graph, prompt_id=prompt_id, ui_workflow=ui_workflow)
        await _notify(on_event, queued)
        outputs: dict[str, tuple[ImageRef, ...]] = {}
        async for event in self.events(queued.prompt_id):
            await _notify(on_event, event)
            if isinstance(event, NodeOutput) and event.images:
                outputs[event.node] = event.images
            elif isinstance(event, Failed):
                raise ComfyExecutionError(
                    event.prompt_id, event.node_id, event.node_type,
                    event.exception_type, event.exception_message, list(event.traceback),
                )
            elif isinstance(event, Interrupted):
                raise ComfyInterruptedError(event.prompt_id, event.node_id, event.node_type)
            elif isinstance(event, Succeeded) and not outputs:
                entry = await self.rest.history(queued.prompt_id) or {}
                for late in events_from_history(queued.prompt_id, entry):
                    if isinstance(late, NodeOutput) and late.images:
                        outputs[late.node] = late.images
        if not outputs:
            raise ComfyNoOutputsError(queued.prompt_id)
        return RunOutcome(queued.prompt_id, outputs, time.perf_counter() - started)

    async def cancel(self, prompt_id: str) -> None:
        """Cancel a prompt: drop it from the queue if waiting, interrupt it if running."""
        where = await self.locate(prompt_id)
        if where == "pending":
            await self.rest.delete_queued([prompt_id])
            self._deliver(prompt_id, Interrupted(prompt_id))
        elif where == "running":
            await self.rest.interrupt(prompt_id)

    # --- files and info (delegated to REST) --------------------------------------------

    async def download(self, ref: ImageRef) -> bytes:
        """The bytes of one output image, exactly as ComfyUI saved them."""
        return await self.rest.view(ref)

    async def save(self, ref: ImageRef, out_dir: Path) -> Path:
        """Download an output image into `out_dir`, never overwriting a different file."""
        data = await self.download(ref)
        return await asyncio.to_thread(write_unique, out_dir, Path(ref.filename).name, data)

    async def upload_image(self, image: Path | bytes, *, name: str | None = None) -> UploadedImage:
        """Upload an input image for LoadImage nodes."""
        return await self.rest.upload_image(image, name=name)

    async def system_stats(self) -> SystemStats:
        """Version and memory per device."""
        return await self.rest.system_stats()

    async def queue(self) -> QueueState:
        """Running and pending prompt ids."""
        return await self.rest.queue()

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Node definitions (and installed model lists)."""
        return await self.rest.object_info(node_class)

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only `prompt_id`, when given)."""
        await self.rest.interrupt(prompt_id)

    async def free(self) -> None:
        """Unload models and free VRAM."""
        await self.rest.free()


def write_unique(out_dir: Path, name: str, data: bytes) -> Path:
    """Write `data` as out_dir/name; if a different file has that name, add -1, -2, … before the suffix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    counter = 0
    while target.exists() and target.read_bytes() != data:
        counter += 1
        target = out_dir / f"{Path(name).stem}-{counter}{Path(name).suffix}"
    target.write_bytes(data)
    return target


async def _notify(callback: EventCallback | None, event: ComfyEvent) -> None:
    """Call a sync or async event callback."""
    if callback is None:
        return
    result = callback(event)
    if result is not None:
        await result
