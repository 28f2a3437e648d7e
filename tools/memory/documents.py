"""Documents into chunks: Markdown, text and PDF, split by langchain-text-splitters, hashed per chunk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from atelier.tools.errors import AtelierError
from atelier.tools.memory.records import DocumentChunk

__all__ = ["SUFFIXES", "DocumentError", "chunk_file", "find_documents"]

SUFFIXES: dict[str, str] = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
                            ".rst": "text", ".pdf": "pdf"}
CHUNK_SIZE, CHUNK_OVERLAP = 800, 120


class DocumentError(AtelierError):
    """A path that cannot be ingested."""


def find_documents(paths: Iterable[Path]) -> list[Path]:
    """Files to ingest: the given files, and supported files under given folders (sorted)."""
    found: list[Path] = []
    for path in paths:
        path = path.expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DocumentError(f"{path}: unsupported file type; ingest {', '.join(sorted(SUFFIXES))} files")
            found.append(path)
        else:
            raise DocumentError(f"{path} does not exist")
    return found


def _pages(path: Path) -> Iterator[tuple[int | None, str]]:
    """(page number or None, text) of a file."""
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(str(path))
            for number, page in enumerate(reader.pages, start=1):
                yield number, page.extract_text() or ""
        except PdfReadError as exc:
            raise DocumentError(f"{path}: not a readable PDF ({exc})") from exc
        return
    try:
        yield None, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not UTF-8 text ({exc.reason}); convert it or ingest a PDF") from exc


def _title(path: Path, text: str) -> str:
    """The first Markdown heading, else the file name."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip() or path.stem
    return path.stem


def chunk_file(path: Path, owner: str) -> list[DocumentChunk]:
    """Split one file into chunks with a content hash each; empty files give none."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "markdown":
        splitter = RecursiveCharacterTextSplitter.from_language(Language.MARKDOWN, chunk_size=CHUNK_SIZE,
                                                                chunk_overlap=CHUNK_OVERLAP)
    else:
        splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)
    chunks: list[DocumentChunk] = []
    seen: set[str] = set()
    title: str | None = None
    source = str(path.expanduser().resolve())
    for page, text in _pages(path):
        title = title or _title(path, text)
        for piece in splitter.split_text(text):
            if not piece.strip():
                continue
            digest = hashlib.sha256(f"{source}\n{piece}".encode()).hexdigest()
            if digest in seen:  # the same passage twice in one file is stored once
                continue
            seen.add(digest)
            chunks.append(DocumentChunk(text=piece, owner=owner, source=source, title=title, chunk=len(chunks),
                                        content_hash=digest, page=page))
    return chunks
