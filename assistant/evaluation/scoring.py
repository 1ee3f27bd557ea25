"""Answer quality, measured: a gold file in, retrieval and answer scores out.

A gold file has one JSON object a line: `question`, `sources` (the gold documents, paths
relative to the ingested folder, as search results name them; `source` for just one),
and optionally `id`, `answer` (a gold answer or answer passage, carried into the report)
and `lang`.

Retrieval scores, from the ten best passages of each question (a passage is relevant
when it comes from a gold source):

- hit@k: share of questions with a relevant passage among the first k;
- MRR@10: mean of 1 / rank of the first relevant passage (0 past 10);
- nDCG@10: each gold source counts once, at the rank of its first passage (gain 1,
  discount log2(rank + 1)), over the ideal of all gold sources at the top.

Retrieval modes (assistant/evaluation/retrieval.py): `by-language`, `hybrid`, `dense` and
`keyword` are the product's own query path in each `TAIMATSU_RETRIEVAL` setting; weighted
`rrf:D:K` and `bylang` are built there for ablations only.

Answer scores, through the product's `Answerer`: citation precision (share of the cited
passages that come from a gold source) and, when an Ollama model is available,
faithfulness: each answer sentence is judged by the local model, with the fixed prompt
`JUDGE_PROMPT`, against the passages it cites (a sentence without a marker against all
the passages the answer cites); the score is the share of supported sentences.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import GoldError
from assistant.evaluation.retrieval import DEPTH, MODES, Retriever, check_mode, weights_of
from assistant.retrieval import Passage, Searcher
from assistant.settings import Settings

__all__ = ["DEPTH", "MODES", "Retriever", "check_mode", "weights_of"]  # re-exported

JUDGE_SYSTEM = (
    "You check answers written from documents. Reply with one word: YES if every fact "
    "in the sentence is stated in the passages or follows directly from them, NO otherwise."
)
JUDGE_PROMPT = "Passages:\n\n{passages}\n\nSentence: {sentence}\n\nIs the sentence supported by the passages? Answer YES or NO."  # noqa: E501


@dataclass(frozen=True)
class GoldItem:
    id: str
    question: str
    sources: tuple[str, ...]  # empty for a question the documents do not answer
    answer: str | None = None
    lang: str | None = None
    passage: str | None = None  # the words of a source that answer it (natural sets)
    style: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.sources)


def load_gold(path: Path) -> list[GoldItem]:
    items: list[GoldItem] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GoldError(f"cannot read the gold file {path} ({exc.strerror or exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise GoldError(f"{path}:{number} is not JSON ({exc})") from exc
        sources = row.get("sources", row.get("source")) if isinstance(row, dict) else None
        sources = [sources] if isinstance(sources, str) else sources
        question = row.get("question") if isinstance(row, dict) else None
        unanswerable = isinstance(row, dict) and row.get("answerable") is False
        if not isinstance(question, str) or not question.strip():
            raise GoldError(f"{path}:{number} needs a question")
        if bool(sources) == unanswerable:
            raise GoldError(
                f'{path}:{number} needs its gold source(s), or "answerable": false and no sources'
            )
        items.append(
            GoldItem(
                str(row.get("id") or number),
                question.strip(),
                tuple(map(str, sources or [])),
                row.get("answer"),
                row.get("lang"),
                row.get("passage"),
                row.get("style"),
            )
        )
    if not items:
        raise GoldError(f"{path} holds no questions")
    return items


# -- metrics -----------------------------------------------------------------------------


def first_relevant(ranked: Sequence[str], gold: set[str], k: int = DEPTH) -> int | None:
    """1-based rank of the first passage from a gold source within the first k."""
    return next((i for i, source in enumerate(ranked[:k], start=1) if source in gold), None)


def hit_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    return 1.0 if first_relevant(ranked, gold, k) else 0.0


def reciprocal_rank(ranked: Sequence[str], gold: set[str], k: int = DEPTH) -> float:
    rank = first_relevant(ranked, gold, k)
    return 1.0 / rank if rank else 0.0


def ndcg_at(ranked: Sequence[str], gold: set[str], k: int = DEPTH) -> float:
    seen: set[str] = set()
    dcg = 0.0
    for i, source in enumerate(ranked[:k], start=1):
        if source in gold and source not in seen:
            seen.add(source)
            dcg += 1.0 / math.log2(i + 1)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


def citation_precision(cited: Sequence[str], gold: set[str]) -> float | None:
    """Share of cited passages from a gold source; None when nothing was cited."""
    return sum(source in gold for source in cited) / len(cited) if cited else None


def mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


def p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class QuestionResult:
    id: str
    question: str
    gold: list[str]
    ranked: list[str]  # sources of the passages, best first
    rank: int | None  # of the first relevant passage
    seconds: float
    best_similarity: float = 0.0
    best_coverage: float = 0.0
    mode: str | None = None  # the answer's mode, when answers were run
    cited: list[str] = field(default_factory=list)
    citation_precision: float | None = None
    faithfulness: float | None = None
    answer_seconds: float | None = None
    answer: str | None = None
    passage_rank: int | None = None  # of the first passage holding the gold passage
    let_through: bool | None = None  # the answer gate's decision, when scored


@dataclass
class SettingScores:
    """One row of a comparison: a setting's scores over a gold set."""

    name: str
    questions: int
    hit1: float
    hit5: float
    hit10: float
    mrr10: float
    ndcg10: float
    ms_per_query: float
    extra: dict[str, Any] = field(default_factory=dict)  # ingestion time, chunks, answers
    results: list[QuestionResult] = field(default_factory=list)

    def as_json(self, details: bool = False) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("results", "extra")}
        row.update(self.extra)
        if details:
            row["questions_detail"] = [asdict(r) for r in self.results]
        return row


