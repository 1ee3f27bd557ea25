"""One ingestion run: a folder in, the index brought in line with it.

A document's identity is its path relative to the folder; its version is the sha256 of
its bytes. Unchanged files cost a stat: a file whose size, modification and change time
are the ones recorded with its indexed version is not read (TAIMATSU_TRUST_FILE_STAT);
any other is read and hashed, and is unchanged if its hash is. A file whose bytes are already
indexed under another path (a move or a copy) reuses those vectors. New and changed
files are parsed (in a worker process, one file ahead), chunked and embedded (in a
thread of their own, so the model embeds one batch while this thread prepares the next
and writes the last) with the index closed; their points are then
written in short critical sections, each document as one upsert followed by the removal
of its other versions. A file that fails is reported and skipped, and its indexed
version, if any, is kept. One run at a time per index (a lock file in the data folder).

A run can be cancelled (ingest/runs.py: a request in the data folder, from the
administration page): before every file it looks for a request made since it was
started; then it embeds and writes what it has queued, deletes nothing,
records itself as cancelled and raises IngestCancelled. The next run finds the written
documents unchanged and does the rest. What a run holds for the whole tree is per-file
bookkeeping only (the listing's paths, the index's manifest: path, hashes and groups per
document, and the hash-to-path map); file contents and chunks are held for the file at
hand and the one read ahead, and for at most three batches of TAIMATSU_EMBED_QUEUE
chunks (the one queuing, the one embedding, the one waiting for the model).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from assistant import sparse
from assistant.embedder import Embedder, TextEmbedder, local_options
from assistant.errors import (
    IngestBusy,
    IngestCancelled,
    IngestError,
    IngestRefused,
    ParseError,
    PermissionsUnreadable,
    SourceDown,
    TaimatsuError,
)
from assistant.index import (
    ChunkPoint,
    DeleteDocument,
    DocInfo,
    Field,
    Index,
    Operation,
    SetGroups,
    SparseTerms,
    Upsert,
    open_index,
)
from assistant.served_embedder import ServedEmbedder
from assistant.settings import Settings
from ingest.chunker import Chunk, Chunker
from ingest.listing import list_folder, refuse_mass_delete, under
from ingest.owners import owner_rules
from ingest.parsing import Section, parse
from ingest.parsing.isolation import ParserWorker
from ingest.permissions import Permissions, refuse_lost_rules, rules_for_folder
from ingest.remote.mirror import Mirror
from ingest.runs import (
    CancelWatch,
    live_progress,
    record_run,
    remember_source,
    source_state,
)

log = logging.getLogger(__name__)
_ID_NAMESPACE = uuid.UUID("8d0f5a52-5a8e-4c55-9f0c-1f6a3b1e7a11")
LIVE_SECONDS = 1.0  # how often a run writes its progress file


class Refresh(Protocol):
    """A remote source's copy brought up to date (ingest/remote): run under the ingestion
    lock just before the copy is ingested; what it could not fetch is in `failed`."""

    def refresh(self) -> Any: ...


@dataclass
class Summary:
    root: str
    url: str = ""  # the remote source a mirror folder copies (ingest/remote), if any
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    acl_updated: int = 0
    files_seen: int = 0
    seconds: float = 0.0
    permissions: str = ""  # the permission source in force (Permissions.describe)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted or self.failed or self.acl_updated)

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.url or self.root}: {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted, {len(self.failed)} failed, "
            f"{self.acl_updated} access changes; {self.chunks_embedded} chunks embedded, "
            f"{self.chunks_reused} reused in {self.seconds:.1f} s"
        )


def chunk_id(root: str, source: str, doc_hash: str, n: int) -> str:
    """Stable: the same bytes at the same place always give the same ids."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{root}\x00{source}\x00{doc_hash}\x00{n}"))


def display_path(relative: Path) -> str:
    """A relative path as stored text: POSIX separators; bytes that are not UTF-8 (names
    from other systems) written as \\xNN, which keeps two such names apart (U+FFFD made
    caf\\xe9.txt and caf\\xe8.txt one document)."""
    return _stored_text(relative.as_posix())


def _stored_text(raw: str) -> str:
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def source_of(path: Path, root: Path) -> str:
    """display_path(path.relative_to(root)), by cutting the string for the paths the
    listing made under root: a re-run of 100,000 files spent more time in
    Path.relative_to than in reading the index's manifest."""
    text, prefix = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    if not text.startswith(prefix):
        return display_path(path.relative_to(root))
    return _stored_text(text[len(prefix) :].replace(os.sep, "/"))


