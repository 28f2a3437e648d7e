"""ComfyUI's HTTP routes as typed async calls, with transport failures turned into clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from atelier.tools.comfyui.models import QueueState, SystemStats, UploadedImage
from atelier.tools.errors import ComfyHTTPError, ComfyUnreachableError, ComfyValidationError
from atelier.tools.schemas import ImageRef

__all__ = ["ComfyREST"]


class ComfyREST:
    """Thin async wrapper of ComfyUI's REST API on one server (`/prompt`, `/queue`, `/history`, …)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), transport=transport
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; connection failures raise ComfyUnreachableError with the URL."""
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ComfyUnreachableError(self.base_url, f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ComfyUnreachableError(self.base_url, str(exc) or type(exc).__name__) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request that must answer 200 with JSON."""
        response = await self.request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyHTTPError(f"{self.base_url}{path}", response.status_code, response.text)
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyHTTPError(f"{self.base_url}{path}", 200, f"not JSON: {response.text[:200]}") from exc

    async def _ok(self, method: str, path: str, **kwargs: Any) -> None:
        """Send a request that must answer 200 (body ignored)."""
        response = await self.request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyHTTPError(f"{self.base_url}{path}", response.status_code, response.text)

    async def post_prompt(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /prompt; a 400 becomes ComfyValidationError with every node's problem."""
        response = await self.request("POST", "/prompt", json=payload)
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"type": "invalid_prompt", "message": response.text}}
            raise ComfyValidationError.from_response(body)
        if response.status_code != 200:
            raise ComfyHTTPError(f"{self.base_url}/prompt", response.status_code, response.text)
        result: dict[str, Any] = response.json()
        return result

    async def system_stats(self) -> SystemStats:
        """GET /system_stats: version and memory per device; ComfyHTTPError for an answer that is not ComfyUI's."""
        body = await self._json("GET", "/system_stats")
        try:
            if not isinstance(body, dict) or not isinstance(body.get("system"), dict):
                raise TypeError("not a JSON object with a `system` object")
            return SystemStats.from_response(body)
        except (TypeError, ValueError) as exc:  # ValueError: pydantic's ValidationError
            raise ComfyHTTPError(f"{self.base_url}/system_stats", 200,
                                 f"not ComfyUI's /system_stats: {str(body)[:200]}") from exc

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """GET /object_info (or one class): node inputs, types, defaults and installed models."""
        path = f"/object_info/{node_class}" if node_class else "/object_info"
        result: dict[str, Any] = await self._json("GET", path)
        return result

    async def models(self, folder: str) -> list[str]:
        """GET /models/{folder}: installed model files of one kind (checkpoints, loras, …)."""
        return [str(name) for name in await self._json("GET", f"/models/{folder}")]

    async def queue(self) -> QueueState:
        """GET /queue: which prompts run and wait."""
        return QueueState.from_response(await self._json("GET", "/queue"))

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /history/{id}: the finished prompt's entry, or None when ComfyUI has none."""
        body = await self._json("GET", f"/history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt: stop the running prompt (only if it is `prompt_id`, when given)."""
        await self._ok("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """POST /queue {delete}: drop prompts that have not started."""
        await self._ok("POST", "/queue", json={"delete": prompt_ids})

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models and free VRAM."""
        await self._ok("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    async def view(self, ref: ImageRef) -> bytes:
        """GET /view: the file's bytes exactly as ComfyUI saved them (metadata chunks included)."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        response = await self.request("GET", "/view", params=params)
        if response.status_code != 200:
            raise ComfyHTTPError(f"{self.base_url}/view?filename={ref.filename}", response.status_code, response.text)
        return response.content

    async def upload_image(
        self,
        image: Path | bytes,
        *,
        name: str | None = None,
        overwrite: bool = True,
        subfolder: str = "",
        image_type: str = "input",
    ) -> UploadedImage:
        """POST /upload/image: store an input image on the server for LoadImage."""
        if isinstance(image, Path):
            data, filename = image.read_bytes(), name or image.name
        else:
            data, filename = image, name or "atelier-input.png"
        form = {"overwrite": "true" if overwrite else "false", "type": image_type, "subfolder": subfolder}
        body = await self._json("POST", "/upload/image", data=form, files={"image": (filename, data)})
        return UploadedImage.model_validate(body)
