"""The two legs of hybrid retrieval, each alone and fused: a query only the keyword leg
answers (an exact code), one only the dense leg answers (no shared word), and the
hybrid finding both; Japanese through the keyword leg's character bigrams."""

from __future__ import annotations

from collections import Counter

import pytest

from assistant import sparse
from assistant.index import DENSE, SPARSE, Field, SearchRequest, SparseTerms, open_index
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor

DOCS = {
    "codes.md": "# Fault codes\n\nFault Q7-ZX41 means the coolant pump has stalled; "
    "power-cycle the unit and call maintenance.",
    # near-identical codes: what embeddings blur and exact terms tell apart
    "fan.md": "# Fault codes (fans)\n\nFault Q7-ZX14 means the cooling fan is blocked; "
    "clean the intake and restart the unit.",
    "filter.md": "# Fault codes (filters)\n\nFault Q7-ZY47 means the coolant filter is "
    "clogged; replace it and restart the unit.",
    "hinge.md": "# Spare parts\n\nPart PN-88213 is the left door hinge of the cabinet.",
    "coolant.md": "# Coolant filter\n\nReplace the coolant filter every six months using "
    "the standard replacement kit.",
    "remote.md": "# Remote work\n\nEmployees may work from home up to three days per week "
    "with their manager's agreement.",
    "canteen.md": "# Canteen\n\nLunch is served from noon until two in the afternoon.",
    "parking.md": "# Parking\n\nVisitor parking spaces are on level B2 next to the lifts.",
    "printing.md": "# Printing\n\nColour printing needs a cost centre code on the badge.",
    "travel.md": "# Travel\n\nBook flights through the travel desk at least two weeks ahead.",
    "security.md": "# Security\n\nLock your screen whenever you leave your desk.",
    "benefits.md": "# Benefits\n\nThe gym subsidy covers half of a monthly membership.",
    "kyuka.md": "# 休暇\n\n有給休暇の申請は三営業日前までに行ってください。",
    "kaigi.md": "# 会議室\n\n会議室の予約は社内ポータルから行います。",
}
# the words pull the dense leg to coolant.md; only the exact part number names hinge.md
KEYWORD_ONLY = ("coolant filter replacement part PN-88213", "hinge.md")
DENSE_ONLY = ("How often can staff telecommute?", "remote.md")


@pytest.fixture(scope="module")
def index(tmp_path_factory, embedder):
    from assistant.settings import Settings

    docs = tmp_path_factory.mktemp("legs")
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    data = tmp_path_factory.mktemp("legs-index")
    settings = Settings(data_dir=data, ollama_host="http://127.0.0.1:9")
    Ingestor(settings, embedder).run(docs)
    return settings


def one_leg(settings, embedder, query: str, leg: str) -> list[str]:
    """Sources ranked by one leg alone, as the product runs it (the same group filter as
    the hybrid; the keyword leg with its IDF over the asker's chunks)."""
    request = SearchRequest(
        embedder.embed_query(query),
        SparseTerms.of(sparse.embed_query(query)),
        ["everyone"],
        3,
        legs="dense" if leg == DENSE else "keyword",
    )
    return [h.payload[Field.SOURCE] for h in open_index(settings).search(request)]


def test_query_that_only_the_keyword_leg_answers(index, embedder):
    query, source = KEYWORD_ONLY
    assert source not in one_leg(index, embedder, query, DENSE)[:1]
    assert one_leg(index, embedder, query, SPARSE)[0] == source
    assert source in [h.source for h in Searcher(index, embedder).search(query, ["everyone"], 2)]


def test_exact_code_among_near_identical_ones(index, embedder):
    assert one_leg(index, embedder, "Q7-ZX41", SPARSE)[0] == "codes.md"
    assert Searcher(index, embedder).search("Q7-ZX41", ["everyone"], 1)[0].source == "codes.md"


