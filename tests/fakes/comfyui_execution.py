"""Running one prompt like ComfyUI 0.3.64's PromptExecutor: dependency order, node cache, messages, history result."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.fakes.comfyui_catalog import Catalog
from tests.fakes.comfyui_images import (
    OUTPUT_TYPES,
    Picture,
    compute,
    image_hash,
    preview_jpeg,
    sampler_steps,
    save_images,
)
from tests.fakes.comfyui_validation import annotated_path, full_type_name

PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4  # server.BinaryEventTypes
JPEG = 1

# The frames every node failure shares (0.3.64 execution.py, paths shortened as in the transcript).
_EXECUTE_FRAMES = [
    '  File "<comfyui>/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks'
    " = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb,"
    " pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n" + " " * 62 + "^" * 163 + "\n",
    '  File "<comfyui>/execution.py", line 315, in get_output_data\n'
    "    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION,"
    " allow_interrupt=True, execution_block_cb="
    "execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n" + " " * 20 + "^" * 209 + "\n",
    '  File "<comfyui>/execution.py", line 289, in _async_map_node_over_list\n'
    "    await process_inputs(input_dict, i)\n",
    '  File "<comfyui>/execution.py", line 277, in process_inputs\n    result = f(**inputs)\n'
    "             ^^^^^^^^^^^\n",
]
_NODE_FRAMES = {
    "ProbeFail": '  File "<comfyui>/custom_nodes/probe_nodes.py", line 60, in run\n    raise RuntimeError(message)\n',
    "FileNotFoundError": '  File "<comfyui>/folder_paths.py", line 318, in get_full_path_or_raise\n    raise '
                         "FileNotFoundError(f\"Model in folder '{folder_name}' with filename '{filename}' "
                         'not found.")\n',
}


class Hub(Protocol):
    """What the executor needs from the server: sockets, settings and the shared interrupt flag."""

    client_id: str | None
    last_node_id: str | None
    interrupt_flag: bool
    step_seconds: float
    previews: bool
    catalog: Catalog
    dirs: dict[str, Path]

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Send a JSON message to one socket (or to all when sid is None)."""

    async def send_bytes(self, event_type: int, payload: bytes, sid: str | None) -> None:
        """Send a binary frame to one socket (or to all when sid is None)."""

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """Whether that client announced `supports_preview_metadata` in its feature flags."""


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class DependencyCycleError(Exception):
    """The graph has a cycle."""


