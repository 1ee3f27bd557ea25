"""Access control, property-style: over random documents, groups and questions, nobody
sees a passage, citation or source outside their groups, in `search` or `ask`."""

from __future__ import annotations

import ast
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from assistant.answering import Answerer, History, Mode, Turn
from assistant.index import Index
from assistant.retrieval import Searcher, readable_file
from assistant.settings import Settings
from ingest.pipeline import Ingestor
from tests.conftest import CachedEmbedder, closed_port_url, json_lines
from tests.ollama_server import FakeOllama
from ui.cli.main import app as cli_app
from ui.web.chat import record
from ui.web.i18n import STRINGS

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
    if answer.mode == Mode.NOT_FOUND:
        assert answer.citations == [] and answer.passages == []


def test_a_user_in_no_group_sees_only_documents_for_everyone(corpus, embedder):
    conf, owners = corpus
    hits = Searcher(conf, embedder).search("notes", [], 50)
    assert hits and {h.source for h in hits} <= allowed(owners, set())


# -- Differential leak tests: two worlds that differ only by hidden documents ---------------
#
# World "plain" indexes the public documents; world "hidden" indexes the same files from the
# same folder (so the same roots, chunk ids and paths) plus documents readable only by the
# `secret` group, written to match the questions asked: the same topic words in English and
# Japanese, the public documents' own codes, and codes of their own. For anybody outside
# `secret`, an ideal system behaves identically in both worlds: whatever a user can observe
# (passages, scores, counts, source names, answers, the prompt sent to the model, messages,
# errors, download links, stored feedback) and the work done for them (index queries and
# model calls) is a function of the documents they may read and nothing else. Equality
# with world "plain", where the hidden documents do not exist at all, is stronger than
# checking that no secret string shows: it also rules out a hidden document that only
# shifts a score, takes a slot, changes a count or adds a call.
#
# RETRIEVAL: the differential tests run the default, by-language (the keyword leg for
# Japanese questions and codes, dense otherwise). The keyword leg's IDF is counted over the
# asker's own chunks (assistant/index/base.py, visible_idf); with the engine's collection-wide
# IDF (`modifier=Idf`, schema 1) test_keyword_scores_do_not_count_hidden_documents failed:
# an `hr` user's score for 給与テーブル was 7.53 without the secret documents, 5.32 with.

SECRET = "secret"
RETRIEVAL = "by-language"
SECRET_CODES = [f"SEC-{900 + i}" for i in range(len(TOPICS))]
PUBLIC_DOCS = 16
MODEL_STATES = ["echo", "unreachable", "missing"]
UNREACHABLE = closed_port_url()  # one address for both worlds: the message names it


def public_documents() -> dict[str, tuple[str, list[str]]]:
    """{source: (text, groups)}: topic i % 8; every fourth readable by everyone."""
    rng = random.Random(8_03)
    docs = {}
    for i in range(PUBLIC_DOCS):
        english, japanese = TOPICS[i % len(TOPICS)]
        code = f"PUB-{i:03d}"
        text = f"# {english}\n\n{code}: notes on {english}. {japanese}について。 Ref {code}.\n"
        groups = ["everyone"] if i % 4 == 0 else sorted(rng.sample(GROUPS, rng.randint(1, 2)))
        docs[f"p{i:02d}.md"] = (text, groups)
    return docs


def secret_documents() -> dict[str, tuple[str, list[str]]]:
    """Three per topic, built to outrank the public documents on the questions asked: the
    topic's own words in English, in Japanese, and one naming the public documents' codes
    and a secret code."""
    docs = {}
    for i, (english, japanese) in enumerate(TOPICS):
        codes = " ".join(f"PUB-{n:03d}" for n in range(i, PUBLIC_DOCS, len(TOPICS)))
        groups = [SECRET, "board"] if i % 3 == 0 else [SECRET]
        docs[f"vault/s{i}.md"] = (f"# {english}\n\n{english}.\n", groups)
        docs[f"vault/ja{i}.md"] = (f"# {japanese}\n\n{japanese}。\n", groups)
        docs[f"vault/codes{i}.md"] = (
            f"# {SECRET_CODES[i]}\n\n{SECRET_CODES[i]} Project Nightjar: {codes}. "
            f"{english}, {japanese}について。 Ref {codes} {SECRET_CODES[i]}.\n",
            groups,
        )
    return docs


