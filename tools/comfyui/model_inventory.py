"""Which model files each ComfyUI has, and whether a workflow's files are on one of them.

An inventory is one server's `folder → file names` (from `GET /models/{folder}`, what ComfyUI's loaders list).
`missing_on` and `unready_reason` are pure: the router calls them with the inventories it was given, so routing
is testable without a server; `fetch_inventories` asks the servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence

from atelier.tools.comfyui.rest import ComfyREST
from atelier.tools.comfyui.templates import WorkflowTemplate, required_models
from atelier.tools.errors import ComfyHTTPError, ComfyUIError

__all__ = ["ModelInventory", "fetch_inventories", "fetch_inventory", "folders_of", "missing_on", "unready_reason"]

ModelInventory = Mapping[str, Collection[str]]


def folders_of(templates: Iterable[WorkflowTemplate]) -> set[str]:
    """The model folders these workflows load files from (what an inventory needs to list)."""
    return {folder for template in templates for folder in required_models(template)}


def missing_on(needs: Mapping[str, Sequence[str]], inventory: ModelInventory) -> list[tuple[str, str]]:
    """(folder, file) of every file in `needs` that `inventory` lacks, in `needs` order."""
    return [(folder, name) for folder, names in needs.items() for name in names
            if name not in inventory.get(folder, ())]


def unready_reason(template: WorkflowTemplate, inventories: Sequence[ModelInventory]) -> str | None:
    """Why no server can run the workflow (the files missing on the server closest to having them), or None when
    one has every file it loads, or when no inventory is known."""
    needs = required_models(template)
    if not inventories or not needs:
        return None
    gaps = [missing_on(needs, inventory) for inventory in inventories]
    if any(not gap for gap in gaps):
        return None
    closest = min(gaps, key=len)
    files = ", ".join(f"{folder}/{name}" for folder, name in closest)
    where = "the server lacks" if len(inventories) == 1 else f"none of the {len(inventories)} servers has all; the " \
                                                             "closest lacks"
    return f"its model files are not installed ({where} {files}): put them in ComfyUI/models/"


async def fetch_inventory(url: str, folders: Iterable[str], *, timeout: float = 3.0) -> dict[str, set[str]] | None:
    """One server's files in `folders` (a folder it does not know is empty); None when it does not answer, or lists
    no folder at all (a ComfyUI without `/models`: nothing is known)."""
    rest = ComfyREST(url, timeout=timeout)
    inventory: dict[str, set[str]] = {}
    listed = False
    try:
        for folder in sorted(set(folders)):
            try:
                inventory[folder] = set(await rest.models(folder))
                listed = True
            except ComfyHTTPError:
                inventory[folder] = set()
    except ComfyUIError:
        return None
    finally:
        await rest.aclose()
    return inventory if listed else None


async def fetch_inventories(urls: Sequence[str], folders: Iterable[str], *, timeout: float = 3.0
                            ) -> list[dict[str, set[str]]]:
    """The inventories of the servers that answer (an empty list: none did, so nothing is known)."""
    wanted = sorted(set(folders))
    found = await asyncio.gather(*(fetch_inventory(url, wanted, timeout=timeout) for url in urls))
    return [inventory for inventory in found if inventory is not None]