def is_link(value: Any) -> bool:
    """comfy_execution.graph_utils.is_link: `[node_id, slot]`."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int | float) and not isinstance(value[1], bool))


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return value.describe() if isinstance(value, Picture) else str(value)


def _declared(spec: dict[str, Any]) -> dict[str, Any]:
    sections = spec["input"]
    return {**(sections.get("hidden") or {}), **(sections.get("optional") or {}), **(sections.get("required") or {})}


@dataclass
class _ExecutionList:
    """comfy_execution.graph.ExecutionList: a topological dissolve that skips cached inputs."""

    prompt: dict[str, Any]
    info: dict[str, Any]
    cached: set[str]
    pending: dict[str, bool] = field(default_factory=dict)
    block_count: dict[str, int] = field(default_factory=dict)
    blocking: dict[str, dict[str, dict[Any, bool]]] = field(default_factory=dict)

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current], self.block_count[current], self.blocking[current] = True, 0, {}
            for value in self.prompt[current]["inputs"].values():
                if is_link(value) and value[0] not in self.cached:
                    stack.append(value[0])
                    links.append((value[0], value[1], current))
        for source, socket, target in links:
            if source not in self.cached:
                self.add_node(source)
                if target not in self.blocking[source]:
                    self.blocking[source][target] = {}
                    self.block_count[target] += 1
                self.blocking[source][target][socket] = True

    def _is_output(self, node_id: str) -> bool:
        return bool(self.info[self.prompt[node_id]["class_type"]].get("output_node"))

    def stage(self) -> str:
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            raise DependencyCycleError("Dependency cycle detected")
        for node_id in available:  # ux_friendly_pick_node: outputs, then what unblocks them (1 or 2 hops)
            if self._is_output(node_id):
                return node_id
        for node_id in available:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in available:
            if any(self._is_output(b2) for b in self.blocking[node_id] for b2 in self.blocking[b]):
                return node_id
        return available[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


class _Progress:
    """comfy_execution.progress: per-node state, sent as `progress_state` on every change."""

    def __init__(self, hub: Hub, prompt_id: str) -> None:
        self.hub, self.prompt_id = hub, prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}

    async def _set(self, node_id: str, state: str, value: Any = None, total: Any = None) -> None:
        entry = self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})
        entry["state"] = state
        if total is not None:
            entry["value"], entry["max"] = value, total
        if state == "finished":
            entry["value"] = entry["max"]
        active = {nid: {"value": e["value"], "max": e["max"], "state": e["state"], "node_id": nid,
                        "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None,
                        "real_node_id": nid} for nid, e in self.nodes.items() if e["state"] != "pending"}
        await self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": active}, self.hub.client_id)

    async def start(self, node_id: str) -> None:
        await self._set(node_id, "running", 0.0, 1.0)

    async def update(self, node_id: str, value: int, total: int) -> None:
        await self._set(node_id, "running", value, total)

    async def finish(self, node_id: str) -> None:
        await self._set(node_id, "finished")


class Executor:
    """PromptExecutor: keeps the node cache between prompts (the 'classic' cache: last prompt's nodes)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.reset()

    def reset(self) -> None:
        """Forget every cached output (what POST /free {free_memory} does)."""
        self.outputs: dict[str, list[Any]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.success = True
        self.history_result: dict[str, Any] = {}

    async def _add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append((event, data))
        if self.hub.client_id is not None or broadcast:
            await self.hub.send(event, data, self.hub.client_id)

    def _check_interrupt(self) -> None:
        if self.hub.interrupt_flag:
            self.hub.interrupt_flag = False
            raise Interrupted

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """CacheKeySetInputSignature: class, IS_CHANGED and inputs, with links replaced by the ancestor's key."""
        info = self.hub.catalog.info
        memo: dict[str, str] = {}

        def key(node_id: Any, path: tuple[Any, ...]) -> str:
            if isinstance(node_id, str) and node_id in memo:
                return memo[node_id]
            if not isinstance(node_id, str) or node_id not in prompt or node_id in path:
                return f"uncacheable:{uuid.uuid4()}"
            node = prompt[node_id]
            class_type: str = node["class_type"]
            changed: Any = False
            if class_type in ("LoadImage", "LoadImageMask"):
                try:
                    changed = node["is_changed"] = [
                        image_hash(annotated_path(str(node["inputs"]["image"]), self.hub.catalog.input_dir))]
                except (OSError, KeyError):
                    changed = node["is_changed"] = f"NaN:{uuid.uuid4()}"
            parts: list[Any] = [class_type, changed]
            if "UNIQUE_ID" in (info[class_type]["input"].get("hidden") or {}).values():
                parts.append(node_id)
            for name in sorted(node["inputs"]):
                value = node["inputs"][name]
                linked = ("ANCESTOR", key(value[0], (*path, node_id)), value[1]) if is_link(value) else value
                parts.append((name, linked))
            memo[node_id] = json.dumps(parts, sort_keys=True, default=str)
            return memo[node_id]

        return {node_id: key(node_id, ()) for node_id in prompt}

    async def execute(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any],
                      execute_outputs: list[str]) -> None:
        """Run a validated prompt; leaves success, status_messages and history_result behind."""
        hub = self.hub
        hub.interrupt_flag = False
        hub.client_id = extra_data.get("client_id")
        self.status_messages = []
        await self._add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
        keys = self._signatures(prompt)
        used = set(keys.values())
        self.outputs = {k: v for k, v in self.outputs.items() if k in used}
        self.ui = {k: v for k, v in self.ui.items() if k in used}
        cached = [node_id for node_id in prompt if keys[node_id] in self.outputs]
        await self._add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False)
        progress = _Progress(hub, prompt_id)
        executed: list[str] = []
        plan = _ExecutionList(prompt, hub.catalog.info, set(cached))
        for output in execute_outputs:
            plan.add_node(output)
        finished = True
        while plan.pending:
            try:
                node_id = plan.stage()
            except DependencyCycleError as exc:
                blamed = next(iter(plan.pending))
                details = {"node_id": blamed, "exception_message": str(exc),
                           "exception_type": "graph.DependencyCycleError", "traceback": [], "current_inputs": []}
                await self._handle_error(prompt_id, prompt, executed, details, exc)
                finished = False
                break
            error = await self._execute_node(prompt, prompt_id, node_id, keys, extra_data, executed, progress)
            self.success = error is None
            if error is not None:
                await self._handle_error(prompt_id, prompt, executed, *error)
                finished = False
                break
            plan.complete(node_id)
        if finished:
            await self._add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)
        ui_outputs, meta = {}, {}
        for node_id in prompt:
            entry = self.ui.get(keys[node_id])
            if entry is not None:
                ui_outputs[node_id], meta[node_id] = entry["output"], entry["meta"]
        self.history_result = {"outputs": ui_outputs, "meta": meta}
        hub.last_node_id = None

    async def _execute_node(self, prompt: dict[str, Any], prompt_id: str, node_id: str, keys: dict[str, str],
                            extra_data: dict[str, Any], executed: list[str], progress: _Progress
                            ) -> tuple[dict[str, Any], BaseException] | None:
        hub, node = self.hub, prompt[node_id]
        class_type, key = node["class_type"], keys[node_id]
        spec = hub.catalog.info[class_type]
        if key in self.outputs:  # a cached output node: re-send what it showed last time
            if hub.client_id is not None:
                shown = self.ui.get(key) or {}
                await hub.send("executed", {"node": node_id, "display_node": node_id, "output": shown.get("output"),
                                            "prompt_id": prompt_id}, hub.client_id)
            await progress.finish(node_id)
            return None
        values: dict[str, Any] | None = None
        try:
            await progress.start(node_id)
            values = self._inputs(node, spec, prompt, keys, extra_data)
            if hub.client_id is not None:
                hub.last_node_id = node_id
                await hub.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                               hub.client_id)
            self._check_interrupt()  # nodes.before_node_execution()
            ui: dict[str, Any] = {}
            if class_type in OUTPUT_TYPES:
                outputs: list[Any] = []
                ui = self._save(class_type, values, prompt, extra_data)
            else:
                outputs = compute(class_type, spec, values, hub.catalog)
                steps = sampler_steps(class_type, values, list(spec.get("output", [])))
                if steps:
                    preview = outputs[0] if outputs and isinstance(outputs[0], Picture) else None
                    await self._steps(prompt_id, node_id, steps, values, preview, progress)
            if ui:
                self.ui[key] = {"meta": {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                         "real_node_id": node_id}, "output": ui}
                if hub.client_id is not None:
                    await hub.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                "prompt_id": prompt_id}, hub.client_id)
            self.outputs[key] = outputs
        except Interrupted as exc:
            return {"node_id": node_id}, exc
        except Exception as exc:
            frame = _NODE_FRAMES.get(class_type) or _NODE_FRAMES.get(type(exc).__name__) or (
                f'  File "<comfyui>/{spec.get("python_module", "nodes").replace(".", "/")}.py", line 1, in run\n')
            formatted = {name: [_format_value(v)] for name, v in (values or {}).items()}
            return {"node_id": node_id, "exception_message": f"{exc}\n", "exception_type": full_type_name(exc),
                    "traceback": [*_EXECUTE_FRAMES, frame], "current_inputs": formatted}, exc
        await progress.finish(node_id)
        executed.append(node_id)
        return None

    def _inputs(self, node: dict[str, Any], spec: dict[str, Any], prompt: dict[str, Any], keys: dict[str, str],
                extra_data: dict[str, Any]) -> dict[str, Any]:
        """get_input_data: linked values from the cache, declared constants, hidden PROMPT/EXTRA_PNGINFO."""
        declared, values = _declared(spec), {}
        for name, value in node["inputs"].items():
            if is_link(value):
                produced = self.outputs.get(keys.get(value[0], ""))
                slot = int(value[1])
                values[name] = produced[slot] if produced is not None and slot < len(produced) else None
            elif name in declared:
                values[name] = value
        for name, kind in (spec["input"].get("hidden") or {}).items():
            if kind == "PROMPT":
                values[name] = prompt
            elif kind == "EXTRA_PNGINFO":
                values[name] = extra_data.get("extra_pnginfo")
        return values

    def _save(self, class_type: str, values: dict[str, Any], prompt: dict[str, Any], extra_data: dict[str, Any]
              ) -> dict[str, Any]:
        kind = OUTPUT_TYPES[class_type]
        images = values.get("images")
        if not isinstance(images, Picture):
            raise TypeError("'NoneType' object is not subscriptable")
        prefix = str(values.get("filename_prefix", "ComfyUI")) if kind == "output" else "ComfyUI"
        saved = save_images(images, kind=kind, prefix=prefix, folder=self.hub.dirs[kind], prompt=prompt,
                            extra_pnginfo=extra_data.get("extra_pnginfo"))
        return {"images": saved}

    async def _steps(self, prompt_id: str, node_id: str, total: int, values: dict[str, Any],
                     picture: Picture | None, progress: _Progress) -> None:
        """One sampler step at a time: progress_state, [preview with metadata], progress, [legacy preview]."""
        hub, sid = self.hub, self.hub.client_id
        delay = values.get("step_seconds")
        delay = float(delay) if isinstance(delay, int | float) and not isinstance(delay, bool) else hub.step_seconds
        for step in range(1, total + 1):
            await asyncio.sleep(delay)
            self._check_interrupt()  # the progress hook raises here when interrupted
            await progress.update(node_id, step, total)
            image = preview_jpeg(picture, step, total) if hub.previews else None
            with_metadata = image is not None and hub.supports_preview_metadata(sid)
            if image is not None and with_metadata:
                meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                                   "parent_node_id": None, "real_node_id": node_id,
                                   "image_type": "image/jpeg"}).encode()
                await hub.send_bytes(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + image, sid)
            await hub.send("progress", {"value": step, "max": total, "prompt_id": prompt_id, "node": node_id}, sid)
            if image is not None and not with_metadata:
                await hub.send_bytes(PREVIEW_IMAGE, struct.pack(">I", JPEG) + image, sid)

    async def _handle_error(self, prompt_id: str, prompt: dict[str, Any], executed: list[str],
                            error: dict[str, Any], exc: BaseException) -> None:
        node_id = error["node_id"]
        message = {"prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                   "executed": list(executed)}
        if isinstance(exc, Interrupted):
            await self._add_message("execution_interrupted", message, broadcast=True)
            return
        message.update({"exception_message": error["exception_message"], "exception_type": error["exception_type"],
                        "traceback": error["traceback"], "current_inputs": error["current_inputs"],
                        "current_outputs": list(prompt)})
        await self._add_message("execution_error", message, broadcast=False)