Ranker = Callable[[str], Sequence[Any]]  # a question to passages (or sources), best first


def _source(item: Any) -> str:
    return item if isinstance(item, str) else str(item.source)


def _squash(text: str) -> str:
    return " ".join(text.split())


def holds_passage(text: str, passage: str, width: int = 50) -> bool:
    """Whether a retrieved passage holds the gold passage, or a run of it long enough to
    answer from (`width` characters; a gold passage may straddle two chunks)."""
    text, passage = _squash(text), _squash(passage)
    if not passage:
        return False
    if passage in text:
        return True
    width = min(width, len(passage))
    return any(passage[i : i + width] in text for i in range(0, len(passage) - width + 1, 5))


def passage_rank(found: Sequence[Any], item: GoldItem, k: int = DEPTH) -> int | None:
    """1-based rank of the first passage from a gold source that holds the gold passage."""
    if not item.passage:
        return None
    gold = set(item.sources)
    for rank, p in enumerate(found[:k], start=1):
        if _source(p) in gold and holds_passage(str(getattr(p, "text", "")), item.passage):
            return rank
    return None


Gate = Callable[[str, Sequence[Any]], bool]  # the answer gate: answer from these passages?


def score_retrieval(
    name: str, items: Sequence[GoldItem], ranker: Ranker, gate: Gate | None = None
) -> SettingScores:
    """Run every question through `ranker` and score the ranked sources (and, where the
    gold names it, the gold passage). Unanswerable questions are not ranked: with a
    `gate`, they are asked too, and scored by whether the gate refuses them."""
    results = []
    refused = []
    for item in items:
        started = time.perf_counter()
        found = list(ranker(item.question))[:DEPTH]
        seconds = time.perf_counter() - started
        through = gate(item.question, found) if gate else None
        if not item.answerable:
            refused.append(not through)
            continue
        ranked = [_source(p) for p in found]
        result = QuestionResult(
            item.id,
            item.question,
            list(item.sources),
            ranked,
            first_relevant(ranked, set(item.sources)),
            round(seconds, 4),
            max((getattr(p, "similarity", 0.0) for p in found), default=0.0),
            max((getattr(p, "coverage", 0.0) for p in found), default=0.0),
        )
        result.passage_rank = passage_rank(found, item)
        result.let_through = through
        results.append(result)
    answerable = [item for item in items if item.answerable]
    row = summarize(name, answerable, results)
    if any(item.passage for item in answerable):
        ranks = [r.passage_rank for r in results]
        row.extra["passage_hit5"] = round(sum(1 for r in ranks if r and r <= 5) / len(ranks), 4)
        row.extra["passage_mrr10"] = round(sum(1 / r for r in ranks if r) / len(ranks), 4)
    if gate:
        row.extra["answerable_let_through"] = round(
            statistics.fmean(bool(r.let_through) for r in results), 4
        )
        if refused:
            row.extra["unanswerable_refused"] = round(statistics.fmean(refused), 4)
            row.extra["unanswerable"] = len(refused)
    return row


