"""Evaluation: the metrics by hand-computed values, faithfulness judged through the
Ollama-protocol test server, `taimatsu eval` on the samples, and the quality gate: a
slice of the gold sets (tests/data/eval, Debian documentation, see its README) whose
scores must stay above floors set a little below the measured ones."""

from __future__ import annotations

import json
import math
import re

import pytest

from assistant.errors import GoldError
from assistant.evaluation import (
    JUDGE_SYSTEM,
    GoldItem,
    QuestionResult,
    Retriever,
    answer_sentences,
    bar_chart,
    citation_precision,
    first_relevant,
    hit_at,
    holds_passage,
    html_report,
    load_gold,
    ndcg_at,
    reciprocal_rank,
    run_eval,
    score_retrieval,
    summarize,
    table,
)
from assistant.index import SetGroups, open_index
from assistant.retrieval import Passage, Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor
from tests.conftest import ROOT, closed_port_url, run_cli
from tests.ollama_server import FakeOllama, find_passages

EVAL_DATA = ROOT / "tests" / "data" / "eval"

# Floors: the scores measured on the slice with the defaults (by-language, chunk 200;
# perl hit@5 0.950, MRR@10 0.880; ja hit@5 0.933, MRR@10 0.811 - see docs/decisions.md)
# less about one question, so a real regression fails and a tie broken the other way
# does not. (hybrid, the former default, scores perl 0.900 / 0.802 and ja 0.800 / 0.738
# here: it would fail these floors.)
FLOORS = {
    "perl": {"hit5": 0.90, "mrr10": 0.83},
    "ja": {"hit5": 0.86, "mrr10": 0.75},
}


# -- metrics --------------------------------------------------------------------------


def test_rank_metrics_by_hand():
    ranked = ["a", "b", "c", "a", "d"]
    assert first_relevant(ranked, {"c"}) == 3
    assert hit_at(ranked, {"c"}, 1) == 0.0 and hit_at(ranked, {"c"}, 3) == 1.0
    assert reciprocal_rank(ranked, {"c"}) == pytest.approx(1 / 3)
    assert ndcg_at(ranked, {"c"}) == pytest.approx(1 / math.log2(4))  # 0.5
    # two gold sources: a at 1 (its repeat at 4 gains nothing), d at 5
    dcg = 1 + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, {"a", "d"}) == pytest.approx(dcg / ideal)  # 1.38685 / 1.63093
    assert round(ndcg_at(ranked, {"a", "d"}), 4) == 0.8503
    assert reciprocal_rank(ranked, {"a", "d"}) == 1.0


def test_nothing_relevant_or_past_the_cut_scores_zero():
    ranked = [f"x{i}" for i in range(10)] + ["gold"]
    assert first_relevant(ranked, {"gold"}) is None  # rank 11: past @10
    assert hit_at(ranked, {"gold"}, 10) == 0.0
    assert reciprocal_rank(ranked, {"gold"}) == 0.0
    assert ndcg_at(ranked, {"gold"}) == 0.0
    assert ndcg_at([], {"gold"}) == 0.0


def test_citation_precision_by_hand():
    assert citation_precision(["a", "b", "a"], {"a"}) == pytest.approx(2 / 3)
    assert citation_precision(["b"], {"a"}) == 0.0
    assert citation_precision([], {"a"}) is None  # nothing cited: no precision


def test_scores_are_means_over_questions():
    items = [GoldItem("1", "q1", ("a",)), GoldItem("2", "q2", ("b",))]
    results = [
        QuestionResult("1", "q1", ["a"], ["a", "c"], 1, 0.010),
        QuestionResult("2", "q2", ["b"], ["c", "c", "c", "b"], 4, 0.030),
    ]
    row = summarize("s", items, results)
    assert (row.hit1, row.hit5, row.hit10) == (0.5, 1.0, 1.0)
    assert row.mrr10 == pytest.approx((1 + 1 / 4) / 2)  # 0.625
    assert row.ndcg10 == pytest.approx(round((1 + 1 / math.log2(5)) / 2, 4))  # 0.7153
    assert row.ms_per_query == 20.0


