"""Sharing one embedded shard between the page, the CLI and the ingestion cron.

Qdrant Edge allows one open handle per shard folder (an OS lock), and opening one costs
about 80 ms — ten times a query. So a reader keeps its handle open between queries, but
only while nobody wants to write:

- Whoever opens the shard — reader or writer — first takes the intent lock (`write.intent`
  in the data folder, an exclusive flock), so no two processes ever try to open it at
  once and nobody tries while a writer holds it. A reader releases the intent once its
  handle is open and keeps the handle; a writer keeps the intent until it has flushed
  and closed.
- Before each use a reader tests the intent lock (a non-blocking shared flock, a few
  microseconds); when another process holds it (waiting to open, or writing), the
  reader closes its handle and queues for the intent itself, then reopens.
- A reaper thread closes a reader's handle once it has been idle for `hold` seconds, and
  at once when another process signals its intent, so nobody waits for a quiet page.
- Whoever has the shard open also holds the handle lock (`handle.lock` in the shard's
  generation folder, an exclusive flock) until the handle is closed, and nobody calls the
  engine's open before holding it. So an open never fails because another process still
  has the shard: qdrant-edge-py 0.9 opens a shard's segments before it finds the WAL
  locked, and that failed open rewrites the sparse vectors' tracker journal under the
  holder (measured: the holder's next flush fails with "Tracker journal ... is shorter
  than expected"; in a crash test the shard no longer opened at all). Waiting on the
  intent alone did not prevent it: a writer holding the intent still tried to open while
  another process's reader had yet to close its handle.

A killed process's flocks are released by the kernel: there is no stale lock to clean.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qdrant_edge import EdgeShard

REAPER_PERIOD = 0.25
_registry: weakref.WeakSet[SharedShard] = weakref.WeakSet()
_registry_guard = threading.Lock()
_reaper: threading.Thread | None = None


class SharedShard:
    """One process's access to one shard folder (one instance per folder per process)."""

    def __init__(self, shard_path: Path, intent_path: Path, hold: float = 2.0) -> None:
        self.shard_path = shard_path
        self.intent_path = intent_path
        self.hold = hold
        self.lock = threading.RLock()
        self.handle: EdgeShard | None = None
        self.last_used = 0.0
        self._opened: tuple[str, int] | None = None  # the folder (path, inode) it reads
        self._probe_fd: int | None = None
        self._handle_fd: int | None = None  # the handle lock, held while a handle is open

    # -- the intent lock -----------------------------------------------------------

    def _probe(self) -> int:
        if self._probe_fd is None:
            self.intent_path.parent.mkdir(parents=True, exist_ok=True)
            self._probe_fd = os.open(self.intent_path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._probe_fd

    def writer_waiting(self) -> bool:
        fd = self._probe()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def _close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            finally:
                self.handle = None
                self._unlock_handle()

    @contextmanager
    def _opening(
        self, deadline: float, opener: Callable[[float, Path], EdgeShard]
    ) -> Iterator[EdgeShard]:
        """Open the shard's current generation once nobody else has it open: its handle
        lock first (waited for until `deadline`), then the engine's open. Yields the
        handle; the lock stays held when the caller keeps the handle (see _close)."""
        shard = self.shard_path.resolve()
        fd = open_handle_lock(shard.parent)
        try:
            _wait(lambda: try_flock(fd, fcntl.LOCK_EX), deadline)
            self._handle_fd, fd = fd, -1
            handle = opener(deadline, shard)
        except BaseException:
            if fd != -1:
                os.close(fd)
            self._unlock_handle()
            raise
        yield handle

    def _unlock_handle(self) -> None:
        if self._handle_fd is not None:
            os.close(self._handle_fd)  # releases the flock
            self._handle_fd = None

    # -- readers and writers ---------------------------------------------------------

    @contextmanager
    def _intent(self, deadline: float) -> Iterator[None]:
        """Hold the intent lock (exclusive) for the time given: nobody else opens the
        shard meanwhile, and holders of a reader handle let go of theirs."""
        self.intent_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.intent_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _wait(lambda: try_flock(fd, fcntl.LOCK_EX), deadline)
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextmanager
    def read(
        self, deadline: float, opener: Callable[[float, Path], EdgeShard]
    ) -> Iterator[EdgeShard]:
        """Reuse this process's handle unless somebody waits for the shard; otherwise open
        it under the intent lock (never try to open while a writer holds the shard: a
        failed open attempt by another process then loses some of the writer's updates,
        seen with qdrant-edge-py 0.9)."""
        if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError
        try:
            if self.handle is not None and (
                self.writer_waiting() or self._opened != self._identity()
            ):
                self._close()  # let the waiting process in; reopen after it
            if self.handle is None:
                with self._intent(deadline), self._opening(deadline, opener) as handle:
                    self._opened = self._identity()
                    self.handle = handle
            yield self.handle
            self.last_used = time.monotonic()
        finally:
            self.lock.release()
        _start_reaper(self)

    @contextmanager
    def write(
        self, deadline: float, opener: Callable[[float, Path], EdgeShard]
    ) -> Iterator[EdgeShard]:
        """The shard alone, from open to close, under the intent lock."""
        with self._intent(deadline):
            if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError
            try:
                self._close()
                with self._opening(deadline, opener) as shard:
                    try:
                        yield shard
                    finally:
                        try:
                            shard.close()
                        finally:
                            self._unlock_handle()
            finally:
                self.lock.release()

    def _identity(self) -> tuple[str, int] | None:
        try:
            real = self.shard_path.resolve()
            return str(real), real.stat().st_ino
        except OSError:
            return None

    def release(self) -> None:
        """Close this process's reader handle now (before the folder is switched or
        removed)."""
        with self.lock:
            self._close()

    def reap(self) -> None:
        if self.handle is None or not self.lock.acquire(blocking=False):
            return
        try:
            idle = time.monotonic() - self.last_used > self.hold
            if self.handle is not None and (idle or self.writer_waiting()):
                self._close()
        finally:
            self.lock.release()


def open_handle_lock(generation: Path) -> int:
    """A descriptor of `generation`'s handle lock file (flock it; closing releases it)."""
    return os.open(generation / "handle.lock", os.O_RDWR | os.O_CREAT, 0o644)


def try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(ready: Callable[[], bool], deadline: float) -> None:
    delay = 0.005
    while not ready():
        if time.monotonic() >= deadline:
            raise TimeoutError
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _start_reaper(shared: SharedShard) -> None:
    global _reaper
    with _registry_guard:
        _registry.add(shared)
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap_forever, name="shard-reaper", daemon=True)
            _reaper.start()


def _reap_forever() -> None:
    while True:
        time.sleep(REAPER_PERIOD)
        with _registry_guard:
            shards = list(_registry)
        for shared in shards:
            shared.reap()
