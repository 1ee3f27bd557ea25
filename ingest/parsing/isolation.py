"""Parsing in a separate process, with a time limit and a memory limit per file.

A hostile or broken file can make a parser loop for ever, allocate without end or crash
the interpreter (parsers wrap C libraries: lxml, pdfium, tesseract). The ingestion run
must survive all three, so files are parsed by a worker process that has an address-
space limit (RLIMIT_AS) and is given a deadline: a worker that overruns is killed and
replaced, one that dies is replaced, and the file is reported as failed with the reason.
The worker lives for the whole run, so the cost per file is one pipe round trip, and
the run hands it the next file (`submit`) before embedding the last one's chunks, so the
model and the parser work at the same time; each file keeps its own deadline.

The worker is a plain `python -m ingest.parsing.isolation` talking over two inherited pipes (not
multiprocessing's spawn, which re-imports the parent's `__main__` — inside the page that
is the Streamlit script).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from assistant.errors import ParseError
from ingest.parsing.base import Section
from ingest.parsing.registry import parse

NOISY = ("pypdf", "pdfminer", "PIL", "charset_normalizer")


def quiet_libraries() -> None:
    """Libraries that narrate recoverable trouble ("EOF marker not found"): the file's own
    failure, if any, is reported once by the run."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)


def _serve(requests: Connection, responses: Connection, memory_mb: int) -> None:
    quiet_libraries()
    while True:
        try:
            name, data = requests.recv()
        except EOFError:
            return
        try:
            responses.send(("ok", parse(Path(name), data)))
        except ParseError as exc:
            responses.send(("error", str(exc)))
        except Exception as exc:  # noqa: BLE001 - any parser bug is this file's failure
            # out of the address space: a MemoryError, or an OSError (ENOMEM) from a
            # library that maps memory itself
            if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM:
                limit = f"needs more than {memory_mb} MB to parse (TAIMATSU_PARSE_MEMORY_MB)"
                responses.send(("error", limit))
            else:
                responses.send(("error", f"could not be parsed ({exc.__class__.__name__})"))


class ParserWorker:
    """One parsing process, restarted after a timeout or a crash. At most one file is in
    the worker at a time: `submit` starts one, `parse` takes its result (or parses a file
    not submitted); a submitted file that is not asked for is dropped by the next call."""

    def __init__(self, timeout: float, memory_mb: int) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._responses: Connection | None = None
        self._pending: tuple[object, float] | None = None  # (key, deadline) of the file inside

    def _start(self) -> tuple[Connection, Connection]:
        if self._process is None or self._process.poll() is not None:
            self._kill()
            request_r, request_w = os.pipe()
            response_r, response_w = os.pipe()
            limit = self.memory_mb * 1024 * 1024

            def limit_memory() -> None:  # in the child, before Python starts
                if limit:
                    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ingest.parsing.isolation",
                    str(request_r),
                    str(response_w),
                    str(self.memory_mb),
                ],
                pass_fds=(request_r, response_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                preexec_fn=limit_memory,
            )
            os.close(request_r)
            os.close(response_w)
            self._requests = Connection(request_w, readable=False)
            self._responses = Connection(response_r, writable=False)
        assert self._requests is not None and self._responses is not None
        return self._requests, self._responses

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        for conn in (self._requests, self._responses):
            if conn is not None:
                conn.close()
        self._process = self._requests = self._responses = None
        self._pending = None

    def _crashed(self) -> ParseError:
        self._kill()
        return ParseError("the parser crashed on this file (out of memory or a fault in a library)")

    def submit(self, key: object, path: Path, data: bytes) -> None:
        """Start parsing a file and return at once; `parse(path, data, key)` takes the
        result. Its deadline runs from now."""
        self._drop()
        requests, _ = self._start()
        try:
            requests.send((path.name, data))
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise self._crashed() from None
        self._pending = (key, time.monotonic() + self.timeout)

    def _receive(self) -> tuple[str, object]:
        assert self._pending is not None and self._responses is not None
        deadline = self._pending[1]
        try:
            if not self._responses.poll(max(0.0, deadline - time.monotonic())):
                self._kill()
                raise ParseError(
                    f"parsing took longer than {self.timeout:g} s (TAIMATSU_PARSE_TIMEOUT)"
                )
            reply = self._responses.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            raise self._crashed() from None
        self._pending = None
        return reply

    def _drop(self) -> None:
        """Wait out (or kill at its deadline) a submitted file nobody asked for."""
        if self._pending is not None:
            try:
                self._receive()
            except ParseError:
                pass

    def parse(self, path: Path, data: bytes, key: object = None) -> list[Section]:
        """The sections of a file: the submitted one under `key`, or this one parsed now."""
        if key is None or self._pending is None or self._pending[0] != key:
            self.submit(key, path, data)
        status, result = self._receive()
        if status == "error":
            raise ParseError(result)
        return result

    def close(self) -> None:
        self._kill()


if __name__ == "__main__":
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
        int(sys.argv[3]),
    )