PUBLIC, HIDDEN = public_documents(), secret_documents()
APP = str(Path(__file__).resolve().parent.parent / "ui" / "web" / "app.py")


@pytest.fixture(scope="module")
def query_memo(embedder) -> CachedEmbedder:
    """The session embedder, each question embedded once: both worlds, and search and ask
    in each, embed the same questions."""
    return CachedEmbedder(embedder)


@dataclass(frozen=True)
class World:
    name: str
    settings: Settings
    searcher: Searcher
    root: str


def _write(root: Path, docs: dict[str, tuple[str, list[str]]]) -> None:
    for name, (text, _) in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory, embedder, query_memo) -> dict[str, World]:
    """Both worlds from one folder, each indexed by the same run over the public files;
    then the secret files are written and a second run adds them to "hidden" (in "plain"
    they lie on disk, unindexed, as any file outside the index does). Two runs, so that
    the public documents' vectors are bit-identical: embedded in one batch with secret
    chunks, a chunk's vector moves in the 5th decimal (padding), which is noise of the
    ingestion run, not something a question can ask for."""
    base = tmp_path_factory.mktemp("two-worlds")
    root = base / "docs"
    root.mkdir()
    rules = [
        f"[[rule]]\npattern = {name!r}\ngroups = {groups!r}\n".replace("'", '"')
        for name, (_, groups) in {**PUBLIC, **HIDDEN}.items()
    ]
    (root / ".taimatsu-acl.toml").write_text("\n".join(rules), encoding="utf-8")
    _write(root, PUBLIC)
    made = {}
    for name in ("plain", "hidden"):
        conf = Settings(
            data_dir=base / name,
            ollama_host=UNREACHABLE,
            lock_timeout=10,
            retrieval=RETRIEVAL,
            parse_timeout=0,
        )
        summary = Ingestor(conf, embedder).run(root)
        assert summary.added == len(PUBLIC) and not summary.failed
        made[name] = World(name, conf, Searcher(conf, query_memo), str(root.resolve()))
    _write(root, HIDDEN)
    summary = Ingestor(made["hidden"].settings, embedder).run(root)
    assert summary.added == len(HIDDEN) and summary.unchanged == len(PUBLIC)
    assert not summary.failed
    return made


def readable_on(question: str) -> set[str]:
    """The public documents on a question's topic, or bearing its code."""
    return {
        name
        for name, (text, _) in PUBLIC.items()
        if question in ON_PUBLIC and f" {question}" in text.replace("#", " ")
    }


def readable_by(user: set[str]) -> set[str]:
    return {n for n, (_, g) in {**PUBLIC, **HIDDEN}.items() if set(g) & (user | {"everyone"})}


class _CountingShard:
    """The engine's shard, counting each call made on it."""

    def __init__(self, shard: Any, calls: Counter[str]) -> None:
        self._shard, self._calls = shard, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._shard, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls[f"engine.{name}"] += 1
            return attr(*args, **kwargs)

        return call


@contextmanager
def counting_work(backend: type[Index]) -> Iterator[Counter[str]]:
    """Count the index operations and the engine calls (query, scroll, count...) made
    inside the block, whichever Searcher (or page) makes them, on the embedded backend
    (`backend`, the class of the worlds' index: its `shard()` is where engine calls go)."""
    calls: Counter[str] = Counter()
    watched = (
        "exists",
        "read_stamp",
        "ensure",
        "search",
        "document_groups",
        "manifest",
        "roots",
        "counts",
        "points_of",
        "facet",
        "first_chunks",
    )
    own = {name: backend.__dict__.get(name) for name in (*watched, "shard")}
    inherited = {name: getattr(backend, name) for name in own}

    def counted(name: str, method: Any) -> Any:
        def wrapper(self: Index, *args: Any, **kwargs: Any) -> Any:
            calls[f"index.{name}"] += 1
            return method(self, *args, **kwargs)

        return wrapper

    @contextmanager
    def shard(self: Index, write: bool = False) -> Iterator[_CountingShard]:
        calls["index.shard"] += 1
        with inherited["shard"](self, write) as inner:
            yield _CountingShard(inner, calls)

    try:
        for name in watched:
            setattr(backend, name, counted(name, inherited[name]))
        backend.shard = shard  # type: ignore[attr-defined]
        yield calls
    finally:
        for name, method in own.items():
            if method is None:
                delattr(backend, name)
            else:
                setattr(backend, name, method)


