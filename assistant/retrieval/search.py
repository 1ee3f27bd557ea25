"""Retrieval: a question and the asker's groups in, the best passages they may read out."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from assistant import sparse
from assistant.embedder import DEFAULT_MODEL_NAME, Embedder, TextEmbedder, local_options
from assistant.errors import QuestionTooLong
from assistant.index import Field, Hit, SearchRequest, SparseTerms, open_index
from assistant.retrieval.rerank import Reranker, ServedReranker
from assistant.retrieval.routing import Retrieval, language_of, legs_for
from assistant.served_embedder import ServedEmbedder
from assistant.settings import EVERYONE, Settings

HEADING_SEPARATOR = " > "  # between the headings of a heading path (ingest.parsing.base)


@dataclass(frozen=True)
class Passage:
    rank: int
    score: float
    source: str
    page: int | None
    section: str | None
    text: str
    chunk_id: str
    similarity: float = 0.0
    coverage: float = 0.0
    root: str = ""
    url: str = ""  # the page a mirrored document copies (a crawled site): cited by it

    @classmethod
    def from_hit(cls, rank: int, hit: Hit) -> Passage:
        payload = hit.payload
        return cls(
            rank=rank,
            score=round(hit.score, 6),
            source=str(payload.get(Field.SOURCE, "")),
            page=payload.get(Field.PAGE),
            section=payload.get(Field.SECTION) or None,
            text=hit.text,
            chunk_id=hit.id,
            similarity=hit.similarity,
            coverage=hit.coverage,
            root=str(payload.get(Field.ROOT, "")),
            url=str(payload.get(Field.URL) or ""),
        )

    def as_hit_json(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "score": self.score,
            "source": self.source,
            "page": self.page,
            "section": self.section,
            "text": self.text,
            "chunk_id": self.chunk_id,
            "similarity": self.similarity,
            "keyword_coverage": self.coverage,
            **({"url": self.url} if self.url else {}),
        }

    @property
    def title(self) -> str:
        """The document's title as this passage knows it: the top of its heading path (the
        first heading, the H1 when the document has one), else the file name without its
        extension."""
        top = (self.section or "").split(HEADING_SEPARATOR, 1)[0].strip()
        return top or PurePosixPath(self.source).stem or self.source

    @property
    def where(self) -> str:
        """ "guide.pdf, p. 3" / "policy.md § Leave" for display; a crawled page by its URL."""
        return self.where_of(self.url or self.source, self.page, self.section)

    @staticmethod
    def where_of(source: str, page: int | None, section: str | None) -> str:
        """`where` for a passage kept only as its fields (a citation in a stored answer)."""
        parts = [source]
        if page is not None:
            parts.append(f"p. {page}")
        if section:
            parts.append(f"§ {section}")
        return ", ".join(parts)


TIES = 10  # extra passages fetched to break ties by id (RRF gives many equal scores)
DEPTH_PER_PASSAGE = 4  # hits looked at per passage returned, to spread them over documents
PRIOR_DEPTH = 50  # dense hits looked at when the length prior reorders them (decision 12)
PACKAGED_PRIOR = 0.04  # the length prior measured for the packaged model (decision 12)


def length_prior(hits: list[Hit], weight: float) -> list[Hit]:
    """Dense hits in the order of their similarity less `weight` * sqrt(2 ln n), n being
    their document's number of chunks: the best of n unrelated chunks scores about that
    much higher than one chunk does (the expected maximum of n draws), so a long document
    would otherwise win a question by its length. The hits' scores become those ranking
    scores (`similarity` keeps the cosine); a document's own chunks keep their order."""
    if weight <= 0:
        return hits

    def lowered(hit: Hit) -> Hit:
        chunks = max(int(hit.payload.get(Field.CHUNKS) or 1), 1)
        return replace(hit, score=hit.score - weight * math.sqrt(2 * math.log(chunks)))

    return sorted(map(lowered, hits), key=lambda h: (-h.score, h.id))


def spread(hits: list[Hit], limit: int, per_document: int) -> list[Hit]:
    """The first `limit` hits, in order, taking at most `per_document` from one document
    (0: no limit) while others are left; then the best of the rest, if any are missing."""
    if not per_document:
        return hits[:limit]
    taken: list[Hit] = []
    left: list[Hit] = []
    count: dict[tuple[str, str], int] = {}
    for hit in hits:
        key = (str(hit.payload.get(Field.ROOT)), str(hit.payload.get(Field.SOURCE)))
        if count.get(key, 0) < per_document and len(taken) < limit:
            taken.append(hit)
            count[key] = count.get(key, 0) + 1
        else:
            left.append(hit)
    order = {hit.id: n for n, hit in enumerate(hits)}
    return sorted(taken + left[: limit - len(taken)], key=lambda h: order[h.id])


