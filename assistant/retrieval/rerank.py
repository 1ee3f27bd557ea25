"""Optional reranking: a cross-encoder from a local model folder reads the question and
each candidate passage together and reorders them. Off unless
`TAIMATSU_RERANKER_MODEL_DIR` names a folder; whether it pays for its cost is for the
evaluation to show before it becomes a default."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from assistant.index import Hit


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