def outcome(step: Any) -> tuple[Any, ...]:
    """What a user sees of a step: its result, or the error's kind and message."""
    try:
        return ("ok", step())
    except Exception as exc:  # noqa: BLE001 - an error is an observation too
        return ("error", type(exc).__name__, str(exc))


@pytest.fixture(scope="module")
def models():
    """The model states an asker may meet: an echoing model, a server without the
    model (404), no server at all."""
    with FakeOllama() as echo, FakeOllama(models=()) as missing:
        yield {"echo": echo, "missing": missing, "unreachable": None}


def answerer_for(world: World, server: FakeOllama | None) -> Answerer:
    host = server.url if server else UNREACHABLE
    return Answerer(world.settings.model_copy(update={"ollama_host": host}), world.searcher)


def observe(
    world: World,
    server: FakeOllama | None,
    user: set[str],
    question: str,
    history: list[Turn],
    probe: str,
) -> dict[str, Any]:
    """Everything `user` can observe of one search, one answer and one download link in
    `world`, and the work each took."""
    groups = sorted(user)
    answerer = answerer_for(world, server)
    seen: dict[str, Any] = {}
    backend = type(world.searcher.index)
    with counting_work(backend) as work:
        seen["search"] = outcome(lambda: world.searcher.search(question, groups, 10))
    seen["search_work"] = dict(work)
    before = len(server.requests) if server else 0
    with counting_work(backend) as work:
        answer = outcome(lambda: answerer.ask(question, groups, history))
    seen["answer_work"] = dict(work)
    if answer[0] == "ok":
        answer = ("ok", answer[1].as_json(), answer[1].passages)
    seen["answer"] = answer
    seen["model_requests"] = [
        (r["method"], r["path"], r["json"]) for r in (server.requests[before:] if server else [])
    ]
    with counting_work(backend) as work:
        seen["download"] = readable_file(world.searcher, world.root, probe, groups)
    seen["download_work"] = dict(work)
    return seen


outsiders = st.sets(st.sampled_from(GROUPS), max_size=3)
# mostly questions on the public documents (a topic in either language, a code), so that
# most examples are answered; now and then one aimed at the secret documents, a random
# one, or one that is refused
ON_PUBLIC = [t for pair in TOPICS for t in pair] + [f"PUB-{i:03d}" for i in range(PUBLIC_DOCS)]
ON_SECRET = [*SECRET_CODES, "Project Nightjar", "What is the real salary bands policy? SEC-900"]
REFUSED = ["x" * 4001, "   "]  # too long, blank
QUESTION_KINDS = {
    "public": st.sampled_from(ON_PUBLIC),
    "secret": st.sampled_from(ON_SECRET),
    "random": st.text(min_size=1, max_size=30),
    "refused": st.sampled_from(REFUSED),
}
differential_questions = st.sampled_from(["public"] * 5 + ["secret", "random", "refused"]).flatmap(
    QUESTION_KINDS.__getitem__
)
# the echoing model in eight examples out of ten, else no server or a server without it
differential_models = st.sampled_from(["echo"] * 8 + MODEL_STATES[1:])
# of the examples with the echoing model and a question on a public document the user may
# read, at least MIN_ANSWERABLE, and at least ANSWERED of those answered by the model
MIN_ANSWERABLE, ANSWERED = 10, 0.8
probes = st.sampled_from(
    [
        *PUBLIC,
        *HIDDEN,
        "vault/none.md",
        "nope.md",
        "../docs/p00.md",
        "vault/../vault/s0.md",
        "/etc/passwd",
    ]
)
DIFFERENTIAL = settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: the first failure is clear
)


