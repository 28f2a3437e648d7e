"""What the job API's routes share: error bodies and their OpenAPI entries, text checks, and who a request acts for.

Kept apart from jobs.py so the prompt routes (prompts.py) and the job routes use the same helpers without
importing each other.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from atelier.tools.accounts.models import Principal
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.catalog import require_workflow_name
from atelier.tools.inputs import resolve_input
from atelier.tools.schemas import GenerationParams, check_storable
from atelier.tools.settings import Settings

__all__ = ["ApiError", "ErrorResponse", "ValidationIssue", "check_storable", "confine", "error_responses",
           "owner_for"]


class ValidationIssue(BaseModel):
    """One problem with a request, as FastAPI reports request validation failures."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ApiError(BaseModel):
    """Every error answer: `detail` is a message naming the fix, or (a malformed request) a list of issues."""

    detail: str | list[ValidationIssue]


_ERROR_TEXT = {
    400: "The body is not readable JSON, or the request cannot be carried out (the message says why)",
    404: "No such job (or image, preview frame, prompt, prompt version, A/B test or showcase)",
    410: "The job's image (or the showcase's gallery) is no longer in the output store",
    422: "The request is malformed, or names an unknown workflow or values it does not accept",
    401: "No credentials, or credentials refused (malformed, unknown, expired, tampered or revoked); the message "
         "says which",
    403: "The credentials are valid but may not do this (a disabled account, or acting for another user)",
    409: "The idempotency key is already used by another owner's job: choose another key (or: the showcase's "
         "gallery is not made yet)",
    429: "A quota is used up: the message names it, its use and when it resets",
    503: "The database is away (restarting or unreachable: retry after the Retry-After header's seconds), or the "
         "memory is not available in this process (the message says why and what to install or start)",
    413: "The request body is over the server's limit (ATELIER_MAX_BODY_BYTES; ATELIER_MAX_UPLOAD_BYTES for images)",
}


# The header a 503 carries: how long to wait before asking again.
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying (the database is away)",
                                "schema": {"type": "integer", "minimum": 1}}}


def error_responses(*codes: int, database: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for these error codes, all with the `ApiError` body.

    A route that reads the database (or checks credentials, which lives there) can answer 503 while it is away, so
    503 is listed unless `database=False`."""
    wanted = (*codes, 503) if database else codes
    return {code: {"model": ApiError, "description": _ERROR_TEXT[code]} | ({"headers": _RETRY_AFTER} if code == 503
                                                                         else {})
            for code in wanted}


class ErrorResponse(JSONResponse):
    """An error body that always renders: non-ASCII is escaped, so a lone surrogate echoed from a request is too."""

    def render(self, content: Any) -> bytes:
        """Compact ASCII JSON."""
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def owner_for(principal: Principal, asked: str | None, *, default: str) -> str:
    """Whose job a request makes: an admin may name anyone (else `default` in local mode, themselves with
    accounts); a user only themselves (naming another is a 403)."""
    if principal.is_admin:
        return asked or (default if principal.via == "local" else principal.user_id)
    if asked not in (None, principal.user_id):
        raise AuthError(f"you ({principal.user_id}) cannot act for '{asked}'; leave `owner` out", status=403)
    return principal.user_id


def confine(params: GenerationParams, workflow: str | None, settings: Settings) -> GenerationParams:
    """A caller names workflows and stored input images, never server files (tools/inputs.py `resolve_input`, the
    one confinement function; a WorkflowError, 422, says how to upload instead). The ledger checks again."""
    require_workflow_name(workflow)
    if params.input_image is None:
        return params
    return params.model_copy(update={"input_image": resolve_input(params.input_image, settings).name})
