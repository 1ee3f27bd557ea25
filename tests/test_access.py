"""Access control, property-style: over random documents, groups and questions, nobody
sees a passage, citation or source outside their groups, in `search` or `ask`."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.answer import NOT_FOUND, Answerer
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor
from tests.ollama_server import FakeOllama

GROUPS = ["hr", "finance", "legal", "sales", "it", "exec"]
TOPICS = [
    ("salary bands and bonus rules", "給与テーブルと賞与の規程"),
    ("quarterly revenue forecast", "四半期の売上予測"),
    ("pending lawsuit settlement", "係争中の訴訟の和解"),
    ("customer discount approvals", "顧客への値引き承認"),
    ("server root passwords rotation", "サーバーのパスワード更新"),
    ("board meeting minutes", "取締役会の議事録"),
    ("cafeteria menu and opening hours", "社員食堂のメニューと営業時間"),
    ("holiday calendar", "年間休日カレンダー"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    """40 documents on random topics, each readable by a random set of groups (some by
    everyone), ingested once through a real ACL file."""
    rng = random.Random(20261128)
    root = tmp_path_factory.mktemp("acl-corpus")
    rules, owners = [], {}
    for i in range(40):
        english, japanese = rng.choice(TOPICS)
        code = f"DOC-{i:03d}"
        text = f"# {english}\n\n{code}: notes on {english}. {japanese}について。 Ref {code}.\n"
        name = f"d{i:02d}.md"
        (root / name).write_text(text, encoding="utf-8")
        groups = sorted(rng.sample(GROUPS, rng.randint(1, 2))) if i % 5 else ["everyone"]
        owners[name] = set(groups)
        rules.append(f'[[rule]]\npattern = "{name}"\ngroups = {groups!r}\n'.replace("'", '"'))
    (root / ".taimatsu-acl.toml").write_text("\n".join(rules), encoding="utf-8")
    data = tmp_path_factory.mktemp("acl-index")
    conf = Settings(data_dir=data, ollama_host="http://127.0.0.1:9", lock_timeout=10)
    summary = Ingestor(conf, embedder).run(root)
    assert summary.added == 40 and not summary.failed
    return conf, owners


def allowed(owners: dict[str, set[str]], user: set[str]) -> set[str]:
    return {name for name, groups in owners.items() if groups & (user | {"everyone"})}


questions = st.one_of(
    st.sampled_from([t for pair in TOPICS for t in pair]),
    st.integers(0, 39).map(lambda i: f"DOC-{i:03d}"),
    st.text(min_size=1, max_size=30),
)
users = st.sets(st.sampled_from(GROUPS), max_size=3)
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(question=questions, user=users)
def test_search_never_returns_a_document_outside_the_askers_groups(
    corpus, embedder, question, user
):
    conf, owners = corpus
    hits = Searcher(conf, embedder).search(question, sorted(user), 50)
    readable = allowed(owners, user)
    assert {h.source for h in hits} <= readable
    assert len(hits) <= len(readable)  # one chunk each: no count padded by hidden ones


@HYPOTHESIS
@given(question=questions, user=users)
def test_answers_cite_only_readable_documents(corpus, embedder, question, user):
    conf, owners = corpus
    readable = allowed(owners, user)
    with FakeOllama() as server:
        conf_llm = conf.model_copy(update={"ollama_host": server.url})
        answer = Answerer(conf_llm, Searcher(conf_llm, embedder)).ask(question, sorted(user))
        prompts = [str(r["json"]) for r in server.requests if r["path"] == "/api/chat"]
    assert {p.source for _, p in answer.citations} <= readable
    assert {p.source for p in answer.passages} <= readable
    hidden = [f"DOC-{int(n[1:3]):03d}" for n in set(owners) - readable]
    hidden = [code for code in hidden if code not in question]  # the asker's own words
    for text in [answer.answer, *prompts]:
        assert not any(code in text for code in hidden)  # not even in the model's prompt
    if answer.mode == NOT_FOUND:
        assert answer.citations == [] and answer.passages == []


def test_a_user_in_no_group_sees_only_documents_for_everyone(corpus, embedder):
    conf, owners = corpus
    hits = Searcher(conf, embedder).search("notes", [], 50)
    assert hits and {h.source for h in hits} <= allowed(owners, set())
