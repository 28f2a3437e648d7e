"""A protocol-faithful fake ComfyUI (0.3.64) on a loopback port, for tests and for trying Atelier by hand.

Built from ../shared/reference (the transcript and captures of a real server, its full /object_info)
and ComfyUI's server.py/execution.py behaviour: validation with 400 + node_errors, 500 for malformed
JSON, one prompt at a time with step progress, binary previews and late `executing null` messages,
per-client message routing, node-level caching, history, /view guards, uploads and interrupts.
Tests can drop sockets, make them go silent, pause the queue and "restart" the server (forgetting
queue and history, refusing connections for a while). Run by hand:
    python -m tests.fakes.comfyui_server --port 8188
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import struct
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.web_request import FileField

from tests.fakes.comfyui_images import OUTPUT_TYPES, SAMPLERS, Picture, compute, png_bytes, preview_jpeg, sampler_steps
from tests.fakes.comfyui_validation import MODEL_INPUTS, ValidationFailed, combo_options, validate_prompt

DATA = Path(__file__).parent / "data"
DEFAULT_MODELS = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors", "sd_xl_turbo_1.0_fp16.safetensors"],
    "upscale_models": ["RealESRGAN_x4plus.pth"],
}
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
GIB = 2**30


def _now_ms() -> int:
    return int(time.time() * 1000)


class Interrupted(Exception):
    """The running prompt was interrupted."""


@dataclass
class QueueItem:
    """One prompt in the queue: `[number, prompt_id, prompt, extra_data, outputs_to_execute]` on the wire."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def wire(self) -> list[Any]:
        """The list form /queue and /history use."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class State:
    """Everything a real ComfyUI keeps in memory (lost on restart)."""

    pending: list[QueueItem] = field(default_factory=list)
    running: QueueItem | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: dict[str, tuple[list[Any], dict[str, Any] | None]] = field(default_factory=dict)
    number: int = 0


class FakeComfyUI:
    """The fake server; `with FakeComfyUI() as fake: fake.url` runs it in a thread with its own loop."""

    def __init__(
        self,
        port: int = 0,
        *,
        step_seconds: float = 0.01,
        models: dict[str, list[str]] | None = None,
        output_dir: Path | None = None,
        vram_total: int = 24 * GIB,
        vram_free: int = 20 * GIB,
    ) -> None:
        import tempfile

        self.port = port
        self.step_seconds = step_seconds
        self.models = {k: list(v) for k, v in (DEFAULT_MODELS if models is None else models).items()}
        self.base_dir = Path(output_dir or tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.dirs = {kind: self.base_dir / kind for kind in ("output", "input", "temp")}
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.vram = {"total": vram_total, "free": vram_free}
        self.execution_counts: Counter[str] = Counter()
        self.state = State()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.silent_until = 0.0
        self.object_info = self._object_info()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wake: asyncio.Event | None = None
        self._paused = False
        self._interrupt: str | None = None
        self._worker: asyncio.Task[None] | None = None
        self._counters: Counter[str] = Counter()
        self._comeback: asyncio.Task[None] | None = None

    # --- object_info with installed models ------------------------------------------------

    def _object_info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((DATA / "object_info.json").read_text())
        info.update(json.loads((DATA / "probe_nodes.json").read_text()))
        for name, node in info.items():
            for section in node["input"].values():
                if not isinstance(section, dict):
                    continue
                for input_name, config in section.items():
                    folder = MODEL_INPUTS.get(input_name)
                    if name == "UpscaleModelLoader" and input_name == "model_name":
                        folder = "upscale_models"
                    if folder is None or combo_options(config) is None:
                        continue
                    files = sorted(self.models.get(folder, []))
                    if isinstance(config[0], list):
                        config[0] = files + [o for o in config[0] if o not in files and folder == "vae"]
                    else:
                        config[1]["options"] = files
        return info

    def _load_image_options(self) -> None:
        files = sorted(p.name for p in self.dirs["input"].iterdir() if p.is_file())
        self.object_info["LoadImage"]["input"]["required"]["image"][0] = files

    # --- sockets ----------------------------------------------------------------------------

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        if time.monotonic() < self.silent_until:
            return
        message = json.dumps({"type": event, "data": data})
        targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(message)

    async def _send_bytes(self, frame: bytes, sid: str | None) -> None:
        if time.monotonic() < self.silent_until or sid not in self.sockets:
            return
        ws = self.sockets[sid]
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame)

    def _queue_remaining(self) -> int:
        return len(self.state.pending) + (1 if self.state.running else 0)

    async def _status(self) -> None:
        await self._send("status", {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}, None)

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=: register the socket under the client id and greet with `status`."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        try:
            status = {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}, "sid": sid}
            await ws.send_str(json.dumps({"type": "status", "data": status}))
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    # --- HTTP routes ----------------------------------------------------------------------------

    async def post_prompt(self, request: web.Request) -> web.Response:
        """POST /prompt: validate, queue, answer {prompt_id, number, node_errors}."""
        body = await request.json()  # malformed JSON → aiohttp's 500, as ComfyUI answers
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        self._load_image_options()
        try:
            outputs = validate_prompt(self.object_info, body["prompt"])
        except ValidationFailed as failed:
            return web.json_response(failed.body, status=400)
        number: float = float(body["number"]) if "number" in body else self.state.number
        if body.get("front"):
            number = -number
        self.state.number += 1
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        number = int(number) if float(number).is_integer() else number
        self.state.pending.append(QueueItem(number, prompt_id, body["prompt"], extra, outputs))
        await self._status()
        assert self._wake is not None
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def get_prompt(self, request: web.Request) -> web.Response:
        """GET /prompt: queue size."""
        return web.json_response({"exec_info": {"queue_remaining": self._queue_remaining()}})

    async def get_queue(self, request: web.Request) -> web.Response:
        """GET /queue."""
        running = [self.state.running.wire()] if self.state.running else []
        pending = [item.wire() for item in sorted(self.state.pending, key=lambda i: i.number)]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        """POST /queue {clear | delete}."""
        body = await request.json()
        if body.get("clear"):
            self.state.pending.clear()
        doomed = set(body.get("delete") or [])
        self.state.pending = [item for item in self.state.pending if item.prompt_id not in doomed]
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        """GET /history[?max_items=N]."""
        items = list(self.state.history.items())
        if "max_items" in request.query:
            items = items[-int(request.query["max_items"]):]
        return web.json_response(dict(items))

    async def get_history_item(self, request: web.Request) -> web.Response:
        """GET /history/{id}: `{id: entry}` or `{}`."""
        prompt_id = request.match_info["prompt_id"]
        entry = self.state.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def post_history(self, request: web.Request) -> web.Response:
        """POST /history {clear | delete}."""
        body = await request.json()
        if body.get("clear"):
            self.state.history.clear()
        for prompt_id in body.get("delete") or []:
            self.state.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        """POST /interrupt [{prompt_id}]: only the running prompt, and only if it is that one when named."""
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = {}
        running = self.state.running
        if running and (not body.get("prompt_id") or body["prompt_id"] == running.prompt_id):
            self._interrupt = running.prompt_id
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        """POST /free."""
        return web.Response(status=200)

    async def system_stats(self, request: web.Request) -> web.Response:
        """GET /system_stats, shaped like the transcript's."""
        system = {"os": "posix", "ram_total": 25276510208, "ram_free": 24191004672, "comfyui_version": "0.3.64",
                  "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
                  "required_templates_version": "0.1.95", "python_version": "3.11.7 (fake)",
                  "pytorch_version": "2.14.1+cu130", "embedded_python": False, "argv": ["main.py", "--fake"]}
        device = {"name": "cuda:0 Fake GPU", "type": "cuda", "index": 0, "vram_total": self.vram["total"],
                  "vram_free": self.vram["free"], "torch_vram_total": self.vram["total"],
                  "torch_vram_free": self.vram["free"]}
        return web.json_response({"system": system, "devices": [device]})

    async def get_object_info(self, request: web.Request) -> web.Response:
        """GET /object_info[/{class}]."""
        self._load_image_options()
        name = request.match_info.get("node_class")
        if name is None:
            return web.json_response(self.object_info)
        return web.json_response({name: self.object_info[name]} if name in self.object_info else {})

    async def get_models(self, request: web.Request) -> web.Response:
        """GET /models and /models/{folder}."""
        folder = request.match_info.get("folder")
        if folder is None:
            return web.json_response(MODEL_FOLDERS)
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(sorted(self.models.get(folder, [])))

    async def get_embeddings(self, request: web.Request) -> web.Response:
        """GET /embeddings."""
        return web.json_response([])

    async def upload_image(self, request: web.Request) -> web.Response:
        """POST /upload/image (multipart), renaming 'name (1).png' on a clash unless overwrite."""
        form = await request.post()
        image = form.get("image")
        if not isinstance(image, FileField):
            return web.Response(status=400)
        kind = str(form.get("type") or "input")
        if kind not in self.dirs:
            return web.Response(status=400)
        subfolder = str(form.get("subfolder") or "")
        folder = (self.dirs[kind] / subfolder).resolve()
        if not folder.is_relative_to(self.dirs[kind].resolve()):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(str(image.filename)).name
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        target, counter = folder / name, 1
        while target.exists() and not overwrite:
            target = folder / f"{Path(name).stem} ({counter}){Path(name).suffix}"
            counter += 1
        target.write_bytes(image.file.read())
        return web.json_response({"name": target.name, "subfolder": subfolder, "type": kind})

    async def view(self, request: web.Request) -> web.StreamResponse:
        """GET /view with ComfyUI's guards: 400 bad name or type, 403 escaping subfolder, 404 missing."""
        filename = request.query.get("filename", "")
        kind = request.query.get("type", "output")
        subfolder = request.query.get("subfolder", "")
        if not filename or filename.startswith("/") or ".." in filename or kind not in self.dirs:
            return web.Response(status=400)
        base = self.dirs[kind].resolve()
        folder = (base / subfolder).resolve()
        if not folder.is_relative_to(base):
            return web.Response(status=403)
        path = folder / filename
        if not path.is_file():
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        return web.Response(body=path.read_bytes(), content_type="image/png", headers=headers)

    # --- test controls ----------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        """POST /__fake__/{action}: drop_sockets, go_silent?seconds=, restart?down_seconds=, pause, resume."""
        action = request.match_info["action"]
        if action == "execution_counts":
            return web.json_response(dict(self.execution_counts))
        query = request.query
        if action == "drop_sockets":
            await self._drop_sockets()
        elif action == "go_silent":
            self.silent_until = time.monotonic() + float(query.get("seconds", "5"))
        elif action == "restart":
            await self._restart(float(query.get("down_seconds", "0")))
        elif action in ("pause", "resume"):
            self._set_paused(action == "pause")
        else:
            return web.Response(status=404, text=f"unknown control {action}")
        return web.json_response({"ok": True})

    # --- execution ----------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if self._paused or not self.state.pending:
                self._wake.clear()
                continue
            self.state.pending.sort(key=lambda i: i.number)
            item = self.state.pending.pop(0)
            self.state.running = item
            self._interrupt = None
            try:
                await self._status()
                await self._execute(item)
            finally:
                self.state.running = None
            await self._status()
            await self._send("executing", {"node": None, "prompt_id": item.prompt_id}, item.extra_data.get("client_id"))

    def _order(self, prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        order: list[str] = []

        def visit(node_id: str) -> None:
            if node_id in order:
                return
            for value in prompt[node_id].get("inputs", {}).values():
                if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                    visit(value[0])
            order.append(node_id)

        for output in outputs:
            visit(output)
        return order

    def _signatures(self, prompt: dict[str, Any], order: list[str]) -> dict[str, str]:
        signatures: dict[str, str] = {}
        for node_id in order:
            node = prompt[node_id]
            inputs = {k: (signatures[v[0]], v[1]) if isinstance(v, list) and len(v) == 2 and v[0] in signatures
                      else v for k, v in node.get("inputs", {}).items()}
            signatures[node_id] = json.dumps([node["class_type"], inputs], sort_keys=True, default=str)
        return signatures

    async def _execute(self, item: QueueItem) -> None:
        sid = item.extra_data.get("client_id")
        pid = item.prompt_id
        self.execution_counts[pid] += 1
        messages: list[list[Any]] = []

        async def emit(event: str, data: dict[str, Any], record: bool = False) -> None:
            payload = {**data, "prompt_id": pid} if event != "progress" else data
            if record:
                messages.append([event, {"prompt_id": pid, **{k: v for k, v in data.items()}}])
            await self._send(event, payload, sid)

        prompt = item.prompt
        order = self._order(prompt, item.outputs)
        signatures = self._signatures(prompt, order)
        cached = [n for n in order if signatures[n] in self.state.cache]
        await emit("execution_start", {"timestamp": _now_ms()}, record=True)
        await emit("execution_cached", {"nodes": cached, "timestamp": _now_ms()}, record=True)
        values: dict[str, list[Any]] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        new_cache: dict[str, tuple[list[Any], dict[str, Any] | None]] = {}
        current = order[0] if order else None
        try:
            for node_id in order:
                current = node_id
                node = prompt[node_id]
                if node_id in cached:
                    values[node_id], ui = self.state.cache[signatures[node_id]]
                    new_cache[signatures[node_id]] = (values[node_id], ui)
                    if ui is not None:
                        outputs[node_id] = ui
                        await emit("executed", {"node": node_id, "display_node": node_id, "output": ui})
                    continue
                await emit("progress_state", {"nodes": self._progress_state(pid, node_id, 0, 1, "running")})
                await emit("executing", {"node": node_id, "display_node": node_id})
                if node["class_type"] in SAMPLERS:
                    await self._steps(node, prompt, pid, node_id, sid, emit)
                values[node_id] = compute(node["class_type"], node.get("inputs", {}), values, self.dirs["input"])
                ui = None
                if node["class_type"] in OUTPUT_TYPES:
                    ui = {"images": self._save(node, values, item)}
                    outputs[node_id] = ui
                    await emit("executed", {"node": node_id, "display_node": node_id, "output": ui})
                new_cache[signatures[node_id]] = (values[node_id], ui)
                executed.append(node_id)
            self.state.cache = new_cache
            await emit("execution_success", {"timestamp": _now_ms()}, record=True)
            self._record(item, outputs, "success", True, messages)
        except Interrupted:
            node_type = prompt[current]["class_type"] if current else None
            data = {"node_id": current, "node_type": node_type, "executed": executed, "timestamp": _now_ms()}
            await emit("execution_interrupted", data, record=True)
            self._record(item, {}, "error", False, messages)
        except Exception as exc:
            node_type = prompt[current]["class_type"] if current else None
            data = {"node_id": current, "node_type": node_type, "executed": executed,
                    "exception_message": f"{exc}\n", "exception_type": type(exc).__name__,
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": {k: [repr(v)] for k, v in prompt[current or ""].get("inputs", {}).items()},
                    "current_outputs": list(order), "timestamp": _now_ms()}
            await emit("execution_error", data, record=True)
            self._record(item, {}, "error", False, messages)

    async def _steps(self, node: dict[str, Any], prompt: dict[str, Any], pid: str, node_id: str, sid: Any,
                     emit: Any) -> None:
        total = sampler_steps(node, prompt)
        delay = float(node.get("inputs", {}).get("step_seconds", self.step_seconds))
        for step in range(1, total + 1):
            await asyncio.sleep(delay)
            if self._interrupt == pid:
                raise Interrupted
            await emit("progress", {"value": step, "max": total, "prompt_id": pid, "node": node_id})
            await self._send_bytes(struct.pack(">II", 1, 1) + preview_jpeg(step, total), sid)
            await emit("progress_state", {"nodes": self._progress_state(pid, node_id, step, total, "running")})

    @staticmethod
    def _progress_state(pid: str, node_id: str, value: int, total: int, state: str) -> dict[str, Any]:
        return {node_id: {"value": value, "max": total, "state": state, "node_id": node_id, "prompt_id": pid,
                          "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id}}

    def _save(self, node: dict[str, Any], values: dict[str, list[Any]], item: QueueItem) -> list[dict[str, str]]:
        kind = OUTPUT_TYPES[node["class_type"]]
        link = node["inputs"]["images"]
        picture = values[link[0]][link[1]]
        assert isinstance(picture, Picture)
        prefix = str(node["inputs"].get("filename_prefix", "ComfyUI")) if kind == "output" else "ComfyUI_temp"
        subfolder, _, stem = prefix.rpartition("/")
        folder = self.dirs[kind] / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        workflow = (item.extra_data.get("extra_pnginfo") or {}).get("workflow")
        refs = []
        for index in range(picture.batch):
            self._counters[prefix] += 1
            filename = f"{stem}_{self._counters[prefix]:05d}_.png"
            (folder / filename).write_bytes(png_bytes(picture, index, item.prompt, workflow))
            refs.append({"filename": filename, "subfolder": subfolder, "type": kind})
        return refs

    def _record(self, item: QueueItem, outputs: dict[str, Any], status: str, completed: bool,
                messages: list[list[Any]]) -> None:
        meta = {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}
        self.state.history.pop(item.prompt_id, None)
        self.state.history[item.prompt_id] = {
            "prompt": item.wire(), "outputs": outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages}, "meta": meta}

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        routes = [
            ("GET", "/ws", self.ws_handler), ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history), ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free), ("GET", "/system_stats", self.system_stats),
            ("GET", "/object_info", self.get_object_info), ("GET", "/object_info/{node_class}", self.get_object_info),
            ("GET", "/models", self.get_models), ("GET", "/models/{folder}", self.get_models),
            ("GET", "/embeddings", self.get_embeddings), ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_route("*", "/__fake__/{action}", self.control)
        return app

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self._app(), handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server: Any = site._server
            self.port = server.sockets[0].getsockname()[1]

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        await self._serve()
        self._worker = asyncio.create_task(self._work())

    async def _drop_sockets(self) -> None:
        for ws in list(self.sockets.values()):
            transport = ws._req.transport if ws._req is not None else None
            if transport is not None:
                transport.abort()  # abrupt, like a network drop: no close frame
        self.sockets.clear()

    async def _restart(self, down_seconds: float) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.state = State()
        await self._drop_sockets()
        if self._runner is not None:
            await self._runner.cleanup()

        async def come_back() -> None:
            await asyncio.sleep(down_seconds)
            await self._start()

        self._comeback = asyncio.get_running_loop().create_task(come_back())

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if not paused and self._wake is not None:
            self._wake.set()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:PORT/ws."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> FakeComfyUI:
        """Start serving in a background thread; returns once the port is listening."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-comfyui", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._comeback is not None:
                self._comeback.cancel()
            if self._worker is not None:
                self._worker.cancel()
            await self._drop_sockets()
            if self._runner is not None:
                await self._runner.cleanup()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FakeComfyUI:
        """Start on entry."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on exit."""
        self.stop()

    # Controls callable from any thread.
    def drop_sockets(self) -> None:
        """Close every WebSocket abruptly."""
        self._call(self._drop_sockets())

    def go_silent(self, seconds: float) -> None:
        """Keep executing but send nothing on sockets for `seconds`."""
        self.silent_until = time.monotonic() + seconds

    def restart(self, down_seconds: float = 0.0) -> None:
        """Like a SIGTERM restart: abort the running prompt, forget queue and history, refuse connections a while."""
        self._call(self._restart(down_seconds))

    def pause(self) -> None:
        """Hold the queue (nothing new starts)."""
        self._loop.call_soon_threadsafe(self._set_paused, True)  # type: ignore[union-attr]

    def resume(self) -> None:
        """Let the queue run again."""
        self._loop.call_soon_threadsafe(self._set_paused, False)  # type: ignore[union-attr]

    def set_vram(self, free: int, total: int) -> None:
        """Report this much VRAM in /system_stats."""
        self.vram = {"free": free, "total": total}

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """A copy of one history entry (None when unknown)."""
        entry = self.state.history.get(prompt_id)
        return copy.deepcopy(entry) if entry else None


def _parse_models(text: str) -> dict[str, list[str]]:
    models: dict[str, list[str]] = {}
    for part in filter(None, text.split(";")):
        folder, _, files = part.partition("=")
        models[folder.strip()] = [f.strip() for f in files.split(",") if f.strip()]
    return models


def main() -> None:
    """Run the fake in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A fake ComfyUI for trying Atelier without a GPU.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--step-seconds", type=float, default=0.05)
    parser.add_argument("--models", type=_parse_models, default=None,
                        help="checkpoints=a.safetensors,b.safetensors;upscale_models=x.pth")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    fake = FakeComfyUI(args.port, step_seconds=args.step_seconds, models=args.models, output_dir=args.output_dir)
    fake.start()
    print(f"fake ComfyUI listening on {fake.url} (files in {fake.base_dir}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
