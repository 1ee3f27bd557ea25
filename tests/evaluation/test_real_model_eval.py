"""`taimatsu eval --answers` end to end with a real model: SmolLM2-135M-Instruct
(transformers on the CPU, behind the Ollama-protocol server in tests/real_model.py; the
Ollama server cannot run here) writes the answers and judges their faithfulness. A 135M
model answers poorly: the figures are printed and checked for shape and range, not level."""

from __future__ import annotations

import json

from assistant.answering import Answer, Mode
from assistant.evaluation import JUDGE_SYSTEM
from assistant.evaluation.scoring import Judge, verdict
from assistant.retrieval import Searcher
from tests.conftest import run_cli
from tests.real_model import MODEL

GOLD = [
    {"question": "What does error VPN-0x2F mean?", "sources": ["en/vpn-troubleshooting.pdf"]},
    {"question": "When are taxi fares reimbursed?", "sources": ["en/expenses.html"]},
    {"question": "What colour is the CEO's car?", "sources": [], "answerable": False},
]


def _judged(server, start: int) -> list[str]:
    """The judge's verdicts among the model's answers since the `start`-th."""
    return [
        reply
        for messages, reply in server.exchanges[start:]
        if messages[0]["content"] == JUDGE_SYSTEM
    ]


def test_eval_answers_through_a_real_model(sample_settings, real_model, tmp_path):
    settings = sample_settings.model_copy(
        update={"ollama_host": real_model.url, "llm_model": MODEL}
    )
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in GOLD), "utf-8")
    start = len(real_model.exchanges)
    result = run_cli(
        "eval", str(gold), "--answers", "--modes", "by-language", "--json", settings=settings
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (row,) = report["settings"]
    details = report["details"][0]
    print(
        f"\nreal model eval: modes {row['answer_modes']}, citation precision "
        f"{row['citation_precision']}, faithfulness {row['faithfulness']}, "
        f"answer s mean {row['answer_seconds_mean']}"
    )
    for d in details:
        print(f"  {d['question']!r}: {d['mode']} {d['answer']!r} cited {d['cited']}")
    assert report["questions"] == 3 and row["model"] == MODEL
    assert sum(row["answer_modes"].values()) == 2  # the two answerable questions were asked
    assert set(row["answer_modes"]) <= {str(m) for m in Mode}
    assert row["answer_modes"].get(str(Mode.SOURCES_ONLY), 0) == 0  # the model answered
    for name in ("citation_precision", "faithfulness"):
        assert row[name] is None or 0.0 <= row[name] <= 1.0
    assert row["answer_seconds_mean"] > 0 and 0 <= row["hit5"] <= 1
    asked = [d for d in details if d["answer"] is not None]
    assert len(asked) == 2 and all(d["answer"].strip() for d in asked)
    judged = _judged(real_model, start)
    # the judge ran once per sentence of each answer that cites, and only then
    assert (row["faithfulness"] is None) == (not judged)


def test_the_judge_reads_a_real_models_verdicts(sample_settings, embedder, real_model):
    """The faithfulness judge on a fixed cited answer: the model's own verdict decides,
    however it words it (`verdict`, tested on its own in test_eval.py)."""
    settings = sample_settings.model_copy(
        update={"ollama_host": real_model.url, "llm_model": MODEL}
    )
    passages = Searcher(settings, embedder).search("What does error VPN-0x2F mean?", ["everyone"])
    text = "Error VPN-0x2F means the device certificate has expired [1]. The sky is green [1]."
    answer = Answer("VPN-0x2F?", text, Mode.GENERATED, MODEL, passages, [1])
    start = len(real_model.exchanges)
    score = Judge(settings).faithfulness(answer)
    verdicts = _judged(real_model, start)
    print(f"\njudge verdicts {verdicts!r}: faithfulness {score}")
    assert len(verdicts) == 2
    supported = [verdict(v) for v in verdicts]
    assert score == sum(supported) / 2
    for body in real_model.chats()[-2:]:
        assert body["options"]["temperature"] == 0.0  # the judge asks at temperature 0
        assert passages[0].text[:40] in body["messages"][-1]["content"]