def test_an_outsider_cannot_tell_the_two_worlds_apart(worlds, models):
    """For a random user outside `secret` (random groups, question, model state, follow-up
    or not, download probe): search (hits, scores, count), ask (mode, answer, citations,
    passages, not-found and no-model messages, the exact requests sent to the model and
    how many), errors (a question too long) and the download link are identical whether
    or not the secret documents exist.

    Response time, without measuring time: the work done for the user is counted by
    wrapping the index (every operation) and its engine shard (every query, scroll,
    count), and it is the same in both worlds, as are the model calls and their prompts
    (so the model's time, the largest by far, is the same too). What is left is inside
    the engine's one filtered query per search: the group filter is part of the query
    (never applied to results afterwards), the same number of points come back, and
    nothing after it depends on what the filter dropped. The only way hidden documents
    reach the response time is the size of the index the engine filters, which is the
    same for every question and user, so it tells nobody what the hidden documents say.
    (A keyword-leg exception is pinned by test_keyword_scores_do_not_count_hidden_documents.)

    Two worlds that fail alike are alike too, so a broken setup (no index, no model) would
    pass vacuously. So the examples are drawn mostly answerable (the echoing model, a
    question on the public documents' topics or codes); of those where the user may read
    a document on the question (at least MIN_ANSWERABLE), ANSWERED or more must get a
    model-written answer in both worlds; and the other model states (no-model passages)
    and a refused question are each met too."""
    history = [Turn("Which holidays are there?", "The holiday calendar lists them [1].")]
    outcomes: Counter[tuple[str, str]] = Counter()

    @DIFFERENTIAL
    @example(user=set(), question=TOPICS[0][0], model="echo", follow_up=False, probe="vault/s0.md")
    @example(
        user={"hr"},
        question="Project Nightjar SEC-900",
        model="echo",
        follow_up=True,
        probe="vault/none.md",
    )
    @example(user={"it"}, question="x" * 4001, model="echo", follow_up=False, probe="nope.md")
    @example(
        user={"legal"}, question=TOPICS[2][1], model="unreachable", follow_up=True, probe="p01.md"
    )
    @given(
        user=outsiders,
        question=differential_questions,
        model=differential_models,
        follow_up=st.booleans(),
        probe=probes,
    )
    def differential(user, question, model, follow_up, probe):
        server = models[model]
        seen = {
            name: observe(world, server, user, question, history if follow_up else [], probe)
            for name, world in worlds.items()
        }
        assert seen["hidden"] == seen["plain"]
        answer = seen["hidden"]["answer"]
        mode = answer[1]["mode"] if answer[0] == "ok" else f"error {answer[1]}"
        answerable = model == "echo" and bool(readable_on(question) & readable_by(user))
        outcomes[("answerable" if answerable else f"model {model}", mode)] += 1
        if probe in PUBLIC and probe in readable_by(user):
            assert seen["hidden"]["download"] == Path(worlds["hidden"].root) / probe
        else:
            assert seen["hidden"]["download"] is None  # secret, unknown and outside alike
        assert seen["hidden"]["download_work"] == seen["plain"]["download_work"]
        if seen["hidden"]["search"][0] == "ok":
            assert {p.source for p in seen["hidden"]["search"][1]} <= readable_by(user)

    differential()
    print(f"differential outcomes: {dict(outcomes)}")
    answerable = sum(n for (kind, _), n in outcomes.items() if kind == "answerable")
    assert answerable >= MIN_ANSWERABLE, outcomes
    assert outcomes[("answerable", Mode.GENERATED)] >= ANSWERED * answerable, outcomes
    assert {kind for kind, _ in outcomes} >= {"model unreachable", "model missing"}, outcomes
    assert {mode for _, mode in outcomes} >= {Mode.SOURCES_ONLY, "error QuestionTooLong"}, outcomes