def summarize(name: str, items: Sequence[GoldItem], results: list[QuestionResult]):
    golds = [set(item.sources) for item in items]
    ranked = [r.ranked for r in results]

    def avg(metric: Callable[[list[str], set[str]], float]) -> float:
        return round(statistics.fmean(metric(r, g) for r, g in zip(ranked, golds, strict=True)), 4)

    return SettingScores(
        name,
        len(items),
        avg(lambda r, g: hit_at(r, g, 1)),
        avg(lambda r, g: hit_at(r, g, 5)),
        avg(lambda r, g: hit_at(r, g, 10)),
        avg(reciprocal_rank),
        avg(ndcg_at),
        round(1000 * statistics.fmean(r.seconds for r in results), 1),
        results=results,
    )


# -- answers and faithfulness ------------------------------------------------------------

_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_MARKERS = re.compile(r"^\s*((?:\[\d+(?:\s*[,、]\s*\d+)*\]\s*)+)")
_NUMBERS = re.compile(r"\[(\d+(?:\s*[,、]\s*\d+)*)\]")


def answer_sentences(text: str) -> list[tuple[str, list[int]]]:
    """The answer's sentences with the passage numbers each cites (a marker written just
    after a sentence's full stop belongs to that sentence)."""
    pieces = [p for p in _END.split(text.strip()) if p.strip()]
    sentences: list[str] = []
    for piece in pieces:
        markers = _MARKERS.match(piece)
        if markers and sentences:
            sentences[-1] += " " + markers.group(1).strip()
            piece = piece[markers.end() :]
        if piece.strip():
            sentences.append(piece.strip())
    out = []
    for sentence in sentences:
        numbers = [int(n) for group in _NUMBERS.findall(sentence) for n in re.split(r"\D+", group)]
        plain = re.sub(r"\s+(?=[.,!?。、！？])", "", _NUMBERS.sub("", sentence)).strip()
        if re.search(r"\w", plain):
            out.append((plain, numbers))
    return out


def judge_messages(sentence: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    blocks = "\n\n".join(f"<passage>\n{p.text}\n</passage>" for p in passages)
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": JUDGE_PROMPT.format(passages=blocks, sentence=sentence)},
    ]


_NEGATIVE = re.compile(
    r"\b(?:not|isn't|is\s+no|unsupported|cannot|can't|doesn't)\b|されていません|されない|いいえ",
    re.IGNORECASE,
)
_POSITIVE = re.compile(r"\bsupported\b|裏付けられ|支持され", re.IGNORECASE)


def verdict(reply: str) -> bool:
    """The judge's YES, however the model words it: "YES", "Yes.", 「はい」, or a first
    sentence saying the sentence is supported (small models rarely answer in one word);
    never a reply that says "not", and never its reasoning block."""
    from assistant.answering.prompt import strip_think

    text = strip_think(reply).strip()
    first = re.split(r"(?<=[.!?。！？])\s*|\n", text, maxsplit=1)[0]
    if re.match(r"(?:yes|はい)\b", first, re.IGNORECASE) or first.startswith("はい"):
        return True
    if re.match(r"(?:no|いいえ)\b", first, re.IGNORECASE):
        return False
    return bool(_POSITIVE.search(first)) and not _NEGATIVE.search(first)


class Judge:
    """Faithfulness by the local model (temperature 0): supported sentences / sentences."""

    def __init__(self, settings: Settings) -> None:
        from assistant.answering import LLMPool

        self.pool = LLMPool(settings.model_copy(update={"llm_temperature": 0.0}))

    def supported(self, sentence: str, passages: Sequence[Passage]) -> bool:
        return verdict(self.pool.complete(judge_messages(sentence, passages)))

    def faithfulness(self, answer: Any) -> float | None:
        cited = dict(answer.citations)
        sentences = answer_sentences(answer.answer)
        if not sentences or not cited:
            return None
        verdicts = []
        for sentence, numbers in sentences:
            own = [cited[n] for n in numbers if n in cited] or list(cited.values())
            verdicts.append(self.supported(sentence, own))
        return sum(verdicts) / len(verdicts)


def model_available(settings: Settings) -> bool:
    from assistant.answering import llm_health

    health = llm_health(settings)
    return bool(health.get("reachable") and health.get("model_present"))


