"""Optional reranking: a cross-encoder reads the question and each candidate passage
together and reorders them — from a local model folder (`TAIMATSU_RERANKER_MODEL_DIR`) or
a served `/rerank` endpoint (`TAIMATSU_RERANKER_URL`). Off unless one is set; whether it
pays for its cost is for the evaluation to show before it becomes a default."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from assistant.index import Hit

log = logging.getLogger(__name__)


class Reranker:
    def __init__(self, model_dir: Path) -> None:
        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(
                f"{model_dir} is not a cross-encoder model folder; fix or unset "
                "TAIMATSU_RERANKER_MODEL_DIR"
            )
        self.model_dir = Path(model_dir)

    @cached_property
    def model(self):  # noqa: ANN201 - a CrossEncoder, imported lazily (slow import)
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return CrossEncoder(str(self.model_dir), device="cpu", local_files_only=True)

    def rerank(self, query: str, hits: list[Hit], limit: int) -> list[Hit]:
        """The `limit` best hits by the cross-encoder's score (which replaces the fused
        score; the relevance signals stay)."""
        if not hits:
            return hits
        scores = self.model.predict([(query, hit.text) for hit in hits], show_progress_bar=False)
        ranked = sorted(zip(scores, range(len(hits)), hits, strict=True), reverse=True)
        return [
            Hit(hit.id, float(score), hit.payload, hit.similarity, hit.coverage)
            for score, _, hit in ranked[:limit]
        ]


class ServedReranker:
    """A reranker behind a `/rerank` endpoint (`TAIMATSU_RERANKER_URL`): Hugging Face TEI,
    vLLM, llama.cpp's server with `--reranking`, Infinity, or any Jina/Cohere-style one.

    The request carries the question and the candidates' texts as `documents` (vLLM,
    Infinity, llama.cpp, Jina, Cohere) or, if refused, as `texts` (TEI), and the reply
    may be `{"results": [{"index", "relevance_score"}]}` or TEI's `[{"index", "score"}]`.
    A reranker that fails (down, slow, an error, a reply of another shape) leaves the
    fused order as it was, with one log line: the asker never sees its trouble."""

    def __init__(
        self, url: str, model: str | None = None, timeout: float = 30.0, api_key: str | None = None
    ) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/rerank") else f"{base}/rerank"
        self.model = model
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._fields: tuple[str, ...] = ("documents", "texts")

    def scores(self, query: str, documents: list[str]) -> list[float] | None:
        """One score per document, in their order; None if the reranker failed."""
        try:
            with httpx.Client(timeout=self.timeout, trust_env=False) as client:
                reply = self._ask(client, query, documents)
            rows = reply["results"] if isinstance(reply, dict) else reply
            found: dict[int, float] = {}
            for row in rows:
                score = row["relevance_score"] if "relevance_score" in row else row["score"]
                found[int(row["index"])] = float(score)
            if sorted(found) != list(range(len(documents))):
                raise ValueError(f"scores for {len(found)} of {len(documents)} passages")
            return [found[i] for i in range(len(documents))]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "reranker at %s failed (%s: %s); keeping the fused order",
                self.url,
                exc.__class__.__name__,
                str(exc)[:200],
            )
            return None

    def _ask(self, client: httpx.Client, query: str, documents: list[str]) -> Any:
        """`documents` first (vLLM, Infinity, llama.cpp, Jina, Cohere); a server that
        refuses that shape (TEI: 422) is asked with `texts`, and remembered."""
        body: dict[str, Any] = {"query": query}
        if self.model:
            body["model"] = self.model
        for field in self._fields:
            extra = {"texts": documents} if field == "texts" else {"documents": documents}
            if field == "documents":
                extra["top_n"] = len(documents)
            response = client.post(self.url, json=body | extra, headers=self.headers)
            if response.status_code in (400, 422) and field != self._fields[-1]:
                continue
            response.raise_for_status()
            self._fields = (field,)
            return response.json()
        raise ValueError("no request shape was accepted")

    def rerank(self, query: str, hits: list[Hit], limit: int) -> list[Hit]:
        """The `limit` best hits by the served score, or the first `limit` in the fused
        order if the reranker failed."""
        if not hits:
            return hits
        scores = self.scores(query, [hit.text for hit in hits])
        if scores is None:
            return hits[:limit]
        order = zip(scores, range(len(hits)), hits, strict=True)
        ranked = sorted(order, key=lambda r: (-r[0], r[1]))
        return [
            Hit(hit.id, float(score), hit.payload, hit.similarity, hit.coverage)
            for score, _, hit in ranked[:limit]
        ]
