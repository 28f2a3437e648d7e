"""Process settings (URLs, paths, secrets) read once from the environment and an optional `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from atelier.tools.errors import SettingsError

__all__ = ["Settings", "default_data_dir", "load_settings"]


def default_data_dir() -> Path:
    """Where Atelier keeps its data when ATELIER_DATA_DIR is unset (outside the source tree)."""
    return Path.home() / ".local" / "share" / "atelier"


def _check_url(value: str) -> str:
    """Validate an http(s) URL and strip any trailing slash."""
    text = value.strip().rstrip("/")
    if not text.startswith(("http://", "https://")) or len(text) <= len("https://"):
        raise ValueError(f"{value!r} is not an http(s) URL; write it like http://localhost:8188")
    return text


class Settings(BaseSettings):
    """Every URL, path and secret Atelier uses; each field names the environment variable it reads."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    comfyui_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:8188"],
        validation_alias=AliasChoices("COMFYUI_URLS", "COMFYUI_URL"),
        description="ComfyUI servers, comma-separated (COMFYUI_URLS, or one in COMFYUI_URL).",
    )
    ollama_url: str = Field("http://localhost:11434", validation_alias="OLLAMA_URL")
    qdrant_url: str | None = Field(None, validation_alias="QDRANT_URL")
    qdrant_api_key: SecretStr | None = Field(None, validation_alias="QDRANT_API_KEY")
    memory_backend: Literal["auto", "postgres", "qdrant"] = Field(
        "auto", validation_alias="ATELIER_MEMORY",
        description="Where the memory lives: postgres (pgvector in Atelier's own database, every process shares it), "
                    "qdrant (the server at QDRANT_URL), or auto (qdrant when QDRANT_URL is set, else postgres).",
    )
    memory_pool_size: int = Field(
        4, ge=1, le=64, validation_alias="ATELIER_MEMORY_POOL_SIZE",
        description="Connections one process keeps to PostgreSQL for the memory (pgvector backend).",
    )
    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="ATELIER_DATA_DIR")
    output_dir: Path | None = Field(None, validation_alias="ATELIER_OUTPUT_DIR")
    workflows_dir: Path | None = Field(None, validation_alias="ATELIER_WORKFLOWS_DIR")
    models_config: Path | None = Field(
        None, validation_alias="ATELIER_MODELS_CONFIG",
        description="Your models_config.json (models → workflows with their figures, and routing_rules); unset: the "
                    "copy `atelier workflows import` keeps in the data folder, if any.",
    )
    default_workflow: str = Field("txt2img", validation_alias="ATELIER_DEFAULT_WORKFLOW")
    comfyui_silence_seconds: float = Field(
        30.0, gt=0, validation_alias="ATELIER_COMFYUI_SILENCE_SECONDS",
        description="No WebSocket message for this long while a prompt runs → re-check /queue and /history.",
    )
    comfyui_down_seconds: float = Field(
        300.0, gt=0, validation_alias="ATELIER_COMFYUI_DOWN_SECONDS",
        description="How long a ComfyUI that went away may stay unreachable before its prompts are given up.",
    )
    http_timeout_seconds: float = Field(30.0, gt=0, validation_alias="ATELIER_HTTP_TIMEOUT_SECONDS")
    chat_host: str = Field("127.0.0.1", validation_alias=AliasChoices("ATELIER_CHAT_HOST", "GRADIO_SERVER_NAME"))
    chat_port: int = Field(7860, ge=1, le=65535,
                           validation_alias=AliasChoices("ATELIER_CHAT_PORT", "GRADIO_SERVER_PORT"))
    chat_worker: bool = Field(True, validation_alias="ATELIER_CHAT_WORKER",
                              description="Run a ledger worker and the memory indexer inside the chat process.")
    s3_bucket: str | None = Field(
        None, validation_alias="ATELIER_S3_BUCKET",
        description="Keep job outputs in this S3-compatible bucket (MinIO, AWS, …) instead of a local folder.",
    )
    s3_endpoint_url: str | None = Field(
        None, validation_alias="ATELIER_S3_ENDPOINT_URL", description="e.g. http://minio:9000 (unset: AWS)."
    )
    s3_prefix: str = Field("atelier/", validation_alias="ATELIER_S3_PREFIX")
    s3_region: str = Field("us-east-1", validation_alias="ATELIER_S3_REGION")
    s3_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ATELIER_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ATELIER_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    s3_link_seconds: int = Field(
        3600, ge=1, le=604800, validation_alias="ATELIER_S3_LINK_SECONDS",
        description="How long a presigned output link stays valid.",
    )
    chat_model: str = Field("llama3.2", validation_alias="ATELIER_CHAT_MODEL",
                            description="Ollama chat model the agents think with.")
    approval_cost: float = Field(
        0.05, ge=0, validation_alias="ATELIER_APPROVAL_COST",
        description="A plan estimated to cost more than this waits for a person's approval.",
    )
    approval_gpu_seconds: float = Field(
        120.0, ge=0, validation_alias="ATELIER_APPROVAL_GPU_SECONDS",
        description="A plan estimated to need more GPU time than this waits for approval.",
    )
    max_hops: int = Field(8, ge=2, le=50, validation_alias="ATELIER_MAX_HOPS",
                          description="Agent hops per request before the supervisor stops a loop.")
    embed_model: str | None = Field(
        None, validation_alias="ATELIER_EMBED_MODEL",
        description="Ollama embedding model for the memory (unset: the packaged all-MiniLM-L6-v2, offline).",
    )
    vision_model: str | None = Field(
        None, validation_alias="ATELIER_VISION_MODEL",
        description="Ollama vision model (e.g. llava) that captions images: generated ones in the memory and their "
                    "jobs, dropped ones whose caption leads their img2img prompt (unset: no captions; prompts stand "
                    "in).",
    )
    reuse_threshold: float = Field(
        0.9, gt=0, le=1, validation_alias="ATELIER_REUSE_THRESHOLD",
        description="A request at least this similar to an existing image is offered that image first.",
    )
    lease_seconds: float = Field(
        30.0, ge=2, validation_alias="ATELIER_LEASE_SECONDS",
        description="A worker that sends no heartbeat for this long loses its jobs to another worker.",
    )
    max_attempts: int = Field(
        5, ge=1, validation_alias="ATELIER_MAX_ATTEMPTS",
        description="Transient failures (unreachable ComfyUI, lost prompt) a job may have before it fails.",
    )
    memory_index_attempts: int = Field(
        5, ge=1, validation_alias="ATELIER_MEMORY_INDEX_ATTEMPTS",
        description="Failed attempts to store a job's images in the memory before the indexer skips the job "
                    "(`atelier memory status --retry-skipped` tries the skipped ones again).",
    )
    memory_index_backoff_seconds: float = Field(
        5.0, gt=0, validation_alias="ATELIER_MEMORY_INDEX_BACKOFF_SECONDS",
        description="Wait before the indexer retries a job or rating it could not store; doubles at each failure.",
    )
    memory_index_backoff_max_seconds: float = Field(
        600.0, gt=0, validation_alias="ATELIER_MEMORY_INDEX_BACKOFF_MAX_SECONDS",
        description="The longest wait between the indexer's retries.",
    )
    hotswap: bool = Field(
        True, validation_alias="ATELIER_HOTSWAP",
        description="Before a job that does not fit in free VRAM, unload ComfyUI's models and idle Ollama models.",
    )
    hotswap_margin_gb: float = Field(
        0.5, ge=0, validation_alias="ATELIER_HOTSWAP_MARGIN_GB",
        description="VRAM to keep free beyond a workflow's catalog need before hot-swap stops unloading.",
    )
    ollama_gpu_peers: str = Field(
        "auto", validation_alias="ATELIER_OLLAMA_GPU_PEERS",
        description="Which ComfyUI servers share a GPU with Ollama: auto (those on OLLAMA_URL's host), none, "
                    "or their URLs, comma-separated.",
    )
    ollama_keep_alive_seconds: float = Field(
        300.0, ge=0, validation_alias="ATELIER_OLLAMA_KEEP_ALIVE_SECONDS",
        description="The Ollama server's OLLAMA_KEEP_ALIVE in seconds (how long an unused model stays loaded); "
                    "hot-swap reads how long a model has been idle from it.",
    )
    hotswap_ollama_idle_seconds: float = Field(
        60.0, ge=0, validation_alias="ATELIER_HOTSWAP_OLLAMA_IDLE_SECONDS",
        description="An Ollama model unused for this long is idle: hot-swap may unload it for an image job.",
    )
    hotswap_unload_pinned: bool = Field(
        False, validation_alias="ATELIER_HOTSWAP_UNLOAD_PINNED",
        description="Also unload Ollama models kept loaded on purpose (keep_alive -1 or longer than Ollama's default).",
    )
    affinity_seconds: float = Field(
        60.0, ge=0, validation_alias="ATELIER_AFFINITY_SECONDS",
        description="A server takes queued jobs for the models it has loaded first, while the queue's oldest job "
                    "has waited less than this (0: strict queue order).",
    )
    auth_mode: Literal["local", "accounts"] = Field(
        "local", validation_alias="ATELIER_AUTH",
        description="local: one user, no login (a personal studio); accounts: every front end asks who is calling "
                    "(API keys from `atelier users`, JWT access tokens).",
    )
    jwt_secret: SecretStr | None = Field(
        None, validation_alias="ATELIER_JWT_SECRET",
        description="Signs access tokens; unset: a secret generated once in the database, shared by its processes.",
    )
    token_ttl_seconds: int = Field(3600, ge=60, le=30 * 86400, validation_alias="ATELIER_TOKEN_TTL_SECONDS")
    # --- the trust boundary (docs/security.md) ------------------------------------------------------------------
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="ATELIER_ALLOWED_ORIGINS",
        description="Web origins (scheme://host:port, comma-separated) whose pages may call Atelier's servers; "
                    "Atelier's own chat page is always allowed. E.g. https://smith.langchain.com for Studio.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="ATELIER_ALLOWED_HOSTS",
        description="Host names (comma-separated) Atelier's servers answer to besides loopback ones "
                    "(a reverse proxy's public name); a request with another Host is refused (DNS rebinding).",
    )
    allow_unauthenticated: bool = Field(
        False, validation_alias="ATELIER_ALLOW_UNAUTHENTICATED",
        description="Let a server listen beyond loopback with ATELIER_AUTH=local (anyone who reaches it is admin).",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, validation_alias="ATELIER_MAX_BODY_BYTES",
        description="Largest HTTP request body the servers read (image uploads: ATELIER_MAX_UPLOAD_BYTES).",
    )
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, validation_alias="ATELIER_MAX_UPLOAD_BYTES",
        description="Largest input image a caller may upload.",
    )
    max_image_pixels: int = Field(
        64 * 1024 * 1024, ge=1024, validation_alias="ATELIER_MAX_IMAGE_PIXELS",
        description="Largest input image (width × height) Atelier decodes; bigger ones are refused as bombs.",
    )
    max_steps: int = Field(
        150, ge=1, le=10000, validation_alias="ATELIER_MAX_STEPS",
        description="Most sampler steps a job may ask for (a workflow's catalog `max_steps` may lower it).",
    )
    max_batch_size: int = Field(
        8, ge=1, le=64, validation_alias="ATELIER_MAX_BATCH_SIZE",
        description="Most images one job may make (a workflow's catalog `max_batch_size` may lower it).",
    )
    max_images_per_request: int = Field(
        16, ge=1, le=1000, validation_alias="ATELIER_MAX_IMAGES_PER_REQUEST",
        description="Most images one agent turn (a plan, a showcase) may queue.",
    )
    options_similar: int = Field(
        10, ge=0, le=50, validation_alias="ATELIER_OPTIONS_SIMILAR",
        description="A request for options shows this many of the most similar earlier images (integration-ideas §5).",
    )
    options_variations: int = Field(
        3, ge=0, le=16, validation_alias="ATELIER_OPTIONS_VARIATIONS",
        description="…beside this many new variations made in the same turn (at most ATELIER_MAX_IMAGES_PER_REQUEST).",
    )
    showcase_wait_seconds: float = Field(
        1800.0, gt=0, le=7 * 86400, validation_alias="ATELIER_SHOWCASE_WAIT_SECONDS",
        description="How long a showcase waits for its images (each time it runs or resumes); then the gallery is "
                    "made with the images finished and names the ones that were not.",
    )
    job_time_factor: float = Field(
        10.0, ge=1, validation_alias="ATELIER_JOB_TIME_FACTOR",
        description="A job running this many times longer than its estimate is interrupted and failed.",
    )
    job_time_floor_seconds: float = Field(
        300.0, ge=1, validation_alias="ATELIER_JOB_TIME_FLOOR_SECONDS",
        description="The shortest time limit a job gets, whatever its estimate (loading models takes a while).",
    )
    job_max_seconds: float = Field(
        3600.0, ge=1, validation_alias="ATELIER_JOB_MAX_SECONDS",
        description="The time limit of a job without an estimate (a workflow with no catalog entry).",
    )
    max_event_sockets_per_user: int = Field(
        32, ge=1, validation_alias="ATELIER_MAX_EVENT_SOCKETS_PER_USER",
        description="Open job-event WebSockets one user may hold on one server process.",
    )
    template_seconds: float = Field(
        1.0, gt=0, le=30, validation_alias="ATELIER_TEMPLATE_SECONDS",
        description="Time budget for rendering one prompt template (a hostile template is refused after it).",
    )

    @field_validator("models_config", "workflows_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        """An empty variable (`ATELIER_MODELS_CONFIG=`) means unset, not the current folder."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("comfyui_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> list[str]:
        """Accept a comma-separated string (or a list) and validate every URL in it."""
        items = value.split(",") if isinstance(value, str) else list(value)
        urls = [_check_url(str(item)) for item in items if str(item).strip()]
        if not urls:
            raise ValueError("no URL given; give at least one URL, e.g. http://localhost:8188")
        return list(dict.fromkeys(urls))

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> list[str]:
        """Comma-separated web origins, each scheme://host[:port] without a path."""
        items = value.split(",") if isinstance(value, str) else list(value or [])
        origins = []
        for item in (str(i).strip().rstrip("/") for i in items):
            if not item:
                continue
            if item != "*" and (not item.startswith(("http://", "https://")) or "/" in item.split("://", 1)[1]):
                raise ValueError(f"{item!r} is not a web origin; write it like https://studio.example.com")
            if item == "*":
                raise ValueError("'*' would let every web page drive Atelier; list the origins instead")
            origins.append(item.lower())
        return origins

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> list[str]:
        """Comma-separated host names (no scheme, no port)."""
        items = value.split(",") if isinstance(value, str) else list(value or [])
        return [str(item).strip().lower() for item in items if str(item).strip()]

    @field_validator("ollama_gpu_peers", mode="before")
    @classmethod
    def _gpu_peers(cls, value: Any) -> str:
        """auto, none, or comma-separated ComfyUI URLs (each validated)."""
        text = str(value).strip()
        if text.lower() in ("auto", "none", ""):
            return text.lower() or "auto"
        return ",".join(_check_url(item) for item in text.split(",") if item.strip())

    @field_validator("ollama_url", "qdrant_url", "s3_endpoint_url", mode="before")
    @classmethod
    def _one_url(cls, value: Any) -> Any:
        """Validate a single service URL."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _check_url(str(value))

    @property
    def outputs(self) -> Path:
        """The folder generated images are saved in."""
        return self.output_dir or self.data_dir / "outputs"

    @property
    def workflow_dirs(self) -> list[Path]:
        """The user's workflow folders, searched after the shipped workflows (ATELIER_WORKFLOWS_DIR)."""
        return [self.workflows_dir] if self.workflows_dir else []

    @property
    def imported_models_config(self) -> Path:
        """Where `atelier workflows import` keeps the models_config.json it validated."""
        return self.data_dir / "models_config.json"

    @property
    def models_config_file(self) -> Path | None:
        """The models_config.json in force: ATELIER_MODELS_CONFIG, else an imported one, else None."""
        if self.models_config is not None:
            return self.models_config.expanduser()
        imported = self.imported_models_config
        return imported if imported.is_file() else None


def _variable_name(loc: tuple[int | str, ...]) -> str:
    """Map a pydantic error location to the environment variable the user has to fix."""
    if not loc:
        return "settings"
    name = str(loc[0])
    field = Settings.model_fields.get(name)
    if field is not None and field.validation_alias is not None:
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            return " / ".join(str(c) for c in alias.choices)
        return str(alias)
    return name.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings once; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            variable = _variable_name(tuple(err.get("loc", ())))
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            lines.append(f"{variable}: {message} (got {err.get('input')!r})")
        raise SettingsError("invalid setting — " + "; ".join(lines)) from None