def test_gold_file_is_read_and_checked(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        '{"id": "q1", "question": "Why?", "sources": ["a.md", "b.md"], "answer": "Because."}\n'
        "\n"
        '{"question": "なぜ", "source": "c.md"}\n',
        encoding="utf-8",
    )
    items = load_gold(gold)
    assert items[0] == GoldItem("q1", "Why?", ("a.md", "b.md"), "Because.", None)
    assert items[1].id == "3" and items[1].sources == ("c.md",)
    gold.write_text('{"question": "no gold"}\n', encoding="utf-8")
    with pytest.raises(GoldError, match=r"gold.jsonl:1 needs its gold source\(s\), or"):
        load_gold(gold)
    gold.write_text('{"question": "x?", "answerable": false, "sources": ["a.md"]}\n', "utf-8")
    with pytest.raises(GoldError, match=r"gold.jsonl:1 needs its gold source\(s\), or"):
        load_gold(gold)
    gold.write_text(
        '{"question": "Cafeteria menu?", "answerable": false, "sources": []}\n'
        '{"question": "Leave?", "sources": ["a.md"], "passage": "20 days", "style": "short"}\n',
        encoding="utf-8",
    )
    unanswerable, natural = load_gold(gold)
    assert not unanswerable.answerable and unanswerable.sources == ()
    assert natural.answerable and (natural.passage, natural.style) == ("20 days", "short")
    gold.write_text("not json\n", encoding="utf-8")
    with pytest.raises(GoldError, match="is not JSON"):
        load_gold(gold)


def test_passages_and_the_gate_are_scored_on_natural_sets():
    """A natural gold row names the words that answer it: a hit at the passage level is a
    passage from a gold source that holds them; unanswerable questions are not ranked but
    scored by whether the gate refuses them."""
    items = [
        GoldItem("a", "leave?", ("leave.md",), passage="Employees get 20 days of paid leave."),
        GoldItem("b", "vpn?", ("vpn.md",), passage="Restart the client after error 809."),
        GoldItem("u", "cafeteria?", ()),
    ]
    found = {
        "leave?": [
            Passage(1, 1.0, "leave.md", None, None, "Sick leave is separate.", "c1"),
            Passage(
                2, 0.9, "leave.md", None, None, "All Employees get 20 days of paid leave.", "c2"
            ),
        ],
        "vpn?": [Passage(1, 1.0, "vpn.md", None, None, "The VPN gateway is vpn.example.", "c3")],
        "cafeteria?": [Passage(1, 1.0, "menu.md", None, None, "Lunch is at noon.", "c4")],
    }
    row = score_retrieval("x", items, found.__getitem__, gate=lambda q, p: q != "cafeteria?")
    assert row.questions == 2 and row.hit1 == 1.0
    assert [r.passage_rank for r in row.results] == [2, None]
    assert row.extra["passage_hit5"] == 0.5 and row.extra["passage_mrr10"] == 0.25
    assert row.extra["answerable_let_through"] == 1.0 and row.extra["unanswerable_refused"] == 1.0
    long = "If the client reports error 809, restart it and check that UDP port 500 is open."
    assert holds_passage("…reports error 809, restart it and check that UDP port 500 is", long)
    assert not holds_passage("error 809, restart it", long)


def test_answer_sentences_keep_their_markers():
    text = (
        "Perl is a language. [1] It is free [2]. 週3日までです[1]。次の文。[2] 3.14 is pi [1, 2]."
    )
    assert answer_sentences(text) == [
        ("Perl is a language.", [1]),
        ("It is free.", [2]),
        ("週3日までです。", [1]),
        ("次の文。", [2]),
        ("3.14 is pi.", [1, 2]),
    ]


