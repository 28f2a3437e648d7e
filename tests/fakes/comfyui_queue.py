"""The fake ComfyUI's in-memory queue and history, like execution.PromptQueue (lost on every restart)."""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


@dataclass(order=True)
class QueueItem:
    """One queued prompt, ordered like ComfyUI's heap: by number, then prompt_id."""

    number: float
    prompt_id: str
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)

    def wire(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]` as /queue and /history show it."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class PromptQueue:
    """Pending prompts (a heap), the running one (a copy taken when it started) and the history."""

    pending: list[QueueItem] = field(default_factory=list)
    running: dict[int, QueueItem] = field(default_factory=dict)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    task_counter: int = 0

    def remaining(self) -> int:
        """exec_info.queue_remaining: pending plus running."""
        return len(self.pending) + len(self.running)

    def put(self, item: QueueItem) -> None:
        """Queue a validated prompt."""
        heapq.heappush(self.pending, item)

    def take(self) -> tuple[int, QueueItem]:
        """Start the lowest-numbered prompt; the running copy is what /queue and /history will show."""
        item = heapq.heappop(self.pending)
        task_id, self.task_counter = self.task_counter, self.task_counter + 1
        self.running[task_id] = copy.deepcopy(item)
        return task_id, item

    def delete(self, prompt_id: str) -> bool | None:
        """Drop the first pending item with this id: None if none, True if that emptied the queue (wiped)."""
        for index, item in enumerate(self.pending):
            if item.prompt_id == prompt_id:
                if len(self.pending) == 1:
                    self.pending = []
                    return True
                self.pending.pop(index)
                heapq.heapify(self.pending)
                return False
        return None

    def done(self, task_id: int, success: bool, messages: list[tuple[str, dict[str, Any]]],
             result: dict[str, Any]) -> None:
        """task_done: the history entry {prompt, outputs, status, meta} (a re-run overwrites it in place)."""
        item = self.running.pop(task_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        wire = item.wire()
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            wire[3].pop(key, None)
        status = {"status_str": "success" if success else "error", "completed": success,
                  "messages": [[event, data] for event, data in messages]}
        self.history[item.prompt_id] = {"prompt": wire, "outputs": {}, "status": copy.deepcopy(status)}
        self.history[item.prompt_id].update(result)

    def history_page(self, max_items: int | None, offset: int) -> dict[str, Any]:
        """get_history without an id: `max_items` entries from `offset` (by default the newest ones)."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for index, (prompt_id, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[prompt_id] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out
