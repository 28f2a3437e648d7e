"""The root of Atelier's one exception tree: `AtelierError`, and the families of settings, workflows and ComfyUI.

Every error Atelier raises on purpose derives from AtelierError (tests/unit/test_errors.py checks it) and reads as a
message fit for a person: the problem and the fix. Each family lives beside the code that raises it:

- here: SettingsError; MissingExtraError (an optional extra is not installed: names the pip install);
  WorkflowError (InputImageError; JobRequestError in tools/ledger/models.py; FitError in tools/comfyui/fitting.py;
  DesignError in agents/design_check.py); the ComfyUI family
  ComfyUIError → ComfyUnreachableError, ComfyHTTPError, ComfyValidationError, ComfyExecutionError,
  ComfyInterruptedError, ComfyNoOutputsError, ComfyLostError;
- the ledger (tools/ledger/): JobNotFoundError, IdempotencyKeyTakenError, LeaseLostError, LedgerUnavailableError
  (store.py), DatabaseError/DatabaseInUseError (database.py), NotificationsClosedError (notifications.py),
  ImageNotFoundError, ImageGoneError (service.py);
- the user's models config (tools/models_config.py): ModelsConfigError;
- the worker (tools/worker/runner.py): JobTimeLimitError; outputs (tools/outputs/store.py): OutputStoreError;
  intake (tools/intake/batch.py): BatchFileError;
- accounts (tools/accounts/): AuthError (401/403, tokens.py), AccountError (directory.py), QuotaExceededError
  (quotas.py);
- prompts (tools/prompts/): PromptTemplateError (templating.py), SandboxLimitError (sandbox.py), RendererError
  (rendering.py), PromptNotFoundError, NotTheAuthorError, PromptNameTakenError (library.py), ABTestError,
  ABTestNotFoundError (abtests.py);
- showcases (tools/showcase/models.py): ShowcaseNotFoundError, ShowcaseNotReadyError, ShowcaseGoneError;
- memory (tools/memory/): DocumentError, EmbedError, MemoryLockedError, EmbeddingMismatchError,
  MemoryUnavailableError;
- GPU hot-swap (tools/gpu/ollama_models.py): OllamaAdminError → OllamaUnreachableError, OllamaHTTPError;
- Ollama: LLMUnavailableError (tools/service_errors.py, which explains every client's failures the same way);
- captions (tools/vision.py): VisionError → VisionNotConfiguredError, VisionImageError, VisionModelError,
  VisionUnavailableError; UnreadableImageError (the guard every untrusted image passes before it is decoded);
- structured model answers: StructuredOutputError (agents/llm.py: a model's answer that did not fit its schema, twice);
- agents and graphs: AdminOnlyError (graphs/owner.py), GenerateRefusedError
  (graphs/generate.py) — both are ValueErrors too, so the LangGraph server shows their messages; NoImageToEditError
  (agents/image_edit.py: an edit with no image named or made in the conversation);
- front ends: LoopBridgeError → LoopBlockedError, LoopStoppedError (atelier/adapters/bridge.py, CrewAI and AutoGen
  calling tools on the studio's loop); FormError (atelier/chat/prompts_view.py, a form of the chat's Prompts tab).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MODEL_FOLDERS",
    "MODEL_SUFFIXES",
    "AtelierError",
    "ComfyExecutionError",
    "ComfyHTTPError",
    "ComfyInterruptedError",
    "ComfyLostError",
    "ComfyNoOutputsError",
    "ComfyUIError",
    "ComfyUnreachableError",
    "ComfyValidationError",
    "InputImageError",
    "MissingExtraError",
    "MissingModel",
    "NodeProblem",
    "SettingsError",
    "WorkflowError",
]

# Which ComfyUI `models/<folder>/` a loader input's file belongs in (input name → folder).
MODEL_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "model_name": "upscale_models",
    "control_net_name": "controlnet",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "unet_name": "diffusion_models",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "config_name": "configs",
    "photomaker_model_name": "photomaker",
}

# Model file extensions ComfyUI accepts in its model folders.
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".pkl", ".yaml")


class AtelierError(Exception):
    """Base of every error Atelier raises on purpose; `str(e)` is a message fit for a person."""


class SettingsError(AtelierError):
    """A setting (environment variable or .env entry) has a bad value."""


class WorkflowError(AtelierError):
    """A workflow template or user-exported workflow is malformed, ambiguous or lacks a binding."""


class InputImageError(WorkflowError):
    """An input image that is not a stored input (a path, a link, missing) or not a sane image."""


class ComfyUIError(AtelierError):
    """Base of errors that come from talking to a ComfyUI server."""


class ComfyUnreachableError(ComfyUIError):
    """ComfyUI did not answer at all (connection refused, DNS failure, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"ComfyUI at {url} is unreachable ({reason}). Start ComfyUI (python main.py --listen) "
            f"or point COMFYUI_URLS / --comfy-url at a running server."
        )


