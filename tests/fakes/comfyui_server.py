"""A protocol-faithful fake ComfyUI (0.3.64) on 127.0.0.1, for tests and for trying Atelier without a GPU.

Built from the captured traffic in ../shared/reference and ComfyUI's server.py / execution.py / main.py:
the same routes (also under /api), bodies, status codes and WebSocket messages in the same order.
Tests drive it in-process (`FakeComfyUI`, its own thread and event loop) or over HTTP (`/__fake__/…`).
Given a FakeGpu (shared with a fake Ollama), /system_stats reports that GPU: a prompt that runs loads its
model files (sizes from `model_sizes`, evicting this server's other models when they do not fit, as
ComfyUI's model management does), and `POST /free {unload_models}` (or `free_memory`) drops them.
Run by hand:  python -m tests.fakes.comfyui_server --port 8188 [--step-seconds S] [--models …] [--output-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import struct
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from tests.fakes.comfyui_catalog import (
    CAPTURED_CPU_DEVICE,
    CAPTURED_SYSTEM,
    MODEL_FOLDERS,
    SERVER_FEATURES,
    Catalog,
    model_folder,
)
from tests.fakes.comfyui_execution import Executor
from tests.fakes.comfyui_files import FOLDER_TYPES, upload, view
from tests.fakes.comfyui_queue import PromptQueue, QueueItem
from tests.fakes.comfyui_validation import validate_prompt
from tests.fakes.fake_gpu import GIB, FakeGpu
from tests.fakes.loopback_runner import Control, LoopbackServer, after_answer, dispatch_control

DEFAULT_MODEL_BYTES = 2 * GIB


def _get(data: Any, key: str, default: Any) -> Any:
    """`data[key] if key in data else default`, the way ComfyUI reads request bodies (any JSON value)."""
    return data[key] if key in data else default  # noqa: SIM401 - also for JSON lists and strings


class FakeComfyUI(LoopbackServer):
    """The fake server. `with FakeComfyUI() as fake:` serves on `fake.url` from its own thread and event loop.

    Files go to `<output_dir>/output`, `<output_dir>/input` and `<output_dir>/temp` (a temporary folder by
    default; the files stay after stop()). `models` maps a models/ folder to its installed file names
    (None: DEFAULT_MODELS, {}: nothing). `gpu` (a FakeGpu) replaces `devices` in /system_stats; `model_sizes`
    gives a model file's bytes in VRAM (DEFAULT_MODEL_BYTES otherwise); `gpu_holder` names this server there.
    """

    thread_name = "fake-comfyui"

    def __init__(
        self,
        port: int = 0,
        *,
        step_seconds: float = 0.01,
        models: dict[str, list[str]] | None = None,
        output_dir: Path | str | None = None,
        devices: list[dict[str, Any]] | None = None,
        previews: bool = True,
        validate_v3_combos: bool = False,
        gpu: FakeGpu | None = None,
        model_sizes: dict[str, int] | None = None,
        gpu_holder: str = "comfyui",
    ) -> None:
        super().__init__(port)
        self.gpu = gpu
        self.gpu_holder = gpu_holder
        self.model_sizes = dict(model_sizes or {})
        self.loaded_models: dict[str, int] = {}
        self._requests: list[tuple[str, str, Any]] = []
        if gpu is not None:
            gpu.attach(gpu_holder, lambda: dict(self.loaded_models))
        self.step_seconds = step_seconds
        self.previews = previews
        self.validate_v3_combos = validate_v3_combos
        self.root = Path(output_dir or tempfile.mkdtemp(prefix="fake-comfyui-")).resolve()
        fresh_input = not (self.root / "input").exists()
        self.dirs = {kind: self.root / kind for kind in FOLDER_TYPES}
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        if fresh_input:  # a fresh ComfyUI ships input/example.png
            Image.new("RGB", (64, 64), (200, 120, 60)).save(self.dirs["input"] / "example.png")
        self.catalog = Catalog(models, self.dirs["input"])
        self.devices = copy.deepcopy(devices) if devices is not None else [dict(CAPTURED_CPU_DEVICE)]
        self.silent_until = 0.0
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._spans: list[tuple[str, float, float]] = []
        self._paused = False
        self._worker: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._handlers_done: dict[int, asyncio.Event] = {}
        self._reset_process()

    def _reset_process(self) -> None:
        """Everything a ComfyUI process keeps in memory only (lost on restart)."""
        self._unload_models()
        self.prompts = PromptQueue()
        self.number = 0
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupt_flag = False
        self.executor = Executor(self)

    # --- messages ------------------------------------------------------------------------------------------

    def _silent(self) -> bool:
        return time.monotonic() < self.silent_until

    def _targets(self, sid: str | None) -> list[web.WebSocketResponse]:
        if sid is None:
            return list(self.sockets.values())
        return [self.sockets[sid]] if sid in self.sockets else []

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """PromptServer.send_json: to the socket of `sid` only, or to every socket when sid is None."""
        if self._silent():
            return
        message = json.dumps({"type": event, "data": data})
        for ws in self._targets(sid):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(message)

    async def send_bytes(self, event_type: int, payload: bytes, sid: str | None) -> None:
        """PromptServer.send_bytes: a 4-byte big-endian event type, then the payload."""
        if self._silent():
            return
        frame = struct.pack(">I", event_type) + payload
        for ws in self._targets(sid):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame)

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """feature_flags.supports_feature(…, 'supports_preview_metadata') for that client."""
        flags = (self.sockets_metadata.get(sid or "") or {}).get("feature_flags") or {}
        return flags.get("supports_preview_metadata") is True

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.prompts.remaining()}}

    async def _queue_updated(self) -> None:
        await self.send("status", {"status": self._queue_info()}, None)

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=: greet with `status` (+ the executing node on reconnect), negotiate feature flags."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        done = self._handlers_done[id(ws)] = asyncio.Event()
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)  # reusing a session: the old socket stops receiving (it is not closed)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sockets_metadata[sid] = {"feature_flags": {}}
        try:
            await self.send("status", {"status": self._queue_info(), "sid": sid}, sid)
            if self.client_id == sid and self.last_node_id is not None:
                await self.send("executing", {"node": self.last_node_id}, sid)
            first_message = True
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if first_message and data.get("type") == "feature_flags":
                    self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                    await self.send("feature_flags", SERVER_FEATURES, sid)
                first_message = False
        finally:
            # Like ComfyUI: by sid, so a late close of an old socket unregisters a newer one with the same id.
            self.sockets.pop(sid, None)
            self.sockets_metadata.pop(sid, None)
            done.set()
            self._handlers_done.pop(id(ws), None)
        return ws

    # --- prompts, queue, history ---------------------------------------------------------------------------

    async def post_prompt(self, request: web.Request) -> web.Response:
        """POST /prompt: validate, queue and answer {prompt_id, number, node_errors}; 400 with the reasons."""
        json_data = await request.json()  # malformed JSON: aiohttp's plain-text 500, as on the real server
        if "number" in json_data:
            number: float = float(json_data["number"])
        else:
            number = self.number
            if _get(json_data, "front", False):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = _get(json_data, "partial_execution_targets", None)
        valid = validate_prompt(self.catalog.object_info(), prompt, input_dir=self.dirs["input"],
                                partial_targets=partial, v3_combos=self.validate_v3_combos)
        extra_data = _get(json_data, "extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid.ok:
            return web.json_response({"error": valid.error, "node_errors": valid.node_errors}, status=400)
        self.prompts.put(QueueItem(number, prompt_id, prompt, extra_data, valid.outputs))
        await self._queue_updated()
        self._wake_worker()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid.node_errors})

    async def get_prompt(self, request: web.Request) -> web.Response:
        """GET /prompt: {exec_info: {queue_remaining}}."""
        return web.json_response(self._queue_info())

    async def get_queue(self, request: web.Request) -> web.Response:
        """GET /queue: the running item and the pending heap, in heap order like ComfyUI."""
        return web.json_response({"queue_running": [item.wire() for item in self.prompts.running.values()],
                                  "queue_pending": [item.wire() for item in self.prompts.pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        """POST /queue {clear: true} | {delete: [prompt_id, …]} (pending prompts only)."""
        json_data = await request.json()
        if _get(json_data, "clear", False):
            self.prompts.pending = []
            await self._queue_updated()
        for prompt_id in _get(json_data, "delete", []):
            wiped = self.prompts.delete(prompt_id)
            if wiped is not None:  # emptying the queue sends status twice, as ComfyUI's wipe_queue does
                for _ in range(2 if wiped else 1):
                    await self._queue_updated()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        """GET /history[?max_items=N&offset=M]."""
        max_items = int(request.query["max_items"]) if "max_items" in request.query else None
        offset = int(request.query["offset"]) if "offset" in request.query else -1
        return web.json_response(self.prompts.history_page(max_items, offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        """GET /history/{prompt_id}: {prompt_id: entry}, or {} when unknown."""
        prompt_id = request.match_info["prompt_id"]
        entry = self.prompts.history.get(prompt_id)
        return web.json_response({prompt_id: copy.deepcopy(entry)} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        """POST /history {clear: true} | {delete: [prompt_id, …]}."""
        json_data = await request.json()
        if _get(json_data, "clear", False):
            self.prompts.history = {}
        for prompt_id in _get(json_data, "delete", []):
            self.prompts.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        """POST /interrupt [{prompt_id}]: with an id, only if that prompt is the running one."""
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if not prompt_id or any(item.prompt_id == prompt_id for item in self.prompts.running.values()):
            self.interrupt_flag = True
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        """POST /free {unload_models, free_memory}: free_memory also empties the node cache."""
        json_data = await request.json()
        for flag in ("unload_models", "free_memory"):
            if json_data.get(flag, False):
                self.prompts.flags[flag] = json_data[flag]
        self._wake_worker()
        return web.Response(status=200)

    def _process_flags(self) -> None:
        """main.prompt_worker: `unload_models` (default: the value of `free_memory`) unloads every model."""
        flags, self.prompts.flags = self.prompts.flags, {}
        free_memory = flags.get("free_memory", False)
        if flags.get("unload_models", free_memory):
            self._unload_models()
        if free_memory:
            self.executor.reset()

    # --- models in (fake) VRAM -------------------------------------------------------------------------------

    def _note(self, action: str, model: str) -> None:
        if self.gpu is not None:
            self.gpu.note(self.gpu_holder, action, model)

    def _unload_models(self) -> None:
        """comfy.model_management.unload_all_models()."""
        for name in list(self.loaded_models):
            del self.loaded_models[name]
            self._note("unload", name)

    def _load_models(self, prompt: dict[str, Any], prompt_id: str) -> None:
        """load_models_gpu for a prompt's model files, freeing this server's other models while they do not fit."""
        files: list[str] = []
        for node in prompt.values():
            for name, value in (node.get("inputs") or {}).items():
                folder = model_folder(str(node.get("class_type")), name)
                if folder and folder != "configs" and isinstance(value, str) and value not in files:
                    files.append(value)
        self._note("run", prompt_id)
        for name in files:
            if name in self.loaded_models:
                continue
            size = self.model_sizes.get(name, DEFAULT_MODEL_BYTES)
            for other in [m for m in self.loaded_models if m not in files]:
                if self.gpu is None or self.gpu.free >= size:
                    break
                del self.loaded_models[other]
                self._note("unload", other)
            self.loaded_models[name] = size
            self._note("load", name)

    def _wake_worker(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _work(self) -> None:
        """main.prompt_worker: one prompt at a time, lowest number first."""
        assert self._wake is not None
        while True:
            if self._paused or not self.prompts.pending:
                self._process_flags()
                self._wake.clear()
                await self._wake.wait()
                continue
            task_id, item = self.prompts.take()
            await self._queue_updated()
            with self._counts_lock:
                self._counts[item.prompt_id] += 1
            self._load_models(item.prompt, item.prompt_id)
            began = time.monotonic()
            try:
                await self.executor.execute(item.prompt, item.prompt_id, item.extra_data, item.outputs)
            except Exception:  # a bug in the fake itself: say so loudly, keep serving
                traceback.print_exc()
                self.executor.success = False
            with self._counts_lock:
                self._spans.append((item.prompt_id, began, time.monotonic()))
            executor = self.executor
            self.prompts.done(task_id, executor.success, executor.status_messages, executor.history_result)
            await self._queue_updated()
            if self.client_id is not None:
                await self.send("executing", {"node": None, "prompt_id": item.prompt_id}, self.client_id)
            self._process_flags()

    # --- info routes -------------------------------------------------------------------------------------------

    async def system_stats(self, request: web.Request) -> web.Response:
        """GET /system_stats: the captured system, with this fake's devices (its FakeGpu when it has one)."""
        devices = [self.gpu.device()] if self.gpu is not None else self.devices
        return web.json_response({"system": CAPTURED_SYSTEM, "devices": devices})

    async def get_object_info(self, request: web.Request) -> web.Response:
        """GET /object_info and /object_info/{node_class} ({} for an unknown class)."""
        info = self.catalog.object_info()
        name = request.match_info.get("node_class")
        if name is None:
            return web.json_response(info)
        return web.json_response({name: info[name]} if name in info else {})

    async def get_models(self, request: web.Request) -> web.Response:
        """GET /models (folder names) and /models/{folder} (its files; 404 for an unknown folder)."""
        folder = request.match_info.get("folder")
        if folder is None:
            return web.json_response(MODEL_FOLDERS)
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.catalog.files(folder))

    async def get_embeddings(self, request: web.Request) -> web.Response:
        """GET /embeddings."""
        return web.json_response(self.catalog.embeddings())

    async def get_features(self, request: web.Request) -> web.Response:
        """GET /features: the server's feature flags."""
        return web.json_response(SERVER_FEATURES)

    async def get_extensions(self, request: web.Request) -> web.Response:
        """GET /extensions: no frontend extensions here."""
        return web.json_response([])

    async def get_root(self, request: web.Request) -> web.Response:
        """GET /: a stand-in for the frontend's index.html."""
        return web.Response(text="<!doctype html><title>ComfyUI (fake)</title>", content_type="text/html")

    # --- files ---------------------------------------------------------------------------------------------------

    async def upload_image(self, request: web.Request) -> web.Response:
        """POST /upload/image: multipart image/overwrite/type/subfolder; 'name (1).png' on a clash."""
        return upload(await request.post(), self.dirs)

    async def view(self, request: web.Request) -> web.StreamResponse:
        """GET /view: 400 for a bad name or type, 403 for a subfolder leaving the folder, 404 when missing."""
        return view(request.query, self.dirs)

    # --- test controls -------------------------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        """/__fake__/{action}: the Python controls over HTTP (parameters in the query or a JSON body)."""
        queries: dict[str, Control] = {
            "execution_counts": lambda _: dict(self.execution_counts),
            "execution_spans": lambda _: [list(span) for span in self.execution_spans],
            "state": lambda _: {"paused": self._paused, "silent": self._silent(), "devices": self.devices,
                                "models": self.catalog.models, "output_dir": str(self.root),
                                "loaded_models": dict(self.loaded_models)},
            "requests": lambda _: [list(r) for r in self.requests],
        }
        actions: dict[str, Control] = {
            "drop_sockets": lambda _: self._drop_sockets(),
            "go_silent": lambda p: self.go_silent(float(p.get("seconds", 5.0))),
            "restart": lambda p: after_answer(partial(self._restart, float(p.get("down_seconds", 0.0)))),
            "pause": lambda _: self._set_paused(True),
            "resume": lambda _: self._set_paused(False),
            "set_vram": lambda p: self._set_vram(int(p["free"]), int(p["total"])),
            "set_models": lambda p: self.catalog.set_models(p.get("models", p)),
            "clear_requests": lambda _: self.clear_requests(),
        }
        return await dispatch_control(request, queries=queries, actions=actions)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self._wake_worker()

    def _set_vram(self, free: int, total: int) -> None:
        if self.gpu is not None:
            raise ValueError("this fake reports its FakeGpu: change the GPU's total or what is loaded instead")
        device = self.devices[0]
        device["vram_free"], device["vram_total"] = free, total
        if device.get("type") == "cpu":
            device["torch_vram_free"], device["torch_vram_total"] = free, total

    async def _drop_sockets(self) -> None:
        """Abort every WebSocket's TCP connection (no close frame) and wait for their handlers to end."""
        waits = list(self._handlers_done.values())
        for ws in list(self.sockets.values()):
            transport = ws._req.transport if ws._req is not None else None
            if transport is not None:
                transport.abort()
        self.sockets.clear()
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), 2.0)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def _app(self) -> web.Application:

        @web.middleware
        async def record(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            if not request.path.startswith("/__fake__/"):
                body: Any = None
                if request.content_type == "application/json" and request.can_read_body:
                    try:
                        body = json.loads(await request.read())
                    except ValueError:
                        body = None
                with self._counts_lock:
                    self._requests.append((request.method, request.path, body))
            return await handler(request)

        app = web.Application(client_max_size=100 * 2**20, middlewares=[record])
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.ws_handler), ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history), ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free), ("GET", "/system_stats", self.system_stats),
            ("GET", "/object_info", self.get_object_info), ("GET", "/object_info/{node_class}", self.get_object_info),
            ("GET", "/models", self.get_models), ("GET", "/models/{folder}", self.get_models),
            ("GET", "/embeddings", self.get_embeddings), ("GET", "/features", self.get_features),
            ("GET", "/extensions", self.get_extensions), ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        app.router.add_route("GET", "/", self.get_root)
        app.router.add_route("*", "/__fake__/{action}", self.control)
        return app

    async def _come_up(self) -> None:
        """Listen, then start the prompt worker."""
        if self._runner is not None:
            return
        self._wake = asyncio.Event()
        await super()._come_up()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _go_down(self) -> None:
        """Stop the prompt worker, abort the WebSockets, then close the port."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await self._drop_sockets()
        await super()._go_down()

    async def _restart(self, down_seconds: float) -> None:
        if self._comeback is not None:
            self._comeback.cancel()
        await self._go_down()
        self._reset_process()
        if down_seconds <= 0:
            await self._come_up()
            return

        async def come_back() -> None:
            await asyncio.sleep(down_seconds)
            await self._come_up()

        self._comeback = asyncio.get_running_loop().create_task(come_back())

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:PORT/ws (add ?clientId=…)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    # --- controls, callable from any thread ---------------------------------------------------------------------

    def drop_sockets(self) -> None:
        """Close every WebSocket abruptly (TCP abort, no close frame); prompts keep running."""
        self._call(self._drop_sockets)

    def go_silent(self, seconds: float) -> None:
        """Keep executing but send nothing on any socket for `seconds` (messages meanwhile are lost)."""
        self.silent_until = time.monotonic() + seconds

    def restart(self, down_seconds: float = 0.0) -> None:
        """Like a SIGTERM restart: abort the running prompt, forget queue, history and cache, close sockets.

        Connections are refused for `down_seconds`; returns when the server is down (or, for 0, back up).
        Saved files stay and /view still serves them.
        """
        self._call(lambda: self._restart(down_seconds))

    def pause(self) -> None:
        """Hold the queue: nothing new starts (a running prompt finishes)."""
        self._call(self._async_set_paused(True))

    def resume(self) -> None:
        """Let the queue run again."""
        self._call(self._async_set_paused(False))

    def _async_set_paused(self, paused: bool) -> Callable[[], Awaitable[None]]:
        async def apply() -> None:
            self._set_paused(paused)

        return apply

    def set_vram(self, free: int, total: int) -> None:
        """Report this VRAM (bytes) for the first device in /system_stats."""
        self._set_vram(free, total)

    def set_models(self, models: dict[str, list[str]]) -> None:
        """Install exactly these model files from now on (folder → names)."""

        async def apply() -> None:
            self.catalog.set_models(models)

        self._call(apply)

    @property
    def requests(self) -> list[tuple[str, str, Any]]:
        """Every request but /__fake__ ones, in order: (method, path, JSON body or None)."""
        with self._counts_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._counts_lock:
            self._requests.clear()

    @property
    def execution_spans(self) -> list[tuple[str, float, float]]:
        """(prompt_id, start, end) of every execution, on this process's monotonic clock (survives restarts)."""
        with self._counts_lock:
            return list(self._spans)

    @property
    def execution_counts(self) -> Counter[str]:
        """How many times each prompt_id started executing (survives restarts)."""
        with self._counts_lock:
            return Counter(self._counts)

    @property
    def history(self) -> dict[str, dict[str, Any]]:
        """A copy of the whole history (prompt_id → entry), oldest first."""

        async def read() -> dict[str, dict[str, Any]]:
            return copy.deepcopy(self.prompts.history)

        return self._call(read)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """A copy of one /history entry, or None."""
        return self.history.get(prompt_id)


def parse_models(text: str) -> dict[str, list[str]]:
    """`checkpoints=a.safetensors,b.safetensors;upscale_models=x.pth` → {folder: [files]}."""
    models: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        folder, _, files = part.partition("=")
        models[folder.strip()] = [f.strip() for f in files.split(",") if f.strip()]
    return models


def main(argv: list[str] | None = None) -> None:
    """Serve a fake ComfyUI in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A fake ComfyUI 0.3.64 on 127.0.0.1 for trying Atelier without a GPU.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--step-seconds", type=float, default=0.05, help="time per sampler step")
    parser.add_argument("--models", type=parse_models, default=None,
                        help="installed models, e.g. 'checkpoints=a.safetensors,b.safetensors;upscale_models=x.pth'")
    parser.add_argument("--output-dir", type=Path, default=None, help="where output/, input/ and temp/ live")
    args = parser.parse_args(argv)
    fake = FakeComfyUI(args.port, step_seconds=args.step_seconds, models=args.models, output_dir=args.output_dir)
    fake.serve_forever(lambda fake: f"fake ComfyUI listening on {fake.url} (files in {fake.root}); Ctrl-C stops it")


if __name__ == "__main__":
    main()
