"""Follow-up questions: "and for part-timers?" means nothing to a search engine.

Before retrieval, a question asked after earlier turns is rewritten by the model into a
standalone question, using as much recent history as fits a share of the model's
context window — but only when it needs them (`needs_context`): a question that
stands alone is searched as itself. Without a model, the conversation's topic (its
latest standalone question and the follow-ups since) is prepended instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.answering.prompt import strip_think
from assistant.retrieval import language_of

CONDENSE_PROMPT = """\
You rewrite the user's last message in a conversation as one standalone question that \
can be understood without the conversation. Keep the language of the last message. \
Replace pronouns and ellipses with what they refer to. Output only the question."""

HISTORY_SHARE = 4  # the history gets at most 1/4 of the context window
CHARS_PER_TOKEN = 1  # a conservative bound: one Japanese character can be one token


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


def bounded(history: list[Turn], context_window: int) -> list[Turn]:
    """The most recent turns whose text fits the history's share of the window."""
    budget = context_window * CHARS_PER_TOKEN // HISTORY_SHARE
    kept: list[Turn] = []
    for turn in reversed(history):
        size = len(turn.question) + len(turn.answer)
        if size > budget:
            break
        budget -= size
        kept.append(turn)
    return kept[::-1]


def condense_messages(history: list[Turn], question: str) -> list[dict[str, str]]:
    lines = []
    for turn in history:
        lines += [f"User: {turn.question}", f"Assistant: {turn.answer}"]
    user = "Conversation:\n" + "\n".join(lines) + f"\n\nLast message: {question.strip()}"
    return [{"role": "system", "content": CONDENSE_PROMPT}, {"role": "user", "content": user}]


# "unrelated:", "btw", 「別件ですが、」「ところで、」: they say the topic changes, and name none;
# searched, their words ("question", 「別件」「話」) only pull in passages that share them
_TOPIC_SWITCH = re.compile(
    r"^\s*(?:"
    r"(?:(?:totally|completely|slightly|a)\s+)?(?:unrelated|different|separate|another|"
    r"other|new|off[- ]topic)(?:\s+(?:question|topic|thing|subject|note|one))?\s*[:;,—–-]+"
    r"|(?:btw|by the way|anyway|also|ok(?:ay)? so)\b\s*[:;,—–-]*"
    r"|on (?:a |an )?(?:different|separate|other|another|unrelated) (?:note|topic)\b[:;,—–-]*"
    r"|(?:それとは別に|別件(?:です|なんです|なんだ|だ)?(?:が|けど|けれど)?|別の話(?:で|ですが|だけど)?"
    r"|話(?:は|が)?変わ(?:ります|る|って)(?:が|けど|けれど)?|ところで|ついでに|あと|また)"
    r"(?:[、,，]|\s)"
    r")\s*",
    re.IGNORECASE,
)


def search_text(question: str) -> str:
    """The question as it is searched: without an opening that only announces a change
    of topic ("unrelated:", 「別件ですが、」). Whether it needs the conversation is decided
    on the question as asked."""
    rest = _TOPIC_SWITCH.sub("", question, count=1).strip()
    return rest or question


def fallback_question(history: list[Turn], question: str) -> str:
    """Without a model: the words of the conversation's topic help retrieval find it —
    the latest earlier question that stood alone, and the follow-ups asked since."""
    if not history:
        return search_text(question)
    start = len(history) - 1
    while start > 0 and needs_context(history[start].question):
        start -= 1
    asked = [*(turn.question for turn in history[start:]), question]
    return " ".join(search_text(q) for q in asked)


_PREAMBLE = re.compile(
    r"^(?:(?:sure|okay|ok|certainly|of course|absolutely|got it|yes)\b[!,.]*\s*"
    r"|(?:here(?:'s| is)|this is)\b[^:：\n]*?(?:question|query|rewrite|version)\b[^:：\n]*[:：]\s*"
    r"|(?:the\s+)?(?:rewritten|standalone|reformulated|rephrased|new)?\s*"
    r"(?:standalone\s+)?(?:question|query)\s*[:：]\s*"
    r"|(?:はい|わかりました|了解しました|承知しました)[、。!！]*\s*"
    r"|(?:以下|こちら)(?:が|は)[^:：\n]*?(?:です|になります)?[:：。]\s*"
    r"|(?:書き換えた|書き換え後の|独立した|言い換えた|書き直した)?質問\s*(?:文)?\s*[:：]\s*)",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"^[#>*\-\s]+|\*\*|__|`")
_QUOTES = "\"'“”‘’「」『』"
_REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry|i can(?:no|')t|i am unable|i'm unable|as an ai|"
    r"申し訳|すみません|できません)",
    re.IGNORECASE,
)