class ComfyHTTPError(ComfyUIError):
    """ComfyUI answered with an unexpected HTTP status (not a validation error)."""

    def __init__(self, url: str, status: int, body: str) -> None:
        self.url = url
        self.status = status
        self.body = body
        hint = " (ComfyUI could not parse the request body)" if status == 500 else ""
        super().__init__(f"ComfyUI at {url} answered HTTP {status}{hint}: {body[:300]}")


@dataclass(frozen=True)
class MissingModel:
    """A model file a workflow names that the ComfyUI server does not have."""

    filename: str
    folder: str
    installed: tuple[str, ...]

    def describe(self) -> str:
        """One sentence: which file is missing, where it goes, and what would fit instead."""
        where = f"ComfyUI/models/{self.folder}/"
        if self.installed:
            shown = ", ".join(self.installed[:8]) + (" …" if len(self.installed) > 8 else "")
            alternatives = f"installed {self.folder}: {shown}"
        else:
            alternatives = f"no {self.folder} are installed at all"
        return f"model file '{self.filename}' is missing: put it in {where} ({alternatives})"


@dataclass(frozen=True)
class NodeProblem:
    """One entry of ComfyUI's `node_errors`: which node, which input, and what ComfyUI said."""

    node_id: str
    class_type: str
    error_type: str
    message: str
    details: str = ""
    input_name: str | None = None
    received: object = None
    missing_model: MissingModel | None = None

    def describe(self) -> str:
        """One line naming the node, the input and the problem."""
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        if self.missing_model is not None:
            return f"{where}: {self.missing_model.describe()}"
        if self.error_type == "exception_during_validation" and self.details.strip("'\"").isdigit():
            node = self.details.strip("'\"")
            return f"{where}: links to node {node}, which is not in the workflow; reconnect or remove that link"
        detail = f" — {self.details}" if self.details and self.details not in self.message else ""
        return f"{where}: {self.message}{detail}"


def _missing_model(input_name: str, received: object, config: object) -> MissingModel | None:
    """Recognise a `value_not_in_list` that is really a model file that is not installed."""
    if not isinstance(received, str):
        return None
    folder = MODEL_FOLDERS.get(input_name)
    if folder is None and not received.lower().endswith(MODEL_SUFFIXES):
        return None
    options: list[str] = []
    if isinstance(config, list) and config:
        first = config[0]
        if isinstance(first, list):
            options = [str(o) for o in first]
        elif first == "COMBO" and len(config) > 1 and isinstance(config[1], dict):
            options = [str(o) for o in config[1].get("options", [])]
    return MissingModel(filename=received, folder=folder or "checkpoints", installed=tuple(options))