def test_a_secret_document_looks_like_no_document_to_an_outsider(worlds):
    """The download link, for an outsider in every group but `secret`, of a secret source
    (which is on disk in both worlds), an unknown one, and paths that reach the secret
    file another way or leave the folder: None each time, after the same work, in both
    worlds; a member gets the secret file in world "hidden" only."""
    outsider = sorted(GROUPS)
    probes = [
        "vault/s1.md",
        "vault/s9.md",
        "../docs/vault/s1.md",
        "vault/./s1.md",
        "/etc/passwd",
        "../../../../etc/passwd",
    ]
    results, work = set(), set()
    for world in worlds.values():
        for probe in probes:
            with counting_work(type(world.searcher.index)) as calls:
                results.add(readable_file(world.searcher, world.root, probe, outsider))
            work.add(json.dumps(calls, sort_keys=True))
    assert results == {None} and len(work) == 1
    hidden = worlds["hidden"]
    member = readable_file(hidden.searcher, hidden.root, "vault/s1.md", [SECRET])
    assert member is not None and member.name == "s1.md"  # the converse: members get it
    assert readable_file(worlds["plain"].searcher, hidden.root, "vault/s1.md", [SECRET]) is None


def test_a_member_of_the_secret_group_does_see_the_difference(worlds, models):
    """The converse, without which the tests above prove nothing: in the same setup a
    member of `secret` finds the secret documents (first, on their topic) and gets answers
    citing them, in world "hidden" only (their download links: the test above)."""
    member = [SECRET, "hr"]
    for i, (english, _) in enumerate(TOPICS):
        plain, hidden = (w.searcher.search(english, member, 10) for w in worlds.values())
        assert hidden[0].source == f"vault/s{i}.md"  # written to rank first: it does
        assert all(p.source in PUBLIC for p in plain)
        plain, hidden = (w.searcher.search(SECRET_CODES[i], member, 10) for w in worlds.values())
        assert hidden != plain and any(p.source.startswith("vault/") for p in hidden)
    echo = models["echo"]
    answers = {n: answerer_for(w, echo).ask(TOPICS[3][0], member) for n, w in worlds.items()}
    assert "vault/s3.md" in {p.source for _, p in answers["hidden"].citations}
    assert "vault/s3.md" not in {p.source for p in answers["plain"].passages}


def test_keyword_scores_do_not_count_hidden_documents(worlds):
    """The keyword leg (Japanese questions and exact codes under `by-language`, every
    question under `hybrid`/`keyword`): an outsider's hits must not depend on hidden
    documents either."""
    user = sorted(GROUPS)
    for retrieval in ("keyword", "by-language", "hybrid"):
        for question in [japanese for _, japanese in TOPICS] + ["PUB-003 PUB-011"]:
            plain, hidden = (
                w.searcher.search(question, user, 10, retrieval) for w in worlds.values()
            )
            assert hidden == plain, (retrieval, question)


