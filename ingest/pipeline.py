"""One ingestion run: a folder in, the index brought in line with it.

A document's identity is its path relative to the folder; its version is the sha256 of
its bytes. Unchanged files cost nothing but a read and a hash. New and changed files are
parsed, chunked and embedded with the store closed; their points are then written in
short critical sections, each document as one upsert followed by the removal of its
other versions. A file that fails is reported and skipped, and its indexed version, if
any, is kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qdrant_edge import FieldCondition, Filter, MatchValue, UpdateOperation

from assistant import sparse
from assistant.embedder import Embedder
from assistant.settings import EVERYONE, Settings
from assistant.store import Store, document_filter
from ingest.chunker import Chunk, Chunker
from ingest.parsers import ParseError, parse, supported

log = logging.getLogger(__name__)
_ID_NAMESPACE = uuid.UUID("8d0f5a52-5a8e-4c55-9f0c-1f6a3b1e7a11")
WRITE_BATCH = 512  # points per critical section


class IngestError(RuntimeError):
    """The run as a whole cannot proceed (bad folder, index problem)."""


@dataclass
class Summary:
    root: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    files_seen: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.root}: {self.added} added, {self.updated} updated, {self.unchanged} "
            f"unchanged, {self.deleted} deleted, {len(self.failed)} failed; "
            f"{self.chunks_embedded} chunks embedded in {self.seconds:.1f} s"
        )


def chunk_id(root: str, source: str, doc_hash: str, n: int) -> str:
    """Stable: the same bytes at the same place always give the same ids."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{root}\x00{source}\x00{doc_hash}\x00{n}"))


def walk(root: Path) -> Iterator[Path]:
    """Supported files under root, sorted, hidden entries skipped, directory symlinks not
    followed (no loops)."""
    for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if not name.startswith(".") and supported(path):
                yield path


def _read_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied; give the ingestion user read access"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return f"cannot be read ({exc.strerror or exc.__class__.__name__})"


class Ingestor:
    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings.embed_model_dir, settings.embed_batch_size)
        self.store = Store(settings.data_dir, settings.lock_timeout)
        self._chunker: Chunker | None = None
        self._pending: list[UpdateOperation] = []
        self._pending_points = 0

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(
                self.embedder.count_tokens, self.settings.chunk_size, self.settings.chunk_overlap
            )
        return self._chunker

    def run(self, folder: Path, on_file: Callable[[str], None] | None = None) -> Summary:
        started = time.monotonic()
        root_path = Path(folder).expanduser()
        if not root_path.is_dir():
            raise IngestError(f"{folder} is not a folder; give the folder of documents to index")
        root_path = root_path.resolve()
        root = str(root_path)
        summary = Summary(root=root)
        self.store.ensure(self.embedder.stamp)
        indexed = self.store.manifest(root)
        seen: set[str] = set()
        limit = int(self.settings.max_file_mb * 1024 * 1024)
        for path in walk(root_path):
            source = path.relative_to(root_path).as_posix()
            seen.add(source)
            summary.files_seen += 1
            if on_file:
                on_file(source)
            try:
                size = path.stat().st_size
                if size > limit:
                    raise ParseError(
                        f"{size / 2**20:.0f} MB is over the {self.settings.max_file_mb:g} MB "
                        "limit (TAIMATSU_MAX_FILE_MB)"
                    )
                data = path.read_bytes()
            except ParseError as exc:
                summary.failed.append({"source": source, "error": str(exc)})
                continue
            except OSError as exc:
                summary.failed.append({"source": source, "error": _read_error(exc)})
                continue
            doc_hash = hashlib.sha256(data).hexdigest()
            versions = indexed.get(source, set())
            if versions == {doc_hash}:
                summary.unchanged += 1
                continue
            if doc_hash in versions:  # an interrupted replacement: keep this one only
                self._queue_cleanup(root, source, doc_hash)
                summary.unchanged += 1
                continue
            try:
                chunks = self.chunker.chunks(parse(path, data))
            except ParseError as exc:
                summary.failed.append({"source": source, "error": str(exc)})
                continue
            except Exception as exc:  # a parser bug must not stop the run
                log.exception("parser crashed on %s", source)
                summary.failed.append(
                    {"source": source, "error": f"could not be parsed ({exc.__class__.__name__})"}
                )
                continue
            if not chunks:
                summary.failed.append({"source": source, "error": "no text found"})
                continue
            self._queue_document(root, source, doc_hash, chunks, path.suffix.lower())
            summary.chunks_embedded += len(chunks)
            if versions:
                summary.updated += 1
            else:
                summary.added += 1
            if self._pending_points >= WRITE_BATCH:
                self._flush()
        for source in sorted(set(indexed) - seen):
            gone = document_filter(root, source)
            self._pending.append(UpdateOperation.delete_points_by_filter(gone))
            summary.deleted += 1
        self._flush()
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def _queue_document(
        self, root: str, source: str, doc_hash: str, chunks: list[Chunk], kind: str
    ) -> None:
        texts = [chunk.embed_text for chunk in chunks]
        vectors = self.embedder.embed(texts)
        points = []
        for n, (chunk, text, vector) in enumerate(zip(chunks, texts, vectors, strict=True)):
            payload = {
                "root": root,
                "source": source,
                "doc_hash": doc_hash,
                "chunk": n,
                "chunks": len(chunks),
                "page": chunk.page,
                "section": chunk.section,
                "text": chunk.text,
                "kind": kind.lstrip("."),
                "groups": [EVERYONE],
            }
            points.append(
                Store.point(
                    chunk_id(root, source, doc_hash, n),
                    vector.tolist(),
                    sparse.embed_document(text),
                    payload,
                )
            )
        # one upsert per document, then its other versions go: a document is replaced whole
        self._pending.append(UpdateOperation.upsert_points(points))
        self._queue_cleanup(root, source, doc_hash)
        self._pending_points += len(points)

    def _queue_cleanup(self, root: str, source: str, keep_hash: str) -> None:
        stale = document_filter(root, source)
        stale = Filter(
            must=stale.must,
            must_not=[FieldCondition(key="doc_hash", match=MatchValue(value=keep_hash))],
        )
        self._pending.append(UpdateOperation.delete_points_by_filter(stale))

    def _flush(self) -> None:
        self.store.apply(self._pending)
        self._pending = []
        self._pending_points = 0