def clean_question(text: str, original: str) -> str | None:
    """The model's rewrite without its reasoning, preamble ("Sure! Here is the standalone
    question:", 「書き換えた質問：」), quotes and markup — or None when what is left is no
    plausible question (empty, a refusal, far longer than the question asked)."""
    for line in strip_think(text).splitlines():
        line = _MARKUP.sub("", line).strip()
        while (stripped := _PREAMBLE.sub("", line, count=1).strip()) != line:
            line = stripped
        line = line.strip(_QUOTES + " ").strip()
        if not line:
            continue
        if _REFUSAL.match(line) or len(line) > 4 * len(original) + 400:
            return None
        return line
    return None


# -- does a question need the conversation? ---------------------------------------------
# Measured on the conversation sets (tests/data/eval/natural/*/conversations.jsonl,
# docs/decisions.md): a question is searched as itself unless it leans on what came
# before — it opens like a continuation ("and for…", 「じゃあ…」), points back with a
# pronoun ("it", 「それ」), leaves its subject out (「…の場合は？」), or has no topic of its
# own (at most one content word).

_EN_OPENERS = re.compile(
    r"^(?:and|but|so|then|or|ok(?:ay)?|what about|how about|what if|same for|"
    r"any(?:thing)? else|what else|why(?: not)?\??$|how come|really)\b",
    re.IGNORECASE,
)
_EN_POINTERS = re.compile(
    r"\b(?:it|its|it's|itself|they|them|their|theirs|these|those|this one|that one|"
    r"the same|the former|the latter|the above|such)\b",
    re.IGNORECASE,
)
_EN_STOP = frozenset(
    """a an the and or but if then so also too very just only really please thanks thank
    you i me my we our us your he she him her is are was were be been being am do does did
    doing done have has had having can could should would will shall may might must need
    to of in on at for from by with about as into over under than that this these those
    there here what which who whom whose when where why how whether it its they them their
    not no yes any some all more most much many such same other else again still ever
    get got let make want know tell say way thing things something anything one ones
    ok okay hi hello hey""".split()
)
_EN_LAST_WORD_POINTER = re.compile(r"\b(?:it|that|this|them|those)\s*[?.!]*$", re.IGNORECASE)
_JA_OPENERS = re.compile(
    r"^(?:それ|その|これ|この|あれ|あの|そこ|そっち|こっち|そちら|こちら|じゃあ|じゃ、|では、|"
    r"それじゃ|それなら|で、|ちなみに|なら|だったら|同じ|他に|ほかに)"
)
_JA_NEW_TOPIC = re.compile(r"^(?:それとは別に|別件|ところで|話は変わ|あと、|また、)")
# nouns that name no topic of their own: 「あとで」「途中で」「手順は？」
_JA_GENERIC = frozenset(
    "後 前 途中 侭 分 回 一回 一度 種類 一覧 順番 手順 方法 仕方 やり方 名前 場所 理由 意味 "
    "違い 条件 設定 必要 可能 大丈夫 有効 無効 最初 最後 次 全部 全て 誰 本当 よう 感じ 問題 "
    "注意 一番 時間 場所 結果 状態 内容 今回 自分".split()
)
_JA_POINTERS = re.compile(r"それ|その|これ|この|あれ|そっち|そちら|同じ|前の|さっきの|上記")
_JA_ELLIPSIS = re.compile(r"(?:の場合|なら|だと|では|って|も|は|たら|れば|ば)(?:は|って)?[？?]?$")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")


def _content_count(question: str, japanese: bool) -> int:
    latin = [w for w in _LATIN_WORD.findall(question) if w.lower() not in _EN_STOP]
    if not japanese:
        return len(latin)
    from assistant.japanese import content_words

    return len(latin) + len(set(content_words(question)))


def needs_context(question: str) -> bool:
    """Whether a question asked after others means something only with them."""
    text = question.strip()
    japanese = language_of(text) == "ja"
    words = _content_count(text, japanese)
    if words <= 1:
        return True
    if japanese:
        from assistant.japanese import content_nouns

        if _JA_NEW_TOPIC.match(text):
            return False
        if _JA_OPENERS.match(text) or (len(text) <= 25 and _JA_POINTERS.search(text)):
            return True
        topic = [n for n in content_nouns(text) if n not in _JA_GENERIC]
        if not topic and not _LATIN_WORD.search(text):
            return True  # only verbs and adjectives: 「上げたあとで取り消せる？」
        return words <= 2 and bool(_JA_ELLIPSIS.search(text)) and len(text) <= 20
    if _EN_OPENERS.match(text) or (words <= 6 and _EN_LAST_WORD_POINTER.search(text)):
        return True  # "and for part-timers?", "is there something faster for that?"
    return words <= 4 and bool(_EN_POINTERS.search(text))