def test_the_cli_prints_the_same_for_an_outsider(worlds, models, query_memo, monkeypatch):
    """`taimatsu search --json --groups` (questions on stdin) and `taimatsu ask --json`,
    in-process, in both worlds: the same output, exit code and error; the same as the
    Searcher's hits; and different for a member of `secret` (the converse)."""
    monkeypatch.setattr("assistant.retrieval.search.Embedder", lambda *args, **kwargs: query_memo)
    questions = [t for pair in TOPICS[:4] for t in pair] + ["PUB-005", "SEC-902", "Nightjar"]

    def cli(world: World, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TAIMATSU_")}
        env.update(
            TAIMATSU_DATA_DIR=str(world.settings.data_dir),
            TAIMATSU_RETRIEVAL=RETRIEVAL,
            TAIMATSU_OLLAMA_HOST=models["echo"].url,
        )
        result = CliRunner().invoke(cli_app, list(args), input=stdin, env=env)
        return result.exit_code, result.stdout, result.stderr

    for groups in ["everyone", "hr,legal", ",".join(GROUPS)]:
        # the last question is too long: the command stops there with one error line
        stdin = "\n".join([*questions, "y" * 4001]) + "\n"
        out = {
            n: cli(w, "search", "-", "--json", "-k", "10", "--groups", groups, stdin=stdin)
            for n, w in worlds.items()
        }
        assert out["hidden"] == out["plain"]
        code, stdout, stderr = out["hidden"]
        assert code == 1 and "too long" in stderr and "vault/" not in stdout
        searcher = worlds["hidden"].searcher
        asker = groups.split(",")
        assert json_lines(stdout) == [
            {"query": q, "hits": [h.as_hit_json() for h in searcher.search(q, asker, 10)]}
            for q in questions
        ]
        for question in (TOPICS[2][0], "SEC-902"):
            asked = {
                n: cli(w, "ask", question, "--json", "--groups", groups) for n, w in worlds.items()
            }
            assert asked["hidden"] == asked["plain"] and asked["hidden"][0] == 0

    member = {
        n: cli(w, "search", TOPICS[2][0], "--json", "--groups", f"{SECRET},hr")
        for n, w in worlds.items()
    }
    assert member["hidden"] != member["plain"]
    assert json_lines(member["hidden"][1])[0]["hits"][0]["source"] == "vault/s2.md"


def shown_text(seen: Any) -> str:
    """Every string in a nested observation, as the page shows it (markdown unescaped)."""
    if isinstance(seen, str):
        return re.sub(r"\\(.)", r"\1", seen)
    if isinstance(seen, dict):
        seen = list(seen.values())
    if isinstance(seen, list | tuple):
        return "\n".join(shown_text(item) for item in seen)
    return ""


def rendered(node: Any) -> Any:
    """What a page element shows, recursively: its type, label, value and text (widget
    keys and ids left out: they hold random conversation ids)."""
    shown: list[Any] = [getattr(node, "type", type(node).__name__)]
    for attr in ("label", "value", "body", "placeholder", "icon", "options"):
        try:
            value = getattr(node, attr)
        except Exception:  # noqa: BLE001 - not every element has every attribute
            continue
        if value is None or isinstance(value, str | int | float | bool | list | tuple):
            shown.append((attr, value))
    children = getattr(node, "children", None)
    if isinstance(children, dict):
        shown.append([rendered(child) for child in children.values()])
    return shown


def page_session(
    monkeypatch: pytest.MonkeyPatch, world: World, server: FakeOllama, groups: list[str]
) -> dict[str, Any]:
    """Ask two questions on the page as a user in `groups`, rate the first answer; what
    the page showed, what the history and feedback store kept, and the work done."""
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(world.settings.data_dir))
    monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", server.url)
    monkeypatch.setenv("TAIMATSU_RETRIEVAL", RETRIEVAL)
    monkeypatch.setenv("TAIMATSU_LOCK_TIMEOUT", "10")
    monkeypatch.setenv("TAIMATSU_DEFAULT_GROUPS", json.dumps(groups))
    before = len(server.requests)
    with counting_work(type(world.searcher.index)) as work:
        app = AppTest.from_file(APP, default_timeout=120)
        app.session_state["language"] = "en"
        app.run()
        for question in (TOPICS[1][0], "And Project Nightjar SEC-901?"):
            app.chat_input[0].set_value(question).run()
            assert not app.exception, app.exception
        app.chat_message[1].get("feedback")[0].set_value(0).run()
        app.text_input(key=next(k.key for k in app.text_input)).input("Not this").run()
        next(b for b in app.button if b.label == STRINGS["feedback_send"]["en"]).click().run()
        assert not app.exception, app.exception
    history = History(world.settings.data_dir)
    return {
        "page": [rendered(app.main), rendered(app.sidebar)],
        "conversations": [c.title for c in history.conversations("local")],
        "turns": [history.turns("local", c.id) for c in history.conversations("local")],
        "feedback": [
            {k: v for k, v in f.items() if k not in ("id", "created")} for f in history.feedback()
        ],
        "model_requests": [(r["path"], r["json"]) for r in server.requests[before:]],
        "work": dict(work),
    }


