"""Per-file limits: a file that takes too long or needs too much memory to parse is
reported and skipped, and the next file is parsed by a fresh worker. And mutated copies of
a document of every parsed kind: each parses, or is refused by its parser with a reason,
not caught by a safety net (the deadline, a crash, the worker's catch-all)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from assistant.errors import ParseError
from ingest.parsing import Section
from ingest.parsing.isolation import ParserWorker
from ingest.pipeline import Ingestor
from tests.conftest import SAMPLES
from tests.ingest.test_fuzz import SAFETY_NETS, _document

# the samples (text, Markdown, HTML, PDF, Word), and a generated document of each other kind
GENERATED_PARTS = [
    ("Remote work", "Staff may work from home three days a week. 在宅勤務は週3日まで。"),
    ("Expenses", "Receipts are filed within 30 days, in the portal."),
]
OTHER_KINDS = (".pptx", ".xlsx", ".csv", ".tsv", ".eml")
FUZZ_SEEDS: list[tuple[str, bytes]] = [
    (p.name, p.read_bytes()) for p in sorted(SAMPLES.rglob("*.*"))
] + [(f"generated{kind}", _document(kind, GENERATED_PARTS)) for kind in OTHER_KINDS]


@pytest.fixture(scope="module")
def worker():
    parser = ParserWorker(timeout=20, memory_mb=2048)
    yield parser
    parser.close()


def test_overrunning_files_are_cut_off_and_the_run_goes_on(settings, embedder, tmp_path):
    """With a 1 ms deadline no file parses in time (a fresh worker alone imports its
    parser): each is killed and reported, and the run still finishes; with the normal
    deadline the next run, on new workers, ingests them all."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES / "en", docs)
    hasty = settings.model_copy(update={"parse_timeout": 0.001})
    summary = Ingestor(hasty, embedder).run(docs)
    assert summary.added == 0 and len(summary.failed) == 4
    assert all("took longer than 0.001 s" in f["error"] for f in summary.failed)
    assert Ingestor(settings, embedder).run(docs).added == 4


def test_a_file_needing_more_memory_than_allowed_is_reported(settings, embedder, tmp_path):
    """Under a 40 MB address-space limit the worker reads text but not the PDF (pypdf
    and its document need more): that file is reported, one line, the rest ingested."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES / "en", docs)
    starved = settings.model_copy(update={"parse_memory_mb": 40})
    summary = Ingestor(starved, embedder).run(docs)
    failed = {f["source"]: f["error"] for f in summary.failed}
    assert list(failed) == ["vpn-troubleshooting.pdf"] and summary.added == 3
    assert (
        "more than 40 MB" in failed["vpn-troubleshooting.pdf"]
        or "crashed" in failed["vpn-troubleshooting.pdf"]
    )


class WatchingEmbedder:
    """The real model, noting for each embedding call whether the parsing process held a
    file at that moment (the next file, handed over before the model started)."""

    def __init__(self, inner, ingestor_box: list) -> None:
        self.inner = inner
        self.box = ingestor_box
        self.parser_busy: list[bool] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts):
        worker = self.box[0]._worker
        self.parser_busy.append(worker is not None and worker._pending is not None)
        return self.inner.embed(texts)


def test_the_parser_reads_the_next_file_while_the_model_embeds(settings, embedder, tmp_path):
    """Each document is embedded on its own (queue of 1 chunk), so every embedding call
    but the last has a next file to parse: the worker holds it during the call. Results
    are the same as parsing one file at a time (in-process)."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    box: list = []
    watching = WatchingEmbedder(embedder, box)
    overlapped = settings.model_copy(update={"embed_queue": 1})
    ingestor = Ingestor(overlapped, watching)
    box.append(ingestor)
    summary = ingestor.run(docs)
    assert not summary.failed and summary.added >= 5
    assert len(watching.parser_busy) >= summary.added - 1
    assert all(watching.parser_busy[:-1]), watching.parser_busy
    serial = overlapped.model_copy(update={"parse_timeout": 0, "data_dir": tmp_path / "serial"})
    other = Ingestor(serial, embedder).run(docs)
    assert (other.added, other.chunks_embedded) == (summary.added, summary.chunks_embedded)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 20)):
        kind = rng.random()
        at = rng.randrange(len(data)) if data else 0
        if kind < 0.5 and data:
            data[at] = rng.randrange(256)  # flip a byte
        elif kind < 0.75:
            del data[at : at + rng.randint(1, 4096)]  # cut a piece (truncation)
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 512))  # insert junk
    return bytes(data)


@hsettings(
    max_examples=60,
    derandomize=True,  # the same mutations on every machine and run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(FUZZ_SEEDS) - 1))
def test_fuzzed_documents_parse_or_fail_cleanly(worker, seed, which):
    """Mutated copies of a document of every parsed kind: each either parses into
    sections or is refused by its parser with a one-line reason; nothing escapes, hangs
    past the deadline, kills the worker or ends in its catch-all."""
    name, original = FUZZ_SEEDS[which]
    data = _mutate(original, random.Random(seed))
    try:
        sections = worker.parse(Path(name), data)
    except ParseError as exc:
        reason = str(exc)
        assert reason and "\n" not in reason
        assert not any(net in reason for net in SAFETY_NETS), f"{name}: only a safety net: {reason}"
        return
    assert sections and all(isinstance(s, Section) and s.text.strip() for s in sections)