def parse_node_errors(node_errors: dict[str, object]) -> list[NodeProblem]:
    """Turn ComfyUI's `node_errors` mapping into a flat list of NodeProblem, one per error."""
    problems: list[NodeProblem] = []
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        class_type = str(entry.get("class_type", "?"))
        for err in entry.get("errors", []) or []:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info") or {}
            input_name = extra.get("input_name") if isinstance(extra, dict) else None
            received = extra.get("received_value") if isinstance(extra, dict) else None
            error_type = str(err.get("type", ""))
            missing = None
            if error_type == "value_not_in_list" and input_name:
                missing = _missing_model(str(input_name), received, extra.get("input_config"))
            problems.append(
                NodeProblem(
                    node_id=str(node_id),
                    class_type=class_type,
                    error_type=error_type,
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                    input_name=str(input_name) if input_name else None,
                    received=received,
                    missing_model=missing,
                )
            )
    return problems


class ComfyValidationError(ComfyUIError):
    """ComfyUI refused the workflow (HTTP 400): the user's error to show, with every node's problem."""

    def __init__(self, error_type: str, message: str, details: str, problems: list[NodeProblem]) -> None:
        self.error_type = error_type
        self.details = details
        self.problems = problems
        lines = [f"ComfyUI rejected the workflow: {message}" + (f" ({details})" if details else "")]
        lines += [f"  - {p.describe()}" for p in problems]
        super().__init__("\n".join(lines))

    @classmethod
    def from_response(cls, body: dict[str, object]) -> ComfyValidationError:
        """Build the error from a `POST /prompt` 400 body (`{error, node_errors}`)."""
        error = body.get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type", "invalid_prompt"))
            message = str(error.get("message", "invalid prompt"))
            details = str(error.get("details", ""))
        else:
            error_type, message, details = "invalid_prompt", str(error), ""
        raw = body.get("node_errors")
        problems = parse_node_errors(raw) if isinstance(raw, dict) else []
        return cls(error_type, message, details, problems)


class ComfyExecutionError(ComfyUIError):
    """A node raised while ComfyUI executed the prompt."""

    def __init__(
        self,
        prompt_id: str,
        node_id: str,
        node_type: str,
        exception_type: str,
        exception_message: str,
        traceback: list[str] | None = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message.strip()
        self.traceback = list(traceback or [])
        super().__init__(
            f"ComfyUI failed in node {node_id} ({node_type}): {exception_type}: {self.exception_message}"
        )


class ComfyInterruptedError(ComfyUIError):
    """The prompt was interrupted (by us, by another client, or from ComfyUI's own UI)."""

    def __init__(self, prompt_id: str, node_id: str | None = None, node_type: str | None = None) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        where = f" in node {node_id} ({node_type})" if node_id else ""
        super().__init__(f"prompt {prompt_id} was interrupted{where}")


class ComfyNoOutputsError(ComfyUIError):
    """The prompt finished but produced no images: the workflow needs a SaveImage/PreviewImage node."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        super().__init__(
            f"prompt {prompt_id} finished without any image output; "
            "add a SaveImage (or PreviewImage) node fed by the decoded image"
        )


class ComfyLostError(ComfyUIError):
    """The prompt vanished from both /queue and /history (ComfyUI restarted): it will not finish."""

    def __init__(self, prompt_id: str, url: str) -> None:
        self.prompt_id = prompt_id
        self.url = url
        super().__init__(
            f"prompt {prompt_id} is no longer known to ComfyUI at {url} (not queued, no history): "
            "ComfyUI probably restarted; submit it again"
        )


class MissingExtraError(AtelierError):
    """A front end's framework (an optional extra of the distribution) cannot be imported: one line naming the
    `pip install` that adds it (and the missing module, when it is one of the framework's own dependencies)."""

    def __init__(self, extra: str, framework: str, package: str, error: ImportError) -> None:
        self.extra = extra
        self.framework = framework
        missing = (error.name or "").split(".")[0]
        if not isinstance(error, ModuleNotFoundError):  # installed, but not a version we can import
            problem = f"cannot be imported ({error})"
        elif missing and missing != package:
            problem = f"is not installed completely (its module {missing!r} is missing)"
        else:
            problem = "is not installed"
        super().__init__(f"{framework} {problem}: run pip install 'comfy-atelier[{extra}]'")