def test_the_page_shows_an_outsider_the_same_in_both_worlds(worlds, models, monkeypatch):
    """The Streamlit page, in both worlds, for an outsider: the same chat (answers,
    passages, source labels, download buttons, warnings), sidebar, stored conversations
    and feedback, model requests and index work; for a member of `secret`, not the same
    (both run in both worlds, so the stored histories stay alike)."""
    echo = models["echo"]
    outsider = sorted(random.Random(8_3).sample(GROUPS, 2))
    seen = {n: page_session(monkeypatch, w, echo, outsider) for n, w in worlds.items()}
    assert seen["hidden"] == seen["plain"]
    shown = shown_text(seen["hidden"])
    assert "vault/" not in shown and "Nightjar:" not in shown
    assert STRINGS["download"]["en"] in shown  # the page did show passages and links
    assert seen["hidden"]["feedback"][0]["rating"] == -1

    member = {n: page_session(monkeypatch, w, echo, [SECRET, *outsider]) for n, w in worlds.items()}
    assert member["hidden"]["page"] != member["plain"]["page"]
    assert "vault/s1.md" in shown_text(member["hidden"]["page"])
    assert "vault/" not in shown_text(member["plain"])


def test_feedback_and_conversations_stay_with_their_user(worlds, models, tmp_path):
    """A `secret` member's conversation and feedback (which quote a secret document) are
    never returned to another user; an outsider's feedback holds only sources they may
    read, the same in both worlds; and no page reads the feedback store back but the
    audit page, which administrators alone reach (tests/ui/test_audit.py)."""
    echo = models["echo"]
    alice, bob = [SECRET, "hr"], ["finance", "it"]  # bob reads p01.md on TOPICS[1]
    stores = {name: History(tmp_path / name) for name in worlds}
    hidden, store = worlds["hidden"], stores["hidden"]
    secret_answer = answerer_for(hidden, echo).ask(TOPICS[1][0], alice)
    assert any(p.source.startswith("vault/") for _, p in secret_answer.citations)  # converse
    conversation = store.add_turn("alice", None, TOPICS[1][0], record(secret_answer))
    store.add_feedback("alice", -1, "too much", record(secret_answer))

    assert store.conversations("bob") == [] and store.turns("bob", conversation) == []
    bobs = store.add_turn("bob", conversation, "hello", {"answer": "hi", "citations": []})
    assert bobs != conversation and len(store.turns("alice", conversation)) == 1
    assert [c.id for c in store.conversations("bob")] == [bobs]
    assert "vault/" not in json.dumps(store.turns("bob", bobs))

    for name, world in worlds.items():
        answer = answerer_for(world, echo).ask(TOPICS[1][0], bob)
        stores[name].add_feedback("bob", 1, "ok", record(answer))
    kept = {
        name: [
            {k: v for k, v in f.items() if k not in ("id", "created")}
            for f in s.feedback()
            if f["user_id"] == "bob"
        ]
        for name, s in stores.items()
    }
    assert kept["hidden"] == kept["plain"] and kept["hidden"][0]["sources"]
    assert {c["source"] for c in kept["hidden"][0]["sources"]} <= readable_by(set(bob))

    for module in Path(APP).parent.glob("*.py"):
        if module.name == "audit_page.py":
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = node.func.value
                if node.func.attr == "feedback":  # st.feedback is the rating widget
                    assert isinstance(receiver, ast.Name) and receiver.id == "st", module


# -- The HTTP API and MCP: the same two worlds, over the wire ---------------------------------

API_QUESTIONS = [
    TOPICS[0][0],
    TOPICS[1][1],
    TOPICS[2][0],
    "PUB-003",
    "SEC-901",
    "Project Nightjar",
    "x" * 4001,  # too long
    "   ",  # blank
]


def _without_ids(data: Any) -> Any:
    """A chat completion or chunk without its random id and its clock time."""
    if isinstance(data, dict):
        return {k: _without_ids(v) for k, v in data.items() if k not in ("id", "created")}
    return data


