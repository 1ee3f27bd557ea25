"""Retrieval: a question and the asker's groups in, the best passages they may read out."""

from __future__ import annotations

from dataclasses import dataclass

from assistant import sparse
from assistant.embedder import Embedder
from assistant.settings import EVERYONE, Settings
from assistant.store import Hit, Store


@dataclass(frozen=True)
class Passage:
    rank: int
    score: float
    source: str
    page: int | None
    section: str | None
    text: str
    chunk_id: str

    @classmethod
    def from_hit(cls, rank: int, hit: Hit) -> Passage:
        payload = hit.payload
        return cls(
            rank=rank,
            score=round(hit.score, 6),
            source=str(payload.get("source", "")),
            page=payload.get("page"),
            section=payload.get("section") or None,
            text=hit.text,
            chunk_id=hit.id,
        )

    def as_hit_json(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "score": self.score,
            "source": self.source,
            "page": self.page,
            "section": self.section,
            "text": self.text,
        }

    @property
    def where(self) -> str:
        """ "guide.pdf, p. 3" / "policy.md § Leave" for display."""
        parts = [self.source]
        if self.page is not None:
            parts.append(f"p. {self.page}")
        if self.section:
            parts.append(f"§ {self.section}")
        return ", ".join(parts)


class Searcher:
    """The embedder and the store, loaded once per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings.embed_model_dir, settings.embed_batch_size)
        self.store = Store(settings.data_dir, settings.lock_timeout)

        self._model_checked = False

    def check_model(self) -> None:
        """Refuse to query vectors written by another model (once per process)."""
        if not self._model_checked and self.store.exists():
            self.store.ensure(self.embedder.stamp)
            self._model_checked = True

    def search(self, query: str, groups: list[str], k: int | None = None) -> list[Passage]:
        query = query.strip()
        if not query or not self.store.exists():
            return []
        self.check_model()
        hits = self.store.hybrid(
            self.embedder.embed_query(query),
            sparse.embed_query(query),
            [*groups, EVERYONE],  # everyone is in "everyone"
            limit=k or self.settings.top_k,
        )
        return [Passage.from_hit(rank, hit) for rank, hit in enumerate(hits, start=1)]