def score_answers(
    scores: SettingScores,
    items: Sequence[GoldItem],
    answerer: Any,
    groups: list[str],
    judge: Judge | None = None,
) -> None:
    """Ask each question through the product's Answerer; add citation precision, answer
    modes, latency and (with a judge) faithfulness to `scores`."""
    from assistant.answering import Mode

    for item, result in zip(items, scores.results, strict=True):
        started = time.perf_counter()
        answer = answerer.ask(item.question, groups)
        result.answer_seconds = round(time.perf_counter() - started, 3)
        # the mode's plain value: the text report prints answer_modes as a dict
        result.mode, result.answer = str(answer.mode), answer.answer
        result.cited = [p.source for _, p in answer.citations]
        result.citation_precision = citation_precision(result.cited, set(item.sources))
        if judge and answer.mode == Mode.GENERATED:
            result.faithfulness = judge.faithfulness(answer)
    seconds = [r.answer_seconds for r in scores.results if r.answer_seconds is not None]
    scores.extra.update(
        citation_precision=mean([r.citation_precision for r in scores.results]),
        faithfulness=mean([r.faithfulness for r in scores.results]) if judge else None,
        answer_modes=dict(Counter(r.mode for r in scores.results)),
        answer_seconds_mean=round(statistics.fmean(seconds), 3) if seconds else None,
        answer_seconds_p95=p95(seconds),
    )


def run_eval(
    settings: Settings,
    items: Sequence[GoldItem],
    modes: Sequence[str] = MODES,
    groups: list[str] | None = None,
    answers: bool | None = None,
    searcher: Searcher | None = None,
) -> list[SettingScores]:
    """Score each retrieval mode on the configured index; with answers (default: when a
    model is available), also the answers of the configured mode (`settings.retrieval`),
    when it is among `modes`."""
    from assistant.answering import Answerer

    searcher = searcher or Searcher(settings)
    retriever = Retriever(searcher, groups)
    answerer = Answerer(settings, searcher)

    def gate(question: str, found: Sequence[Any]) -> bool:  # on the passages it would read
        return answerer.answerable(question, list(found[: settings.top_k]))

    rows = [
        score_retrieval(mode, items, lambda q, mode=mode: retriever.search(q, mode), gate)
        for mode in modes
    ]
    available = model_available(settings)
    if answers is None:
        answers = available
    product = next((row for row in rows if row.name == settings.retrieval), None)
    if answers and product:  # answers go through the product's own configured path
        judge = Judge(settings) if available else None
        answerable = [item for item in items if item.answerable]
        score_answers(product, answerable, answerer, retriever.groups, judge)
        product.extra["model"] = settings.llm_model if available else None
    return rows


# -- conversations -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationTurn:
    question: str
    sources: tuple[str, ...]
    kind: str  # "first", "follow-up" or "topic-change"
    standalone: str | None = None  # a follow-up rewritten to stand alone (for a test model)


def load_conversations(path: Path) -> list[list[ConversationTurn]]:
    """Conversations of a natural set: one JSON object a line with its `turns`."""
    conversations = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            turns = json.loads(line)["turns"]
            conversations.append(
                [
                    ConversationTurn(
                        t["question"], tuple(t["sources"]), t["kind"], t.get("standalone")
                    )
                    for t in turns
                ]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise GoldError(f"{path}:{number} is not a conversation ({exc})") from exc
    return conversations


def score_conversations(
    answerer: Any,
    conversations: Sequence[Sequence[ConversationTurn]],
    groups: list[str],
    k: int = 5,
) -> dict[str, Any]:
    """Ask each conversation turn by turn as the page does (the follow-up decision, the
    model's rewrite or, without a model, the conversation's topic) and count the turns
    whose gold source is among the first `k` passages."""
    from assistant.answering import Turn

    hits: dict[str, list[bool]] = {}
    for conversation in conversations:
        history: list[Turn] = []
        for turn in conversation:
            search_for = answerer.standalone(turn.question, history)
            passages = answerer.searcher.search(search_for, groups, k)
            found = any(p.source in turn.sources for p in passages)
            hits.setdefault(turn.kind, []).append(found)
            history.append(Turn(turn.question, ""))
    every = [h for kind in hits.values() for h in kind]
    return {
        "turns": len(every),
        "hit5": round(statistics.fmean(every), 4) if every else None,
        "by_kind": {kind: round(statistics.fmean(v), 4) for kind, v in sorted(hits.items())},
    }