def test_report_table_and_html_chart():
    rows = [
        {
            "name": "hybrid",
            "questions": 2,
            "hit1": 0.5,
            "hit5": 1.0,
            "hit10": 1.0,
            "mrr10": 0.625,
            "ndcg10": 0.7153,
            "ms_per_query": 12.5,
        },
        {"name": "reranker", "questions": 2, "note": "not measured: no model"},
    ]
    text = table(rows, "set")
    assert "hit@5" in text and "0.625" in text and "reranker: not measured" in text
    page = html_report([("set <1>", rows)], "Report")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "set &lt;1&gt;" in page
    assert "<script" not in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert bar_chart(rows).count("<rect") == 5 + 5  # legend + one measured setting


# -- faithfulness, through the Ollama-protocol server ------------------------------------


def _judge_or_answer(messages):
    """Answers: the first sentence of passage 1, cited, and a made-up sentence citing 2.
    Judge requests: YES when the sentence is found in its passages, else NO."""
    system = str(messages[0].get("content")) if messages else ""
    user = str(messages[-1].get("content"))
    if system == JUDGE_SYSTEM:
        sentence = re.search(r"Sentence: (.*)\n\nIs the sentence", user, re.DOTALL).group(1)
        passages = " ".join(user.split("Sentence:")[0].split())
        return "YES" if sentence.rstrip(".") in passages else "NO"
    first = " ".join(find_passages(user)[1].split())
    sentence = re.match(r".*?[.!?](?=\s|$)", first) or re.match(r".*", first)
    return f"{sentence.group(0)} [1] The office is on the Moon. [2]"


def test_faithfulness_is_judged_by_the_model(sample_settings, embedder):
    items = [GoldItem("v", "What does error VPN-0x2F mean?", ("en/vpn-troubleshooting.pdf",))]
    with FakeOllama(reply=_judge_or_answer) as server:
        settings = sample_settings.model_copy(update={"ollama_host": server.url})
        rows = run_eval(settings, items, ["by-language"], searcher=Searcher(settings, embedder))
        judged = [r for r in server.requests if r["path"] == "/api/chat"][1:]
    extra = rows[0].extra
    assert extra["answer_modes"] == {"generated": 1} and extra["model"] == "qwen2.5:7b"
    assert extra["faithfulness"] == 0.5  # one sentence of two is in its passage
    assert extra["citation_precision"] is not None and extra["answer_seconds_mean"] > 0
    assert len(judged) == 2  # one judge request per sentence
    assert judged[0]["json"]["options"]["temperature"] == 0.0
    assert judged[0]["json"]["messages"][0]["content"] == JUDGE_SYSTEM


def test_without_a_model_answers_are_sources_only_and_not_judged(sample_settings, embedder):
    items = [GoldItem("v", "What does error VPN-0x2F mean?", ("en/vpn-troubleshooting.pdf",))]
    searcher = Searcher(sample_settings, embedder)
    rows = run_eval(sample_settings, items, ["by-language"], answers=True, searcher=searcher)
    extra = rows[0].extra
    assert extra["answer_modes"] == {"sources-only": 1} and extra["faithfulness"] is None
    assert str(extra["answer_modes"]) == "{'sources-only': 1}"  # as `taimatsu eval` prints it
    assert 0 < extra["citation_precision"] <= 1  # the passages shown, some from the gold


# -- the command line ---------------------------------------------------------------------


def test_eval_command_on_the_samples(sample_settings, tmp_path):
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"question": "What does error VPN-0x2F mean?", "sources": ["en/vpn-troubleshooting.pdf"]},
        {"question": "When are taxi fares reimbursed?", "sources": ["en/expenses.html"]},
        {"question": "在宅勤務は週何日までですか", "sources": ["ja/在宅勤務規程.md"]},
    ]
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    report = tmp_path / "report.html"
    result = run_cli("eval", str(gold), "--json", "--html", str(report), settings=sample_settings)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["questions"] == 3
    by_mode = {row["name"]: row for row in body["settings"]}
    assert set(by_mode) == {"by-language", "hybrid", "dense", "keyword"}
    for mode in ("by-language", "hybrid"):
        assert by_mode[mode]["hit5"] == 1.0 and by_mode[mode]["mrr10"] > 0.5
    assert "answer_modes" not in by_mode["by-language"]  # no model: answers only when asked
    page = report.read_text("utf-8")
    assert "<svg" in page and "<script" not in page and "hybrid" in page

    text = run_cli(
        "eval", str(gold), "--modes", "keyword", "--no-answers", settings=sample_settings
    )
    assert text.returncode == 0, text.stderr
    assert "keyword" in text.stdout and "hit@10" in text.stdout and "dense" not in text.stdout


