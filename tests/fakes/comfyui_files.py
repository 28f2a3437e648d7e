"""The fake ComfyUI's file routes: POST /upload/image and GET /view, with ComfyUI 0.3.64's guards."""

from __future__ import annotations

import io
import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField
from PIL import Image

FOLDER_TYPES = ("input", "temp", "output")
_ANNOTATIONS = ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp"))
_NEVER_INLINE = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


def upload(post: Mapping[str, Any], dirs: dict[str, Path]) -> web.Response:
    """server.image_upload: store the file; without overwrite, 'name (1).png' unless the bytes are the same."""
    kind = post.get("type")
    if kind is None:
        kind = "input"
    elif kind not in FOLDER_TYPES:  # ComfyUI's get_dir_by_type fails on an unknown type: a plain 500
        raise UnboundLocalError("cannot access local variable 'type_dir' where it is not associated with a value")
    upload_dir = str(dirs[str(kind)])
    image = post.get("image")
    if not isinstance(image, FileField) or not image.file:
        return web.Response(status=400)
    filename = image.filename
    if not filename:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return web.Response(status=400)
    os.makedirs(folder, exist_ok=True)
    data = image.file.read()
    stem, suffix = os.path.splitext(filename)
    duplicate = False
    if post.get("overwrite") not in ("true", "1"):
        counter = 1
        while os.path.exists(filepath):
            if Path(filepath).read_bytes() == data:  # the same image again: keep the one there, same name
                duplicate = True
                break
            filename = f"{stem} ({counter}){suffix}"
            filepath = os.path.join(folder, filename)
            counter += 1
    if not duplicate:
        Path(filepath).write_bytes(data)
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})


def view(query: Mapping[str, str], dirs: dict[str, Path]) -> web.StreamResponse:
    """server.view_image: 400 bad name/type, 403 subfolder escaping the folder, 404 missing; else the file."""
    if "filename" not in query:
        return web.Response(status=404)
    filename, base = query["filename"], None
    for suffix, kind in _ANNOTATIONS:  # folder_paths.annotated_filepath: 'x.png [output]'
        if filename.endswith(suffix.strip()):
            filename, base = filename[: -len(suffix)], str(dirs[kind])
            break
    if not filename or filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    if base is None:
        kind = query.get("type", "output")
        base = str(dirs[kind]) if kind in FOLDER_TYPES else None
    if base is None:
        return web.Response(status=400)
    if "subfolder" in query:
        full = os.path.join(base, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full), base)) != base:
            return web.Response(status=403)
        base = full
    filename = os.path.basename(filename)
    path = os.path.join(base, filename)
    if not os.path.isfile(path):
        return web.Response(status=404)
    headers = {"Content-Disposition": f'filename="{filename}"'}
    raw_channel = query.get("channel", "")
    if "preview" in query or raw_channel in ("rgb", "a"):
        return _converted(path, query.get("preview"), raw_channel, headers)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type in _NEVER_INLINE:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={**headers, "Content-Type": content_type})


def _converted(path: str, preview: str | None, channel: str, headers: dict[str, str]) -> web.Response:
    """/view?preview=webp;90 or ?channel=rgb|a: the image re-encoded, as ComfyUI does."""
    buffer = io.BytesIO()
    with Image.open(path) as image:
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            picture = image.convert("RGB") if fmt == "jpeg" or channel == "rgb" else image
            picture.save(buffer, format=fmt, quality=quality)
            return web.Response(body=buffer.getvalue(), content_type=f"image/{fmt}", headers=headers)
        if channel == "rgb":
            image.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = image.getchannel("A") if image.mode == "RGBA" else Image.new("L", image.size, 255)
            out = Image.new("RGBA", image.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return web.Response(body=buffer.getvalue(), content_type="image/png", headers=headers)
