"""The inputs store: input images live in `$ATELIER_DATA_DIR/inputs/`, named, and nothing else is ever read.

Every front end hands an input image to a job the same way: the bytes are checked and stored here
(`InputStore.put`, content-addressed, so the same picture is one file) and the job names the stored file.
`resolve_input` is the one confinement function: it turns a name a caller gave into a file inside the
store, and refuses paths, links, missing files and anything outside the folder with a message saying how
to hand the image over instead. No caller names a server path.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from atelier.tools.errors import InputImageError
from atelier.tools.settings import Settings

__all__ = ["INPUT_NAME_PATTERN", "InputStore", "StoredInput", "inputs_dir", "resolve_input"]

# A stored input's name: a plain file name (no folder, no leading dot), as `put` makes them or a person copies.
INPUT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$"
_NAME = re.compile(INPUT_NAME_PATTERN)
# What ComfyUI's LoadImage reads, by Pillow format name → the suffix the stored file gets.
_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
_HOW = ("upload it first (POST /inputs on the job API, or `atelier inputs add FILE`) and give the "
        "name it returns")


def inputs_dir(settings: Settings) -> Path:
    """The folder input images are kept in."""
    return settings.data_dir / "inputs"


def resolve_input(value: str, settings: Settings) -> Path:
    """The stored file a caller's `input_image` names; InputImageError unless it is a regular file in the store.

    An absolute path is accepted only when it already lies inside the store (jobs recorded by earlier versions).
    """
    folder = inputs_dir(settings)
    text = value.strip()
    if os.path.isabs(text):
        candidate = Path(text)
        if candidate.parent.resolve() != folder.resolve():
            raise InputImageError(f"input_image {value!r} is a path on the server; {_HOW}")
        text = candidate.name
    if not _NAME.fullmatch(text) or text in {".", ".."}:
        raise InputImageError(f"input_image {value!r} is not the name of a stored input; {_HOW}")
    path = folder / text
    if not path.exists() and not path.is_symlink():
        raise InputImageError(f"input_image {text!r} is not in the inputs store ({folder}); {_HOW}")
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder.resolve():
        raise InputImageError(f"input_image {text!r} is not a plain file in the inputs store; {_HOW}")
    return path


@dataclass(frozen=True)
class StoredInput:
    """An input image in the store: the name jobs use, and what it is."""

    name: str
    path: Path
    sha256: str
    width: int
    height: int
    format: str
    size: int


class InputStore:
    """Check and keep input images; content-addressed names (`<sha256>.<ext>`), written atomically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = inputs_dir(settings)

    def put(self, data: bytes, *, filename: str | None = None) -> StoredInput:
        """Store `data` after checking it is a PNG, JPEG or WebP image of sane size (InputImageError otherwise)."""
        what = f"the input image {filename!r}" if filename else "the input image"
        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise InputImageError(f"{what} has {len(data):,} bytes; the limit is {limit:,} "
                                  "(ATELIER_MAX_UPLOAD_BYTES): send a smaller image")
        if not data:
            raise InputImageError(f"{what} is empty; send the image's bytes")
        width, height, kind = self._check(data, what)
        sha = hashlib.sha256(data).hexdigest()
        name = sha + _FORMATS[kind]
        path = self.folder / name
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.folder, prefix=".upload-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        return StoredInput(name=name, path=path, sha256=sha, width=width, height=height, format=kind, size=len(data))

    def put_file(self, path: Path) -> StoredInput:
        """Store a local file a person named on their own machine (the CLI), reading at most the upload limit."""
        source = Path(path).expanduser()
        if not source.is_file():
            raise InputImageError(f"{source} is not a file; give the path of an image")
        with source.open("rb") as handle:
            data = handle.read(self.settings.max_upload_bytes + 1)
        return self.put(data, filename=source.name)

    def _check(self, data: bytes, what: str) -> tuple[int, int, str]:
        """(width, height, format) of a decodable image within the pixel limit, read from its header first."""
        try:
            with Image.open(io.BytesIO(data)) as probe:
                kind = str(probe.format)
                width, height = probe.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputImageError(f"{what} is not an image Atelier can read ({exc}); send a PNG, JPEG or WebP "
                                  "file") from None
        if kind not in _FORMATS:
            raise InputImageError(f"{what} is a {kind} image; send a PNG, JPEG or WebP file")
        if width * height > self.settings.max_image_pixels:
            raise InputImageError(f"{what} is {width}×{height} pixels, over the limit of "
                                  f"{self.settings.max_image_pixels:,} (ATELIER_MAX_IMAGE_PIXELS); scale it down")
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception as exc:  # Pillow raises many kinds for a damaged file
            raise InputImageError(f"{what} is damaged ({exc}); send the file again") from None
        return width, height, kind