class Searcher:
    """The embedder and the index, loaded once per process."""

    def __init__(self, settings: Settings, embedder: TextEmbedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or (
            Embedder(**local_options(settings))
            if settings.embed_backend == "local"
            else ServedEmbedder(settings)
        )
        self.index = open_index(settings)
        self.reranker: Reranker | ServedReranker | None = None
        if settings.reranker_model_dir:
            self.reranker = Reranker(settings.reranker_model_dir)
        elif settings.reranker_url:
            self.reranker = ServedReranker(settings.reranker_url, settings.reranker_model)

        self._model_checked = False

    def check_model(self) -> None:
        """Refuse to query vectors written by another model (once per process)."""
        if not self._model_checked and self.index.exists():
            self.index.ensure(self.embedder.stamp)
            self._model_checked = True

    def prior(self) -> float:
        """The length prior's weight: the setting, else the one measured for the packaged
        model (a weight is in its model's cosine units: another model needs its own)."""
        if self.settings.length_prior is not None:
            return self.settings.length_prior
        stamp = self.embedder.stamp
        packaged = stamp.backend == "local" and stamp.name == DEFAULT_MODEL_NAME
        return PACKAGED_PRIOR if packaged else 0.0

    def search(
        self,
        query: str,
        groups: list[str],
        k: int | None = None,
        retrieval: Retrieval | None = None,
    ) -> list[Passage]:
        """The best `k` passages the groups may read; `retrieval` overrides the setting."""
        query = query.strip()
        if len(query) > self.settings.max_question_chars:
            japanese = language_of(query) == "ja"
            raise QuestionTooLong(len(query), self.settings.max_question_chars, japanese)
        if not query or not self.index.exists():
            return []
        self.check_model()
        limit = k or self.settings.top_k
        # a few more than asked, so that passages tied at the cut are all seen and the
        # order below decides between them, not the engine's internal point order
        per_document = self.settings.passages_per_document
        legs = legs_for(
            query, retrieval or self.settings.retrieval, self.embedder.stamp.multilingual
        )
        # the length prior orders dense similarities (a fused score is a rank, not one)
        prior = self.prior() if legs == "dense" else 0.0
        fetch = limit * DEPTH_PER_PASSAGE if per_document else limit
        fetch = max(fetch + TIES, PRIOR_DEPTH if prior else 0)
        candidates = self.settings.rerank_candidates
        if self.reranker:  # it reads the best candidates, then orders them
            fetch = max(fetch, candidates)
        request = SearchRequest(
            self.embedder.embed_query(query),
            SparseTerms.of(sparse.embed_query(query)),
            [*groups, EVERYONE],  # everyone is in "everyone"
            limit=fetch,
            legs=legs,
        )
        hits = self.index.search(request)
        hits = sorted(current_versions(hits), key=lambda h: (-h.score, h.id))
        hits = length_prior(hits, prior)
        if self.reranker:  # a reranker that fails leaves this order as it is
            hits = self.reranker.rerank(query, hits[:candidates], candidates) + hits[candidates:]
        hits = spread(hits, limit, per_document)
        return [Passage.from_hit(rank, hit) for rank, hit in enumerate(hits, start=1)]


def readable_file(searcher: Searcher, root: str, source: str, groups: list[str]) -> Path | None:
    """The original file of an indexed document, if the asker may read it now (checked
    against the index at the time of asking) and it still lies inside its root."""
    allowed = searcher.index.document_groups(root, source)
    if allowed is None or not set(allowed) & {*groups, EVERYONE}:
        return None
    base = Path(root).resolve()
    path = (base / source).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def current_versions(hits: list[Hit]) -> list[Hit]:
    """Drop hits from an older version of a document when a newer one is also present.

    A replacement writes the new version and removes the old in one critical section; only
    a crash between the two leaves both in the index (until the next run cleans up), and
    then the asker still sees one version: the newest."""

    def document(hit: Hit) -> tuple[str, str]:
        return str(hit.payload.get(Field.ROOT)), str(hit.payload.get(Field.SOURCE))

    newest: dict[tuple[str, str], tuple[float, str]] = {}
    for hit in hits:
        payload = hit.payload
        stamp = (float(payload.get(Field.INDEXED_AT) or 0), str(payload.get(Field.DOC_HASH)))
        newest[document(hit)] = max(newest.get(document(hit), stamp), stamp)
    return [hit for hit in hits if newest[document(hit)][1] == str(hit.payload.get(Field.DOC_HASH))]
