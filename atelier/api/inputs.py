"""`POST /inputs`: hand Atelier an input image (img2img, upscale, edits) as bytes; jobs then name it.

The body is the image itself (`Content-Type: image/png`, `image/jpeg` or `image/webp`) or a multipart form with
a `file` field. The image is checked (format, size, pixel count, a damaged file) and kept in the inputs store
under its content hash; the answer's `name` is what `params.input_image` takes. Nothing else is ever read
from the server's disk on a caller's word.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from atelier.tools.accounts.models import Principal
from atelier.tools.errors import InputImageError
from atelier.tools.inputs import InputStore
from atelier.tools.settings import Settings

__all__ = ["InputView", "add_input_routes"]


class InputView(BaseModel):
    """A stored input image: give `name` as a job's `params.input_image`."""

    name: str = Field(..., examples=["3f1c…e9.png"])
    format: str
    width: int
    height: int
    bytes: int
    sha256: str


async def _body(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded bytes and file name (raw body or a multipart `file` field)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=4, max_part_size=limit) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InputImageError("the form has no `file` field; send the image as `file`, or as the raw body "
                                      "with Content-Type image/png")
            return await upload.read(limit + 1), upload.filename
    return await request.body(), None


def add_input_routes(api: FastAPI, settings: Settings, caller: Callable[..., Any],
                     errors: Callable[..., dict[int | str, dict[str, Any]]]) -> None:
    """Add `POST /inputs` (any authenticated caller)."""

    @api.post("/inputs", status_code=201, response_model=InputView, tags=["inputs"], summary="Upload an input image",
              openapi_extra={"requestBody": {"content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/webp": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}}},
              responses=errors(400, 401, 403, 413, 422))
    async def upload(request: Request, principal: Annotated[Principal, Depends(caller)]) -> InputView:
        """Check and keep the image; answer the name jobs use for it."""
        data, filename = await _body(request, settings.max_upload_bytes)
        stored = await asyncio.to_thread(InputStore(settings).put, data, filename=filename)
        return InputView(name=stored.name, format=stored.format, width=stored.width, height=stored.height,
                         bytes=stored.size, sha256=stored.sha256)
