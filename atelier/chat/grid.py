"""One picture for a request for options: the earlier images found beside the new variations, as a labelled grid."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

__all__ = ["Tile", "draw_grid"]

TILE = 256
LABEL = 22
COLUMNS = 4
_EARLIER = (236, 240, 245)
_NEW = (230, 244, 234)


@dataclass
class Tile:
    """One cell: an image file (or None while it renders) and its label ("earlier · 0.83", "new · rendering")."""

    path: Path | None
    label: str
    new: bool = False


def _cell(tile: Tile) -> Image.Image:
    """A tile drawn: the image fitted in a square (or a blank square while it renders), its label underneath."""
    cell = Image.new("RGB", (TILE, TILE + LABEL), _NEW if tile.new else _EARLIER)
    if tile.path is not None and tile.path.exists():
        try:
            with Image.open(tile.path) as image:
                picture = ImageOps.contain(image.convert("RGB"), (TILE, TILE))
            cell.paste(picture, ((TILE - picture.width) // 2, (TILE - picture.height) // 2))
        except (OSError, ValueError):
            tile.label += " (unreadable)"
    ImageDraw.Draw(cell).text((6, TILE + 5), tile.label[:40], fill=(40, 40, 40))
    return cell


def draw_grid(tiles: list[Tile], folder: Path) -> Path:
    """The grid as a PNG in `folder`, named by its content (an unchanged grid is not drawn twice)."""
    rows = max(1, -(-len(tiles) // COLUMNS))
    columns = min(COLUMNS, max(1, len(tiles)))
    key = hashlib.sha256("|".join(f"{t.path}:{t.label}" for t in tiles).encode()).hexdigest()[:16]
    target = folder / f"options-{key}.png"
    if target.exists():
        return target
    sheet = Image.new("RGB", (columns * TILE + (columns + 1) * 4, rows * (TILE + LABEL) + (rows + 1) * 4), "white")
    for index, tile in enumerate(tiles):
        row, column = divmod(index, COLUMNS)
        sheet.paste(_cell(tile), (4 + column * (TILE + 4), 4 + row * (TILE + LABEL + 4)))
    folder.mkdir(parents=True, exist_ok=True)
    sheet.save(target, format="PNG")
    return target