def test_query_that_only_the_dense_leg_answers(index, embedder):
    query, source = DENSE_ONLY
    assert source not in one_leg(index, embedder, query, SPARSE)  # no word in common
    assert one_leg(index, embedder, query, DENSE)[0] == source
    assert source in [h.source for h in Searcher(index, embedder).search(query, ["everyone"], 2)]


@pytest.mark.parametrize(("query", "source"), [("有給休暇", "kyuka.md"), ("予約", "kaigi.md")])
def test_japanese_terms_match_inside_sentences(index, embedder, query, source):
    """Kanji words inside a sentence are found: both sides are cut into bigrams."""
    assert one_leg(index, embedder, query, SPARSE)[0] == source


def test_cjk_bigrams():
    assert sparse.cjk_terms("有給休暇の申請", document=False).split() == [
        "有給",
        "給休",
        "休暇",
        "暇の",
        "の申",
        "申請",
    ]
    assert set("休暇") <= set(sparse.cjk_terms("休暇", document=True).split())
    assert sparse.cjk_terms("VPN-0x2F error", document=True) == "VPN-0x2F error"


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A cross-encoder folder made locally from the packaged MiniLM weights with a seeded
    scoring head: its scores are arbitrary but fixed, which is all this test needs to
    check that the reranker, not the fusion, decides the order."""
    import torch
    from sentence_transformers import CrossEncoder

    from assistant.embedder import default_model_dir

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(str(default_model_dir()), num_labels=1, device="cpu").save(str(folder))
    return folder


def test_reranker_orders_the_fused_candidates(index, embedder, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    query = "what should I do about a fault code on the unit"
    index = index.model_copy(update={"passages_per_document": 0})  # the reranker alone
    plain = Searcher(index, embedder).search(query, ["everyone"], 8)
    reranking = index.model_copy(
        update={"reranker_model_dir": cross_encoder_dir, "rerank_candidates": 8}
    )
    reranked = Searcher(reranking, embedder).search(query, ["everyone"], 3)
    scores = CrossEncoder(str(cross_encoder_dir), device="cpu").predict(
        [(query, p.text) for p in plain]
    )
    ranked = sorted(zip(scores, plain, strict=True), key=lambda pair: -pair[0])
    expected = [p.chunk_id for _, p in ranked][:3]
    assert [p.chunk_id for p in reranked] == expected
    assert [p.rank for p in reranked] == [1, 2, 3]


def test_passages_are_spread_over_documents(tmp_path, embedder):
    """No document takes more than `passages_per_document` of a question's passages while
    others match (one long page crowded out the rest); with 0, the fused order decides."""
    docs = tmp_path / "docs"
    docs.mkdir()
    long = "\n\n".join(
        f"## Leave rule {n}\n\nAnnual paid leave rule {n}: employees request paid leave days "
        f"in the leave portal, and the leave balance shows remaining paid leave days {n}."
        for n in range(12)
    )
    (docs / "leave-handbook.md").write_text(f"# Leave handbook\n\n{long}\n", "utf-8")
    for name in ("travel", "remote", "benefits"):
        (docs / f"{name}.md").write_text(
            f"# {name}\n\nThe {name} policy; for days off, see the handbook.\n", "utf-8"
        )
    settings = Settings(data_dir=tmp_path / "data", ollama_host="http://127.0.0.1:9")
    Ingestor(settings, embedder).run(docs)
    query = "how do I request paid leave days?"
    spread = Searcher(settings, embedder).search(query, ["everyone"], 5)
    alone = Searcher(settings.model_copy(update={"passages_per_document": 0}), embedder)
    crowded = Counter(p.source for p in alone.search(query, ["everyone"], 5))
    per_source = Counter(p.source for p in spread)
    assert crowded["leave-handbook.md"] > 2, crowded  # without the limit: one page crowds
    assert max(per_source.values()) <= 2 and len(per_source) >= 4, per_source
    assert [p.rank for p in spread] == [1, 2, 3, 4, 5]


def test_reranker_off_by_default(index, embedder):
    assert Searcher(index, embedder).reranker is None