def _http(response: Any) -> tuple[Any, ...]:
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return (response.status_code, _without_ids(response.json()))
    if kind.startswith("text/event-stream"):
        events = [
            line.removeprefix("data: ")
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        parsed = [e if e == "[DONE]" else _without_ids(json.loads(e)) for e in events]
        return (response.status_code, parsed)
    return (response.status_code, kind, response.content)


async def _mcp_calls(url: str, token: str, calls: list[tuple[str, dict]]) -> list[Any]:
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp:
        seen: list[Any] = [sorted(t.name for t in (await mcp.list_tools()).tools)]
        for name, arguments in calls:
            result = await mcp.call_tool(name, arguments)
            text = [getattr(c, "text", None) for c in result.content]
            seen.append((name, result.is_error, result.structured_content, text))
    return seen


def api_session(world: World, server: FakeOllama, groups: list[str], memo: Any) -> dict[str, Any]:
    """Everything a caller in `groups` observes of the API (REST, OpenAI chat streamed and
    not, a follow-up, MCP, downloads of every probe, status, errors) in `world`, and the
    work done: index operations and the model's requests."""
    import asyncio

    import httpx

    from assistant.tokens import TokenStore
    from tests.api.server import ApiServer
    from ui.api.service import document_id

    conf = world.settings.model_copy(update={"ollama_host": server.url, "api_rate_limit": 0})
    token = TokenStore(conf).create("outsider", groups)[0]
    before = len(server.requests)
    seen: dict[str, Any] = {}
    with (
        ApiServer(conf, memo) as api,
        counting_work(type(world.searcher.index)) as work,
        httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http,
    ):
        for question in API_QUESTIONS:
            chat = {"model": "taimatsu", "messages": [{"role": "user", "content": question}]}
            seen[question] = [
                _http(http.get("/api/search", params={"q": question, "k": 10})),
                _http(http.post("/api/ask", json={"question": question})),
                _http(http.post("/v1/chat/completions", json=chat)),
                _http(http.post("/v1/chat/completions", json={**chat, "stream": True})),
            ]
        follow_up = [
            {"role": "user", "content": TOPICS[1][0]},
            {"role": "assistant", "content": "Revenue is forecast by quarter. [1]"},
            {"role": "user", "content": "And the Project Nightjar numbers SEC-901?"},
        ]
        seen["follow-up"] = _http(http.post("/v1/chat/completions", json={"messages": follow_up}))
        seen["downloads"] = [
            _http(http.get(f"/api/documents/{document_id(world.root, probe)}/original"))
            for probe in [*PUBLIC, *HIDDEN, "nope.md", "../docs/p00.md"]
        ]
        seen["status"] = _http(http.get("/api/status"))
        seen["models"] = _http(http.get("/v1/models"))
        calls = [("search", {"query": q, "k": 10}) for q in API_QUESTIONS[:6]]
        calls += [("ask", {"question": q}) for q in API_QUESTIONS]
        seen["mcp"] = asyncio.run(_mcp_calls(api.url, token, calls))
    seen["work"] = dict(work)
    seen["model_requests"] = [(r["path"], r["json"]) for r in server.requests[before:]]
    return seen


def test_the_api_and_mcp_show_an_outsider_the_same_in_both_worlds(worlds, models, query_memo):
    """`taimatsu api`'s routes and MCP tools, over HTTP with real clients, for an outsider
    in both worlds: the same statuses, bodies (hits, scores, counts, answers, citations,
    download links and files, errors, the 404 of a hidden document), streamed chunks,
    MCP results, index work and model requests — all but a completion's random id and
    clock time. For a member of `secret`, not the same."""
    echo = models["echo"]
    outsider = sorted(random.Random(8_4).sample(GROUPS, 2))
    seen = {n: api_session(w, echo, outsider, query_memo) for n, w in worlds.items()}
    assert seen["hidden"] == seen["plain"]
    flat = json.dumps(seen["hidden"], default=repr)
    assert "vault/" not in flat and "Nightjar:" not in flat
    answered = [seen["hidden"][q][1] for q in API_QUESTIONS[:4]]
    assert any(body["mode"] == "generated" and body["citations"] for _, body in answered)
    downloads = seen["hidden"]["downloads"]
    assert any(d[0] == 200 for d in downloads) and any(d[0] == 404 for d in downloads)
    assert seen["hidden"]["mcp"][0] == ["ask", "search"]

    member = {n: api_session(w, echo, [SECRET, *outsider], query_memo) for n, w in worlds.items()}
    assert member["hidden"] != member["plain"]
    assert "vault/" in json.dumps(member["hidden"], default=repr)
    assert "vault/" not in json.dumps(member["plain"], default=repr)