def walk(root: Path) -> Iterator[Path]:
    """Supported files under root, sorted (ingest/listing.py)."""
    yield from list_folder(root).files


def _read_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied; give the ingestion user read access"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return f"cannot be read ({exc.strerror or exc.__class__.__name__})"


Progress = Callable[[int, int, int], None]  # files done, files total, chunks embedded


@dataclass(frozen=True)
class Shard:
    """Worker `number` of `count` (1-based, "2/3"): owns the sources whose path hash
    falls to it. The split depends only on the relative path, so every worker, on any
    machine, agrees on it without talking to the others."""

    number: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            number, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard takes I/N, like 2/3, not {text!r}") from None
        if not 1 <= number <= count:
            raise ValueError(f"--shard {text}: I must be between 1 and N")
        return cls(number, count)

    def owns(self, source: str) -> bool:
        digest = hashlib.sha256(source.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.number - 1

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"


@contextmanager
def ingest_lock(settings: Settings, shard: Shard | None = None) -> Iterator[None]:
    """One ingestion run (or rebuild) per index — per shard of the sources — at a time."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    name = f"ingest-{shard.number}-of-{shard.count}.lock" if shard else "ingest.lock"
    lock = FileLock(str(settings.data_dir / name))
    try:
        lock.acquire(timeout=settings.ingest_wait)
    except Timeout:
        raise IngestBusy(
            f"another ingestion run is using the index in {settings.data_dir} "
            f"(waited {settings.ingest_wait:g} s, TAIMATSU_INGEST_WAIT); "
            "this run did nothing and the next one will catch up"
        ) from None
    try:
        yield
    finally:
        lock.release()


@dataclass
class _Read:
    """One file as read by the run: its bytes and hash, or why it could not be read, and
    whether it will need the parser (not unchanged, not a copy of an indexed file)."""

    path: Path
    data: bytes = b""
    doc_hash: str = ""
    error: str | None = None
    will_parse: bool = False
    stat: tuple[int, int, int] | None = None  # size, mtime_ns, ctime_ns when read

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.path), self.doc_hash)


def recount_keywords(index: Index) -> None:
    """Bring the keyword IDF table up to writes made outside a finished run (a cancel, a
    removal); if the index cannot be recounted now, queries count in the engine
    meanwhile (exact, slower) and the next run recounts."""
    try:
        index.refresh_keyword_counts()
    except TaimatsuError as exc:
        log.warning("the keyword table was not recounted: %s", exc)


def build_search_indexes(index: Index) -> None:
    """After a run: the vector index for what it wrote, when enough is unindexed (see
    Index.build_search_indexes). A failure costs only speed: queries search the new
    points one by one meanwhile, and the next run tries again."""
    try:
        if index.build_search_indexes():
            log.info("built the vector index of the new chunks")
    except Exception as exc:  # the engine raises bare Exceptions
        log.warning("the vector index was not built (%s); the next run tries again", exc)


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        embedder: TextEmbedder | None = None,
        index: Index | None = None,
        *,
        allow_open: bool = False,
        allow_mass_delete: bool = False,
        replaces: Index | None = None,
    ) -> None:
        """`allow_open`: rules that were in force may be gone (their documents open to
        everyone); `allow_mass_delete`: the listing may delete most of a folder's
        documents. Without them such a run stops before writing (IngestRefused).
        `replaces`: the index a rebuild into `index` will replace, which those two
        checks compare with (a rebuild over an unmounted share would drop it all)."""
        self.settings = settings
        self.replaces = replaces
        self.allow_open = allow_open
        self.allow_mass_delete = allow_mass_delete
        self.embedder = embedder or (
            Embedder(**local_options(settings))
            if settings.embed_backend == "local"
            else ServedEmbedder(settings)
        )
        self.index = index or open_index(settings)
        self._chunker: Chunker | None = None
        self._pending: list[Operation] = []
        self._pending_points = 0
        # (root, source, hash, chunks, kind, groups, file stat) of documents to embed
        self._to_embed: list[
            tuple[str, str, str, list[Chunk], str, list[str], tuple[int, int, int] | None]
        ] = []
        # batches handed to the embedding thread, oldest first, with their vectors to come
        self._in_flight: deque[tuple[Future, list]] = deque()
        self._embedding: ThreadPoolExecutor | None = None
        self._worker: ParserWorker | None = None
        self._mirror: Mirror | None = None  # the run's folder, when it copies a remote source
        self._since_ns: int | None = None  # cancel requests from then on stop the run

    @property
    def worker(self) -> ParserWorker | None:
        """The parsing process (ingest/parsing/isolation.py: a deadline and a memory limit
        per file), or None when TAIMATSU_PARSE_TIMEOUT=0 parses in-process."""
        if not self.settings.parse_timeout:
            return None
        if self._worker is None:
            self._worker = ParserWorker(self.settings.parse_timeout, self.settings.parse_memory_mb)
        return self._worker

    def _parse(self, item: _Read) -> list[Section]:
        worker = self.worker
        if worker is None:
            return parse(item.path, item.data)
        return worker.parse(item.path, item.data, key=item.key)

    def _parse_ahead(self, item: _Read | None) -> None:
        """Hand the next file to the parsing process, so that it parses while this one's
        chunks are made and embedded (files that will not be parsed are not sent)."""
        worker = self.worker
        if worker is None or item is None or not item.will_parse:
            return
        try:
            worker.submit(item.key, item.path, item.data)
        except ParseError:
            pass  # the worker died: the file is parsed again when its turn comes, and reported

    def _read(self, path: Path, info: DocInfo | None, by_hash: dict[str, str], limit: int) -> _Read:
        try:
            found = path.stat()
            stat = (found.st_size, found.st_mtime_ns, found.st_ctime_ns)
            if info is not None and self.settings.trust_file_stat:
                known = info.stats.get(stat)
                if known in info.hashes:  # the file as it was when indexed: not read
                    return _Read(path, doc_hash=known, stat=stat)
            if found.st_size > limit:
                raise ParseError(
                    f"{found.st_size / 2**20:.0f} MB is over the "
                    f"{self.settings.max_file_mb:g} MB limit (TAIMATSU_MAX_FILE_MB)"
                )
            data = path.read_bytes()
        except ParseError as exc:
            return _Read(path, error=str(exc))
        except OSError as exc:
            return _Read(path, error=_read_error(exc))
        doc_hash = hashlib.sha256(data).hexdigest()
        twin = by_hash.get(doc_hash)
        will_parse = not (info and doc_hash in info.hashes) and not (
            twin is not None and Path(twin).suffix.lower() == path.suffix.lower()
        )
        return _Read(path, data, doc_hash, will_parse=will_parse, stat=stat)

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(
                self.embedder.count_tokens, self.settings.chunk_size, self.settings.chunk_overlap
            )
        return self._chunker

    def run(
        self,
        folder: Path,
        progress: Progress | None = None,
        shard: Shard | None = None,
        remote: Refresh | None = None,
        since: float | None = None,
    ) -> Summary:
        """One run, exclusive on this index (or on this shard of the sources). `remote`:
        the source `folder` mirrors, fetched first (ingest/remote); a source that is down
        stops the run there. A cancel request made after `since` (time.time(); default:
        now, before waiting for the lock) stops it."""
        self._since_ns = int(since * 1e9) if since is not None else time.time_ns()
        with ingest_lock(self.settings, shard):
            fetched: list[dict[str, str]] = []
            try:
                if remote is not None:
                    fetched = list(remote.refresh().failed)
                summary = self.sync(folder, progress, shard)
                self.index.refresh_keyword_counts()  # the keyword IDF table, if a write staled it
            except (IngestRefused, SourceDown) as exc:  # the administration page and status
                url = str(getattr(remote, "url", "")) if remote is not None else ""
                stopped = {"root": str(folder), "refused": str(exc)}
                record_run(self.settings.data_dir, {**stopped, **({"url": url} if url else {})})
                raise
            except IngestCancelled as exc:
                recount_keywords(self.index)  # what it wrote counts now, not next run
                record_run(self.settings.data_dir, {**exc.summary, "cancelled": str(exc)})
                raise
            finally:
                self.close()
            summary.failed[:0] = fetched
            record_run(self.settings.data_dir, summary.as_json())
            build_search_indexes(self.index)  # still under the lock: one build at a time
            return summary

    def _refuse_missing(self, folder: Path, root_path: Path) -> None:
        held = 0
        if self.index.exists():
            held = len(self.index.manifest(str(root_path.resolve())))
        if held:
            raise IngestError(
                f"{folder} is not a folder now, and the index holds {held} documents from it "
                "(unmounted? moved?); nothing was deleted; mount or restore it and rerun"
            )
        raise IngestError(f"{folder} is not a folder; give the folder of documents to index")

    def close(self) -> None:
        """Stop the parsing process and the embedding thread (new ones start if the
        Ingestor is used again); a batch the thread is embedding is let finish."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._embedding is not None:
            self._embedding.shutdown(wait=True, cancel_futures=True)
            self._embedding = None
            self._in_flight.clear()

    def sync(
        self, folder: Path, progress: Progress | None = None, shard: Shard | None = None
    ) -> Summary:
        """The run itself; the caller holds `ingest_lock`. With a shard, only the sources
        it owns are added, updated or deleted."""
        root_path = Path(folder).expanduser()
        if not root_path.is_dir():
            self._refuse_missing(folder, root_path)
        root_path = root_path.resolve()
        started = time.monotonic()
        root = str(root_path)
        summary = Summary(root=root)
        # only a copy Taimatsu made names URLs: a share's own `.taimatsu-mirror/` could
        # otherwise put any link in its documents' citations
        mirrors = (self.settings.data_dir / "mirrors").resolve()
        mirror = Mirror(root_path) if root_path.is_relative_to(mirrors) else None
        summary.url = (mirror.origin if mirror is not None else None) or ""
        self._mirror = mirror if summary.url else None
        personal = owner_rules(self.settings, root_path)  # a user's own uploads
        if personal is not None:
            permissions = Permissions(self.settings, root_path, personal, mode="rules")
        else:
            permissions = Permissions(
                self.settings, root_path, rules_for_folder(self.settings, root_path)
            )
        summary.permissions = permissions.describe()
        listing = list_folder(root_path)  # before the index: an unlistable folder stops here
        everything = self.index.manifest(root)
        # a rebuild fills an empty index: the guards compare with the one it replaces
        known = self.replaces.manifest(root) if self.replaces is not None else everything
        refuse_lost_rules(
            permissions, source_state(self.settings.data_dir, root), known, self.allow_open
        )
        by_hash = {h: source for source, info in everything.items() for h in info.hashes}
        indexed = {s: i for s, i in everything.items() if shard is None or shard.owns(s)}
        files: list[Path] = []
        sources: list[str] = []
        for path in listing.files:
            source = source_of(path, root_path)
            if shard is None or shard.owns(source):
                files.append(path)
                sources.append(source)
        unlisted = [display_path(f.relative_to(root_path)) for f in listing.unlisted]
        listed = set(sources)
        doomed = sorted(s for s in set(indexed) - listed if not under(s, unlisted))
        owned = [s for s in known if shard is None or shard.owns(s)]
        lost = [s for s in owned if s not in listed and not under(s, unlisted)]
        refuse_mass_delete(root_path, len(owned), len(files), len(lost), self.allow_mass_delete)
        for folder_name in unlisted:
            summary.failed.append(
                {
                    "source": folder_name + "/",
                    "error": "this folder cannot be listed (permission denied?); "
                    "its indexed documents are kept",
                }
            )
        self.index.ensure(self.embedder.stamp)
        limit = int(self.settings.max_file_mb * 1024 * 1024)

        def read(i: int) -> _Read:
            return self._read(files[i], indexed.get(sources[i]), by_hash, limit)

        name = f"-{shard.number}-of-{shard.count}" if shard else ""
        with live_progress(self.settings.data_dir, name, root) as live:
            self._each_file(
                root_path,
                files,
                sources,
                read,
                indexed,
                by_hash,
                permissions,
                summary,
                live,
                progress,
                started,
            )
        for source in doomed:
            self._pending.append(DeleteDocument(root, source))
            summary.deleted += 1
        self._flush()
        rules = permissions.acl.origin if permissions.acl.in_force else None
        state: dict[str, object] = {"permissions": permissions.mode, "rules": rules}
        if summary.url:
            state["url"] = summary.url
        remember_source(self.settings.data_dir, root, state)
        if progress:
            progress(len(files), len(files), summary.chunks_embedded)
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def _each_file(
        self,
        root_path: Path,
        files: list[Path],
        sources: list[str],
        read: Callable[[int], _Read],
        indexed: dict[str, DocInfo],
        by_hash: dict[str, str],
        permissions: Permissions,
        summary: Summary,
        live: Progress,
        progress: Progress | None,
        started: float,
    ) -> None:
        """Every listed file in turn, its chunks embedded and written in batches; after
        each, a cancel request is looked for, and about once a second the run's progress
        file is written."""
        root = str(root_path)
        since = self._since_ns or time.time_ns() - int((time.monotonic() - started) * 1e9)
        cancel = CancelWatch(self.settings.data_dir, since)
        next_live = 0.0
        ahead: _Read | None = None
        for i, source in enumerate(sources):
            summary.files_seen += 1
            item = ahead if ahead is not None else read(i)
            ahead = read(i + 1) if i + 1 < len(files) else None
            if not item.will_parse:  # the parser is free now; a file to parse frees it later
                self._parse_ahead(ahead)
            self._one(root, item, source, indexed.get(source), by_hash, permissions, summary, ahead)
            # chunks are embedded across documents: fuller, length-sorted model batches
            if sum(len(doc[3]) for doc in self._to_embed) >= self.settings.embed_queue:
                self._submit_queued()
            if (
                self._pending_points >= self.settings.write_batch
                or len(self._pending) >= self.settings.write_batch  # access changes, repairs
            ):
                self._write_pending()  # while the model embeds the batch in flight
            waiting = self._to_embed + [doc for _, batch in self._in_flight for doc in batch]
            queued = sum(len(doc[3]) for doc in waiting)
            done = summary.files_seen - len(waiting)
            chunks = summary.chunks_embedded - queued
            if progress:  # a file is done once its chunks are embedded (or it needs none)
                progress(done, len(files), chunks)
            if time.monotonic() >= next_live:
                next_live = time.monotonic() + LIVE_SECONDS
                live(done, len(files), chunks)
            if cancel.requested():
                self._cancel(summary, len(files), started)

    def _cancel(self, summary: Summary, total: int, started: float) -> None:
        """Write what is queued, then stop the run (nothing is deleted)."""
        self._flush()
        summary.seconds = round(time.monotonic() - started, 3)
        raise IngestCancelled(
            f"the ingestion of {summary.root} was cancelled after {summary.files_seen} of "
            f"{total} files; what it indexed is kept and the next run does the rest",
            summary.as_json(),
        )

    def _one(
        self,
        root: str,
        item: _Read,
        source: str,
        info: DocInfo | None,
        by_hash: dict[str, str],
        permissions: Permissions,
        summary: Summary,
        ahead: _Read | None,
    ) -> None:
        """Bring one file's document in line; when this file is parsed, `ahead` (the
        next file) is handed to the parser as soon as it is free of this one. A file
        whose readers cannot be told is reported and keeps what the index has of it."""
        if item.error is None:
            try:
                groups = permissions.groups_for(source, item.path)
            except PermissionsUnreadable as exc:
                item.error = str(exc)
        if item.error is not None:
            summary.failed.append({"source": source, "error": item.error})
            return
        doc_hash = item.doc_hash
        versions = info.hashes if info else set()
        if info is not None and doc_hash in versions:
            if versions != {doc_hash}:  # an interrupted replacement: keep this version only
                self._pending.append(DeleteDocument(root, source, keep_hash=doc_hash))
            if sorted(info.groups) != groups:
                self._pending.append(SetGroups(root, source, groups))
                summary.acl_updated += 1
            summary.unchanged += 1
            return
        # the same bytes are indexed elsewhere (a move or a copy) and read by the same
        # parser: the parser goes by the extension (notes.txt renamed notes.md is parsed anew)
        twin = by_hash.get(doc_hash)
        if twin is not None and Path(twin).suffix.lower() == item.path.suffix.lower():
            reused = self._reuse(root, twin, source, doc_hash, groups, item.stat)
            if reused:
                summary.chunks_reused += reused
                self._count_new(summary, versions)
                return
        try:
            try:
                sections = self._parse(item)
            finally:
                if item.will_parse:
                    self._parse_ahead(ahead)
            chunks = self.chunker.chunks(sections)
        except ParseError as exc:
            summary.failed.append({"source": source, "error": str(exc)})
            return
        except Exception as exc:  # a parser bug must not stop the run
            log.exception("parser crashed on %s", source)
            reason = f"could not be parsed ({exc.__class__.__name__})"
            summary.failed.append({"source": source, "error": reason})
            return
        if not chunks:
            summary.failed.append({"source": source, "error": "no text found"})
            return
        kind = item.path.suffix.lower()
        self._queue_document(root, source, doc_hash, chunks, kind, groups, item.stat)
        summary.chunks_embedded += len(chunks)
        self._count_new(summary, versions)

    @staticmethod
    def _count_new(summary: Summary, versions: set[str]) -> None:
        if versions:
            summary.updated += 1
        else:
            summary.added += 1

    def _reuse(
        self,
        root: str,
        old: str,
        source: str,
        doc_hash: str,
        groups: list[str],
        stat: tuple[int, int, int] | None,
    ) -> int:
        self._flush()  # the old points must be readable
        old_points = self.index.points_of(root, old, doc_hash)
        if not old_points:
            return 0
        now = time.time()
        points = [
            ChunkPoint(
                chunk_id(root, source, doc_hash, p.payload.get(Field.CHUNK, n)),
                p.dense,
                p.sparse,
                self._with_url(
                    {
                        **p.payload,
                        Field.SOURCE: source,
                        Field.GROUPS: groups,
                        Field.INDEXED_AT: now,
                        Field.FILE_STAT: list(stat) if stat else None,
                    }
                ),
            )
            for n, p in enumerate(old_points)
        ]
        self._pending.append(Upsert(points))
        self._pending.append(DeleteDocument(root, source, keep_hash=doc_hash))
        self._pending_points += len(points)
        return len(points)

    def _with_url(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A mirrored document's payload names its URL (citations show it); others none."""
        payload.pop(Field.URL, None)
        url = self._mirror.url_of(payload[Field.SOURCE]) if self._mirror is not None else None
        return {**payload, Field.URL: url} if url else payload

    def _queue_document(
        self,
        root: str,
        source: str,
        doc_hash: str,
        chunks: list[Chunk],
        kind: str,
        groups: list[str],
        stat: tuple[int, int, int] | None = None,
    ) -> None:
        self._to_embed.append((root, source, doc_hash, chunks, kind, groups, stat))

    def _submit_queued(self) -> None:
        """Hand the queued documents' chunks to the embedding thread, so that the model
        embeds them while this thread reads, parses, chunks and writes what comes next.
        At most two batches are in flight: handing over the next one collects the one
        before it (whose writes this thread then prepares while the model embeds the
        next), which bounds memory."""
        if self._to_embed:
            queued, self._to_embed = self._to_embed, []
            texts = [chunk.embed_text for doc in queued for chunk in doc[3]]
            if self._embedding is None:
                self._embedding = ThreadPoolExecutor(1, thread_name_prefix="taimatsu-embed")
            self._in_flight.append((self._embedding.submit(self.embedder.embed, texts), queued))
        while len(self._in_flight) > 1:
            self._collect_oldest()

    def _embed_queued(self) -> None:
        """Embed everything queued or in flight, and queue its writes."""
        self._submit_queued()
        while self._in_flight:
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        """Wait for the oldest batch's vectors, then queue its writes: each document one
        upsert followed by the removal of its other versions. An embedding error (a
        served model that went away) is raised here, in the run's own thread."""
        future, queued = self._in_flight[0]
        try:
            vectors = iter(future.result())
        finally:
            self._in_flight.popleft()
        now = time.time()
        for root, source, doc_hash, chunks, kind, groups, stat in queued:
            points = []
            for n, chunk in enumerate(chunks):
                keyword = sparse.embed_document(chunk.embed_text)
                payload = {
                    Field.ROOT: root,
                    Field.SOURCE: source,
                    Field.DOC_HASH: doc_hash,
                    Field.CHUNK: n,
                    Field.CHUNKS: len(chunks),
                    Field.PAGE: chunk.page,
                    Field.SECTION: chunk.section,
                    Field.TEXT: chunk.text,
                    Field.KIND: kind.lstrip("."),
                    Field.GROUPS: groups,
                    Field.INDEXED_AT: now,
                    Field.FILE_STAT: list(stat) if stat else None,
                }
                payload = self._with_url(payload)
                points.append(
                    ChunkPoint(
                        chunk_id(root, source, doc_hash, n),
                        next(vectors).tolist(),
                        SparseTerms.of(keyword),
                        payload,
                    )
                )
            self._pending.append(Upsert(points))
            self._pending.append(DeleteDocument(root, source, keep_hash=doc_hash))
            self._pending_points += len(points)

    def _flush(self) -> None:
        """Embed and write everything queued."""
        self._embed_queued()
        self._write_pending()

    def _write_pending(self) -> None:
        """Write the writes queued so far (documents still being embedded wait)."""
        self.index.write(self._pending)
        self._pending = []
        self._pending_points = 0
