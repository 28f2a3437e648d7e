"""What each ComfyUI holds in memory as far as this worker knows (ComfyUI's API has no list of loaded models).

ComfyUI keeps the models of the prompts it ran until it needs the room or is told `POST /free`. The worker
notes the model files of every job that started executing on a server (`ran`), empties the record after its
own `/free` (`freed`), and forgets it — back to "unknown" — when the server was unreachable or its socket
dropped (it may have restarted) (`forget`). Model files are named `folder/file`, e.g.
`checkpoints/sd_xl_base_1.0.safetensors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ComfyHoldings", "Holdings", "model_keys"]


def model_keys(required: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """Model files as `folder/file`: `{'checkpoints': ['a.safetensors']}` → `('checkpoints/a.safetensors',)`."""
    return tuple(sorted({f"{folder}/{name}" for folder, names in required.items() for name in names}))


@dataclass(frozen=True)
class Holdings:
    """One server's record: the last job's models, and everything loaded since our last `/free`.

    `since_free` is None while unknown (nothing freed by this worker yet, or the record was forgotten):
    then ComfyUI may hold anything.
    """

    last: frozenset[str] = frozenset()
    since_free: frozenset[str] | None = None

    @property
    def may_hold_anything(self) -> bool:
        """Whether ComfyUI may hold models at all (unknown, or something ran since our `/free`)."""
        return self.since_free is None or bool(self.since_free)

    def only(self, models: frozenset[str]) -> bool:
        """Whether ComfyUI certainly holds nothing but (some of) these models."""
        return self.since_free is not None and self.since_free <= models


class ComfyHoldings:
    """The per-server records of one worker."""

    def __init__(self) -> None:
        self._by_server: dict[str, Holdings] = {}

    def get(self, server: str) -> Holdings:
        """The record of one server (unknown when never seen)."""
        return self._by_server.get(server, Holdings())

    def ran(self, server: str, models: Iterable[str]) -> None:
        """A job using these models started executing on the server: ComfyUI has them loaded now."""
        held, loaded = self.get(server), frozenset(models)
        since = None if held.since_free is None else held.since_free | loaded
        self._by_server[server] = Holdings(last=loaded, since_free=since)

    def freed(self, server: str) -> None:
        """We sent `POST /free {unload_models}`: ComfyUI holds nothing now."""
        self._by_server[server] = Holdings(last=frozenset(), since_free=frozenset())

    def forget(self, server: str) -> None:
        """The server went away or reconnected (maybe restarted): we know nothing of what it holds."""
        self._by_server.pop(server, None)
