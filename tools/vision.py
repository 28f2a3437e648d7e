"""Captions of images by an Ollama vision model (ATELIER_VISION_MODEL): checked, shrunk, then described.

What is sent: Ollama's `/api/chat` with the image in the user message (`"images": ["<base64>"]`). It goes through
langchain-ollama's ChatOllama, the client the agents already use: given a message with a text block and an image
block, it sends exactly that (`{"role": "user", "content": "…", "images": ["<base64>"]}`, streamed as it always
streams; tests/unit/test_vision.py holds it to that on the fake Ollama), so one client and one set of failures
serve every call Atelier makes to Ollama, and no second client is written by hand. (Its quirks, harmless here: the
text arrives after a newline, and the `ollama` library first tries an image string as a file path — only base64
of a PNG made here is ever passed.)

Before anything is sent, an image is checked where it enters: at most ATELIER_MAX_UPLOAD_BYTES, a PNG, JPEG or WebP
(or anything else Pillow reads) that decodes, and not a decompression bomb (`open_image`, the one guard the memory's
colour layout uses too: the pixel count is read from the header and refused over ATELIER_MAX_IMAGE_PIXELS before
a pixel is decoded). It is then turned upright (EXIF), shrunk to at most `max_side` pixels on its longest side and
sent as a PNG, so a 40-megapixel photo costs the model what a 1-megapixel one does. Every wait on Ollama (connect,
each streamed read) has a timeout.

Failures are typed (VisionError and its kinds: not configured, a refused image, a model that is missing or cannot
see, Ollama down or slow), each naming the fix. Callers for whom a caption is optional (the drop zone, the memory's
indexer) use `caption_or_skip`, which never raises for a caption problem and says why there is none.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from atelier.tools.comfyui.template_models import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.schemas import MAX_PROMPT_CHARS
from atelier.tools.settings import Settings

__all__ = [
    "CAPTION_PROMPT",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_CAPTION_CHARS",
    "MAX_SIDE",
    "NOT_CONFIGURED",
    "Caption",
    "CaptionAttempt",
    "PreparedImage",
    "UnreadableImageError",
    "VisionError",
    "VisionImageError",
    "VisionModelError",
    "VisionNotConfiguredError",
    "VisionStatus",
    "VisionUnavailableError",
    "caption_image",
    "caption_or_skip",
    "open_image",
    "prepare_image",
    "prompt_with_caption",
    "vision_status",
    "why_not_captioned",
]

CAPTION_PROMPT = "Describe this image in one sentence: subject, style, colours and composition."
# The longest side of what the model is sent; vision encoders work at 336–1024 px, so more only costs time.
MAX_SIDE = 1024
# A cold vision model loads several GB before it answers; this bounds each wait on Ollama.
DEFAULT_TIMEOUT_SECONDS = 120.0
# A caption is one sentence; a model that rambles is cut here (it becomes part of prompts and search text).
MAX_CAPTION_CHARS = 600
NOT_CONFIGURED = "ATELIER_VISION_MODEL is not set"
_SET_IT = "set it to an Ollama vision model (e.g. `ollama pull llava`, then ATELIER_VISION_MODEL=llava)"
# What Ollama answers when the model has no vision projector: llama-server's refusal (Ollama ≥ 0.30), the older
# engine's, and llama-server's /completion wording.
_CANNOT_SEE = ("image input is not supported", "missing data required for image input",
               "does not support multimodal")


class VisionError(AtelierError):
    """No caption: why, and what to do about it."""


class VisionNotConfiguredError(VisionError):
    """ATELIER_VISION_MODEL is not set, so nothing is captioned."""


class VisionImageError(VisionError):
    """The image was refused before any call: too many bytes, not an image, damaged, or a decompression bomb."""


class VisionModelError(VisionError):
    """The vision model is not pulled, cannot see images, or answered nothing."""


class VisionUnavailableError(VisionError):
    """Ollama is unreachable, failed, or did not answer in time."""


class UnreadableImageError(AtelierError):
    """Bytes that are not an image Atelier will decode: not an image, damaged, or a decompression bomb."""


# --- the image -----------------------------------------------------------------------------------------------------


def open_image(data: bytes, *, max_pixels: int | None = None, draft_side: int | None = None) -> Image.Image:
    """The decoded image (the caller closes it); UnreadableImageError for anything else.

    A decompression bomb — more than `max_pixels` (or than Pillow's own limit) by its header — is refused before
    its pixels are decoded. `draft_side` lets a JPEG decode at a reduced scale that still covers that many pixels.
    """
    image: Image.Image | None = None
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        limits = [n for n in (max_pixels, Image.MAX_IMAGE_PIXELS) if n]
        if limits and width * height > min(limits):
            raise UnreadableImageError(
                f"a decompression bomb: {width}×{height} pixels, over the limit of {min(limits):,} "
                "(ATELIER_MAX_IMAGE_PIXELS); its pixels are not read")
        if draft_side and image.format == "JPEG":
            image.draft("RGB", (draft_side, draft_side))
        image.load()
    except UnreadableImageError:
        _close(image)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _close(image)
        raise UnreadableImageError(f"a decompression bomb ({exc}); its pixels are not read") from None
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(f"not an image Pillow can read ({exc}); use a PNG, JPEG or WebP file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        _close(image)
        raise UnreadableImageError(f"a damaged image ({exc or type(exc).__name__}); generate it again") from exc
    return image


def _close(image: Image.Image | None) -> None:
    """Close a half-opened image, if any."""
    if image is not None:
        image.close()


@dataclass(frozen=True)
class PreparedImage:
    """What is sent: a PNG of at most `max_side` on its longest side, and the sizes before and after."""

    png: bytes
    width: int
    height: int
    sent_width: int
    sent_height: int

    @property
    def base64(self) -> str:
        """The PNG as Ollama's `images` entries carry it."""
        return base64.b64encode(self.png).decode("ascii")


def prepare_image(data: bytes, settings: Settings, *, max_side: int = MAX_SIDE) -> PreparedImage:
    """Check an image where it enters and shrink it for the model (VisionImageError saying what is wrong)."""
    if not data:
        raise VisionImageError("the image is empty: nothing to caption")
    if len(data) > settings.max_upload_bytes:
        raise VisionImageError(f"the image has {len(data):,} bytes, over the limit of {settings.max_upload_bytes:,} "
                               "(ATELIER_MAX_UPLOAD_BYTES): it is not sent to the vision model")
    try:
        image = open_image(data, max_pixels=settings.max_image_pixels, draft_side=max_side)
    except UnreadableImageError as exc:
        raise VisionImageError(f"the image is not captioned: {exc}") from None
    with image:
        width, height = image.size
        upright = ImageOps.exif_transpose(image)
        picture = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
        if max(picture.size) > max_side:
            picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        sent_width, sent_height = picture.size
    return PreparedImage(buffer.getvalue(), width, height, sent_width, sent_height)


# --- the call ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caption:
    """A vision model's description of one image, and what it saw (the original and the sent size)."""

    text: str
    model: str
    width: int
    height: int
    sent_width: int
    sent_height: int

    def record(self) -> dict[str, Any]:
        """The caption as the ledger and the drop zone record it."""
        return {"caption": self.text, "model": self.model, "width": self.width, "height": self.height}


def _clean(text: str) -> str:
    """One line, at most MAX_CAPTION_CHARS (cut at a word)."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) <= MAX_CAPTION_CHARS:
        return line
    return line[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (each once)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _explain(exc: BaseException, model: str, url: str, timeout: float) -> VisionError:
    """Our error for a failed call: the model missing or blind, Ollama down, slow or failing."""
    from ollama import ResponseError

    for error in _chain(exc):
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return VisionUnavailableError(f"the vision model {model!r} on Ollama at {url} did not answer within "
                                          f"{timeout:g} s; check `ollama ps`, or use a smaller vision model")
        if isinstance(error, httpx.ConnectError | ConnectionError):
            return VisionUnavailableError(f"Ollama at {url} is unreachable: start it (`ollama serve`) or fix "
                                          "OLLAMA_URL")
        if isinstance(error, ResponseError):
            text = str(error.error)
            if error.status_code == 404 or "not found" in text.lower():
                return VisionModelError(f"the vision model {model!r} is not pulled into Ollama at {url}: run "
                                        f"`ollama pull {model}` or set ATELIER_VISION_MODEL to one you have")
            if any(words in text for words in _CANNOT_SEE) or "does not support chat" in text:
                return VisionModelError(f"the model {model!r} cannot see images (it has no vision capability): "
                                        "set ATELIER_VISION_MODEL to a vision model such as llava or qwen2.5vl")
            return VisionUnavailableError(f"Ollama at {url} failed to caption with {model!r} "
                                          f"(HTTP {error.status_code}: {text[:300]})")
    return VisionUnavailableError(f"captioning with {model!r} failed: {type(exc).__name__}: {str(exc)[:300]}")


def caption_image(data: bytes, settings: Settings, *, model: str | None = None, prompt: str = CAPTION_PROMPT,
                  max_side: int = MAX_SIDE, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Caption:
    """The vision model's one-sentence caption of an image (blocking; VisionError saying why there is none)."""
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama

    name = model or settings.vision_model
    if not name:
        raise VisionNotConfiguredError(f"{NOT_CONFIGURED}: images are not captioned; {_SET_IT}")
    image = prepare_image(data, settings, max_side=max_side)
    llm = ChatOllama(model=name, base_url=settings.ollama_url, temperature=0.0,
                     client_kwargs={"timeout": timeout_seconds})
    message = HumanMessage(content=[{"type": "text", "text": prompt},
                                    {"type": "image", "base64": image.base64, "mime_type": "image/png"}])
    try:
        reply = llm.invoke([message])
    except Exception as exc:  # every client failure becomes one of ours, naming the fix
        raise _explain(exc, name, settings.ollama_url, timeout_seconds) from exc
    text = _clean(reply.text)
    if not text:
        raise VisionModelError(f"the vision model {name!r} answered with no caption; try another vision model")
    return Caption(text, name, image.width, image.height, image.sent_width, image.sent_height)


@dataclass(frozen=True)
class CaptionAttempt:
    """A caption, or why there is none (`skipped`): what callers for whom a caption is optional record."""

    caption: Caption | None = None
    skipped: str | None = None
    unavailable: bool = False  # Ollama was down or slow: the next images may wait before trying again

    @property
    def text(self) -> str | None:
        """The caption's text, None when skipped."""
        return self.caption.text if self.caption is not None else None

    def record(self) -> dict[str, Any]:
        """{"caption", "model", …} or {"skipped": reason}."""
        return self.caption.record() if self.caption is not None else {"skipped": self.skipped}


def caption_or_skip(data: bytes, settings: Settings, *, model: str | None = None, max_side: int = MAX_SIDE,
                    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> CaptionAttempt:
    """`caption_image`, but a caption problem (unset, refused image, model, Ollama) is a reason, never a raise."""
    if not settings.vision_model and not model:
        return CaptionAttempt(skipped=NOT_CONFIGURED)
    try:
        return CaptionAttempt(caption=caption_image(data, settings, model=model, max_side=max_side,
                                                    timeout_seconds=timeout_seconds))
    except VisionError as exc:
        return CaptionAttempt(skipped=str(exc), unavailable=isinstance(exc, VisionUnavailableError))


# --- captions in prompts ---------------------------------------------------------------------------------------------


def why_not_captioned(template: WorkflowTemplate) -> str | None:
    """Why an input image for this workflow is not worth a caption (None when it is): the workflow takes no prompt
    (an upscaler), or it edits from an instruction and its model reads the image itself."""
    if "prompt" not in template.bindings:
        return f"workflow '{template.name}' takes no prompt"
    if template.catalog is not None and "image_edit" in template.catalog.use_cases:
        return f"workflow '{template.name}' edits from an instruction and its model reads the image itself"
    return None


def prompt_with_caption(caption: str | None, instruction: str) -> str:
    """An input image's img2img prompt: what the vision model saw, then the person's prompt (or a default
    instruction); the instruction alone when there is no caption or both would not fit in one prompt."""
    if not caption:
        return instruction
    combined = f"{caption.rstrip(' .')}, {instruction}"
    return combined if len(combined) <= MAX_PROMPT_CHARS else instruction


# --- the doctor's look -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionStatus:
    """Whether captions can be made: the model set, Ollama answering, the model pulled and able to see images."""

    model: str | None
    reachable: bool = False
    pulled: bool = False
    capabilities: list[str] | None = None
    problem: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def configured(self) -> bool:
        """Whether ATELIER_VISION_MODEL is set."""
        return bool(self.model)

    @property
    def ready(self) -> bool:
        """Set, pulled, and vision-capable (or Ollama too old to say)."""
        return self.configured and self.pulled and self.problem is None


def _matches(name: str, entry: dict[str, Any]) -> bool:
    """Whether an /api/tags entry is the model `name` (`llava` is `llava:latest`), as Ollama resolves names."""
    wanted = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    return any(str(entry.get(key, "")).lower() in (name.lower(), wanted.lower()) for key in ("model", "name"))


async def vision_status(settings: Settings, *, timeout: float = 5.0,
                        transport: httpx.AsyncBaseTransport | None = None) -> VisionStatus:
    """Ask Ollama whether ATELIER_VISION_MODEL is pulled and lists the "vision" capability."""
    name = settings.vision_model
    if not name:
        return VisionStatus(None, details=[f"{NOT_CONFIGURED}: dropped and generated images are not captioned "
                                           f"({_SET_IT})"])
    url = settings.ollama_url
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport) as http:
            tags = (await http.get("/api/tags")).json().get("models") or []
            entry = next((m for m in tags if isinstance(m, dict) and _matches(name, m)), None)
            if entry is None:
                return VisionStatus(name, reachable=True, problem=(
                    f"{name!r} is not pulled into Ollama at {url}: run `ollama pull {name}` or set "
                    "ATELIER_VISION_MODEL to a model you have"))
            shown = await http.post("/api/show", json={"model": name})
            body = shown.json() if shown.status_code == 200 else {}
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return VisionStatus(name, problem=f"Ollama at {url} is unreachable ({type(exc).__name__}): start it "
                                          "(`ollama serve`) or fix OLLAMA_URL")
    listed = body.get("capabilities") if isinstance(body, dict) else None
    capabilities = listed if isinstance(listed, list) else entry.get("capabilities")
    tag = str(entry.get("model") or entry.get("name") or name)
    if not isinstance(capabilities, list):
        return VisionStatus(name, True, True, None, details=[
            f"{tag} pulled; this Ollama does not report capabilities, so whether it sees images is unknown"])
    caps = [str(c) for c in capabilities]
    if "vision" not in caps:
        return VisionStatus(name, True, True, caps, problem=(
            f"{tag} cannot see images (capabilities: {', '.join(caps) or 'none'}): set ATELIER_VISION_MODEL to a "
            "vision model such as llava or qwen2.5vl"))
    return VisionStatus(name, True, True, caps, details=[
        f"{tag} pulled, vision-capable (capabilities: {', '.join(caps)}); dropped and generated images are "
        "captioned"])