def test_eval_command_errors_are_one_line(sample_settings, tmp_path):
    missing = run_cli("eval", str(tmp_path / "none.jsonl"), settings=sample_settings)
    assert missing.returncode == 1
    assert missing.stderr.startswith("taimatsu: error: cannot read the gold file")
    assert "Traceback" not in missing.stderr
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\n")  # not UTF-8: a ValueError, translated by the command
    undecodable = run_cli("eval", str(binary), settings=sample_settings)
    assert undecodable.returncode == 1, undecodable.stderr
    assert undecodable.stderr.startswith("taimatsu: error: 'utf-8' codec can't decode")
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"question": "x", "sources": ["a"]}\n', "utf-8")
    empty = sample_settings.model_copy(update={"data_dir": tmp_path / "empty"})
    no_index = run_cli("eval", str(gold), settings=empty)
    assert no_index.returncode == 1 and "no index" in no_index.stderr


# -- the quality gate -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["perl", "ja"])
def gold_slice(request, tmp_path_factory, embedder):
    """One set of the committed slice, ingested into a fresh index with the defaults."""
    folder = EVAL_DATA / request.param
    settings = Settings(
        data_dir=tmp_path_factory.mktemp(f"eval-{request.param}") / "data",
        ollama_host=closed_port_url(),
        lock_timeout=10,
    )
    summary = Ingestor(settings, embedder).run(folder / "corpus")
    assert not summary.failed
    return request.param, settings, load_gold(folder / "gold.jsonl")


def test_quality_gate(gold_slice, embedder):
    name, settings, items = gold_slice
    assert 15 <= len(items) <= 25
    searcher = Searcher(settings, embedder)
    (row,) = run_eval(settings, items, [settings.retrieval], answers=False, searcher=searcher)
    scores = {"hit5": row.hit5, "mrr10": row.mrr10}
    for metric, floor in FLOORS[name].items():
        assert scores[metric] >= floor, f"{name} {metric} fell to {scores[metric]} (< {floor})"


def test_single_leg_modes_use_the_group_filter(gold_slice, embedder):
    name, settings, items = gold_slice
    retriever = Retriever(Searcher(settings, embedder), ["nobody"])
    question = items[0].question
    source = retriever.search(question, "keyword")[0].source  # everyone's documents
    root = str((EVAL_DATA / name / "corpus").resolve())
    index = open_index(settings)
    index.write([SetGroups(root, source, ["hr"])])
    try:
        for mode in ("dense", "keyword", "hybrid", "by-language", "bylang", "rrf:1:3"):
            assert source not in [p.source for p in retriever.search(question, mode, 40)]
    finally:
        index.write([SetGroups(root, source, ["everyone"])])


@pytest.mark.parametrize(
    ("reply", "supported"),
    [
        ("YES", True),
        ("Yes.", True),
        ("yes, every fact is in passage 1", True),
        ("はい", True),
        ("はい、裏付けられています。", True),
        ('The sentence is supported by the passages "VPN-0x2F: the certificate expired."', True),
        ("<think>It might not be there.</think>YES", True),
        ("NO", False),
        ("No. The passages say nothing about taxis.", False),
        ("The sentence is not supported by the passages.", False),
        ("The sentence is unsupported.", False),
        ("いいえ", False),
        ("The passages mention the portal. It is supported.", False),  # first sentence decides
        ("", False),
        ("<think>yes</think>", False),
    ],
)
def test_the_judge_reads_a_verdict_however_the_model_words_it(reply, supported):
    from assistant.evaluation.scoring import verdict

    assert verdict(reply) is supported
