"""What the ingestion tests share: the real model behind a cache of its vectors (texts
embedded once per module), for tests that ingest the same few documents many times."""

from __future__ import annotations

import pytest

from tests.conftest import CachedEmbedder


@pytest.fixture(scope="module")
def cached(embedder) -> CachedEmbedder:
    return CachedEmbedder(embedder)
