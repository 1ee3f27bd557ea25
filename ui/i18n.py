"""Every string the page shows, in English and Japanese.

The language comes from the browser (Accept-Language, via st.context.locale) unless the
user picks one with the switch; `t(key)` returns the string in the session's language.
"""

from __future__ import annotations

import streamlit as st

LANGUAGES = {"en": "English", "ja": "日本語"}

STRINGS: dict[str, dict[str, str]] = {
    "caption": {
        "en": "Answers from your organization's documents, with their sources.",
        "ja": "社内文書から、出典付きで回答します。",
    },
    "ask": {"en": "Ask a question", "ja": "質問を入力してください"},
    "searching": {"en": "Searching the documents…", "ja": "文書を検索しています…"},
    "new_chat": {"en": "New chat", "ja": "新しいチャット"},
    "conversations": {"en": "Conversations", "ja": "会話の履歴"},
    "no_conversations": {"en": "No conversations yet.", "ja": "まだ会話はありません。"},
    "language": {"en": "Language", "ja": "言語"},
    "regenerate": {"en": "Regenerate", "ja": "再生成"},
    "copy": {"en": "Copy the answer", "ja": "回答をコピー"},
    "searched_for": {"en": "Searched for", "ja": "検索した質問"},
    "feedback_comment": {"en": "Comment (optional)", "ja": "コメント（任意）"},
    "feedback_send": {"en": "Send feedback", "ja": "フィードバックを送信"},
    "feedback_thanks": {"en": "Thank you for your feedback.", "ja": "ご意見ありがとうございます。"},
    "download": {"en": "Open the original file", "ja": "元のファイルを開く"},
    "file_gone": {
        "en": "The original file is no longer available.",
        "ja": "元のファイルは現在利用できません。",
    },
    "signed_in_as": {"en": "Signed in as", "ja": "ログイン中："},
    "sign_in": {"en": "Sign in", "ja": "ログイン"},
    "sign_out": {"en": "Sign out", "ja": "ログアウト"},
    "sign_in_needed": {
        "en": "Please sign in with your company account to ask questions.",
        "ja": "質問するには、会社のアカウントでログインしてください。",
    },
    "not_allowed": {
        "en": "This page must be opened through the company's sign-in proxy.",
        "ja": "このページは社内のログイン用プロキシ経由で開いてください。",
    },
    "chat_page": {"en": "Ask", "ja": "質問"},
    "admin_page": {"en": "Administration", "ja": "管理"},
    "busy": {
        "en": "The document index is being updated; please ask again in a moment.",
        "ja": "文書の索引を更新中です。少し待ってからもう一度質問してください。",
    },
    "no-index": {
        "en": "No documents have been indexed yet; ask your administrator to run ingestion.",
        "ja": "まだ文書が登録されていません。管理者に取り込みを依頼してください。",
    },
    "other": {
        "en": "Something went wrong while answering; please try again, and tell your "
        "administrator if it keeps happening.",
        "ja": "回答中に問題が発生しました。もう一度お試しください。"
        "続く場合は管理者に連絡してください。",
    },
}


def browser_language() -> str:
    locale = (st.context.locale or "") if hasattr(st, "context") else ""
    if not locale:
        header = st.context.headers.get("Accept-Language", "") if hasattr(st, "context") else ""
        locale = header.split(",")[0]
    return "ja" if locale.lower().startswith("ja") else "en"


def language() -> str:
    if "language" not in st.session_state:
        st.session_state.language = browser_language()
    return st.session_state.language


def t(key: str) -> str:
    return STRINGS[key][language()]


def language_switch() -> None:
    current = language()
    chosen = st.radio(
        t("language"),
        list(LANGUAGES),
        index=list(LANGUAGES).index(current),
        format_func=LANGUAGES.get,
        horizontal=True,
        key="language_switch",
    )
    if chosen != current:
        st.session_state.language = chosen
        st.rerun()
