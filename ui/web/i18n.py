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
    "local_user": {"en": "local user", "ja": "ローカルユーザー"},
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
    # -- the administration page (ui/web/admin*.py) ----------------------------------------
    "admin_only": {
        "en": "This page is for administrators.",
        "ja": "このページは管理者専用です。",
    },
    "admin_index": {"en": "Index", "ja": "索引"},
    "admin_documents": {"en": "Documents", "ja": "文書数"},
    "admin_chunks": {"en": "Chunks", "ja": "チャンク数"},
    "admin_by_kind": {"en": "By file type", "ja": "ファイル形式別"},
    "admin_by_root": {"en": "By source folder", "ja": "取り込み元フォルダ別"},
    "admin_col_kind": {"en": "Type", "ja": "形式"},
    "admin_col_root": {"en": "Folder", "ja": "フォルダ"},
    "admin_col_last_run": {"en": "Last run", "ja": "最終実行"},
    "admin_cancelled_short": {"en": "cancelled", "ja": "キャンセル"},
    "admin_refused_short": {
        "en": "refused (see the runs below)",
        "ja": "中止（下の実行履歴を参照）",
    },
    "admin_backend": {"en": "Stored in", "ja": "保存先"},
    "admin_model": {"en": "Embedding model", "ja": "埋め込みモデル"},
    "admin_no_index": {
        "en": "No documents have been indexed yet; sync a folder or upload documents below.",
        "ja": "まだ文書が登録されていません。"
        "下でフォルダを同期するか、文書をアップロードしてください。",
    },
    "admin_index_error": {"en": "The index cannot be read", "ja": "索引を読み込めません"},
    "admin_health": {"en": "Health", "ja": "稼働状況"},
    "admin_refresh": {"en": "Check again", "ja": "再確認"},
    "admin_index_ok": {"en": "Index: healthy", "ja": "索引：正常"},
    "admin_ollama_ok": {
        "en": "Ollama at {host}: version {version}, model {model} installed",
        "ja": "Ollama（{host}）：バージョン {version}、モデル {model} はインストール済み",
    },
    "admin_ollama_missing": {
        "en": "Ollama at {host}: version {version}, but the model {model} is missing "
        "(run `ollama pull {model}` there); answers show passages only",
        "ja": "Ollama（{host}）：バージョン {version}。モデル {model} がありません"
        "（サーバーで `ollama pull {model}` を実行してください）。回答は該当箇所の表示のみです",
    },
    "admin_ollama_down": {
        "en": "Ollama at {host}: unreachable; answers show passages only",
        "ja": "Ollama（{host}）：接続できません。回答は該当箇所の表示のみです",
    },
    "admin_openai_ok": {
        "en": "Model server at {host}: model {model} served",
        "ja": "モデルサーバー（{host}）：モデル {model} を提供中",
    },
    "admin_openai_missing": {
        "en": "Model server at {host}: the model {model} is not served (load it there, or set "
        "TAIMATSU_LLM_MODEL to a served model); answers show passages only",
        "ja": "モデルサーバー（{host}）：モデル {model} が提供されていません"
        "（サーバーで読み込むか、TAIMATSU_LLM_MODEL を提供中のモデルにしてください）。"
        "回答は該当箇所の表示のみです",
    },
    "admin_openai_down": {
        "en": "Model server at {host}: unreachable; answers show passages only",
        "ja": "モデルサーバー（{host}）：接続できません。回答は該当箇所の表示のみです",
    },
    "admin_llm_key_refused": {
        "en": "Model server at {host}: the API key was refused (set TAIMATSU_LLM_API_KEY or "
        "TAIMATSU_LLM_API_KEY_FILE); answers show passages only",
        "ja": "モデルサーバー（{host}）：API キーが拒否されました（TAIMATSU_LLM_API_KEY または "
        "TAIMATSU_LLM_API_KEY_FILE を設定してください）。回答は該当箇所の表示のみです",
    },
    "uncited_passages": {
        "en": "Passages given to the model (the answer does not cite them)",
        "ja": "モデルに渡した箇所（回答はこれらを引用していません）",
    },
    "admin_runs": {"en": "Recent ingestion runs", "ja": "最近の取り込み"},
    "admin_no_runs": {"en": "No ingestion runs yet.", "ja": "まだ取り込みは行われていません。"},
    "admin_col_finished": {"en": "Finished", "ja": "終了時刻"},
    "admin_col_added": {"en": "Added", "ja": "追加"},
    "admin_col_updated": {"en": "Updated", "ja": "更新"},
    "admin_col_unchanged": {"en": "Unchanged", "ja": "変更なし"},
    "admin_col_deleted": {"en": "Deleted", "ja": "削除"},
    "admin_col_failed": {"en": "Failed", "ja": "失敗"},
    "admin_col_seconds": {"en": "Seconds", "ja": "秒"},
    "admin_refused": {
        "en": "The run over {root} ({when}) stopped and changed nothing: {reason}",
        "ja": "{root} の同期（{when}）は停止し、何も変更していません: {reason}",
    },
    "admin_failures": {
        "en": "{count} file(s) failed in {root} ({when})",
        "ja": "{root} で {count} 件のファイルが失敗（{when}）",
    },
    "admin_sync": {"en": "Sync now", "ja": "今すぐ同期"},
    "admin_sync_help": {
        "en": "Bring the index in line with every folder it was built from, and the upload "
        "folder: new and changed files are indexed, deleted ones removed.",
        "ja": "索引の取り込み元のすべてのフォルダとアップロード用フォルダを再確認し、"
        "新しいファイルや変更されたファイルを登録し、削除されたファイルを索引から除きます。",
    },
    "admin_sync_nothing": {
        "en": "No source folders are known yet: run `taimatsu ingest FOLDER` once, or set "
        "TAIMATSU_UPLOAD_DIR and upload documents.",
        "ja": "取り込み元のフォルダがまだありません。`taimatsu ingest FOLDER` を一度実行するか、"
        "TAIMATSU_UPLOAD_DIR を設定して文書をアップロードしてください。",
    },
    "admin_job_running": {
        "en": "An ingestion started from this page is running; its progress is shown below.",
        "ja": "このページから開始した取り込みを実行中です。進行状況は下に表示されます。",
    },
    "admin_progress": {
        "en": "{step}/{steps} {folder}: {done}/{total} files, {chunks} chunks embedded, "
        "{rate} files/s, about {eta} s left",
        "ja": "{step}/{steps} {folder}：{done}/{total} ファイル、{chunks} チャンク、"
        "毎秒 {rate} ファイル、残り約 {eta} 秒",
    },
    "admin_cancel": {"en": "Cancel ingestion", "ja": "取り込みを中止"},
    "admin_cancel_requested": {
        "en": "Cancel requested: the running ingestion stops after the file it is on and "
        "keeps what it has indexed; the next run does the rest.",
        "ja": "中止を要求しました。実行中の取り込みは処理中のファイルの後で停止し、"
        "索引済みの分は残ります。残りは次回の実行で取り込まれます。",
    },
    "admin_cancelled": {
        "en": "The run over {root} ({when}) was cancelled: {reason}",
        "ja": "{root} の同期（{when}）は中止されました: {reason}",
    },
    "admin_live_run": {
        "en": "Another process's ingestion (the schedule's) {folder}: {done}/{total} files, "
        "{chunks} chunks embedded, {rate} files/s, about {eta} s left",
        "ja": "別のプロセス（定期実行など）の取り込み {folder}：{done}/{total} ファイル、"
        "{chunks} チャンク、毎秒 {rate} ファイル、残り約 {eta} 秒",
    },
    "admin_live_starting": {
        "en": "Another process's ingestion (the schedule's) {folder}: starting (listing the "
        "folder, reading the index)…",
        "ja": "別のプロセス（定期実行など）の取り込み {folder}：開始しています"
        "（フォルダの一覧と索引を読み込み中）…",
    },
    "admin_progress_starting": {
        "en": "{step}/{steps} {folder}: starting (after any other ingestion run finishes)…",
        "ja": "{step}/{steps} {folder}：開始しています（他の取り込みが実行中なら終了を待ちます）…",
    },
    "admin_summary": {
        "en": "{folder}: {added} added, {updated} updated, {unchanged} unchanged, "
        "{deleted} deleted, {failed} failed; {chunks} chunks embedded in {seconds} s",
        "ja": "{folder}：追加 {added}、更新 {updated}、変更なし {unchanged}、削除 {deleted}、"
        "失敗 {failed}。{chunks} チャンクを {seconds} 秒で埋め込み",
    },
    "admin_sync_done": {"en": "Sync finished.", "ja": "同期が完了しました。"},
    "admin_unexpected": {
        "en": "ingestion stopped on an unexpected error; see the server log",
        "ja": "予期しないエラーで取り込みが止まりました。サーバーのログを確認してください",
    },
    "admin_failed_files": {"en": "Files that could not be read", "ja": "読み込めなかったファイル"},
    "admin_upload": {"en": "Upload documents", "ja": "文書のアップロード"},
    "upload_files": {
        "en": "Documents (at most {files} files of {mb} MB each)",
        "ja": "文書（一度に {files} ファイルまで、各 {mb} MB まで）",
    },
    "upload_folder_is": {"en": "Saved into {folder}", "ja": "保存先：{folder}"},
    "upload_groups": {"en": "Who may read them", "ja": "閲覧できるグループ"},
    "upload_more_groups": {
        "en": "Other groups (comma-separated)",
        "ja": "その他のグループ（カンマ区切り）",
    },
    "upload_button": {"en": "Upload and index", "ja": "アップロードして登録"},
    "upload_refused": {
        "en": "{name} was refused: {reason}",
        "ja": "{name} は受け付けません：{reason}",
    },
    "upload_renamed": {
        "en": "{name} was saved as {saved}: an inner extension that could be run is neutralized.",
        "ja": "{name} は {saved} として保存しました"
        "（実行形式に見える途中の拡張子を無効化しました）。",
    },
    "upload_searchable": {
        "en": "{name} is now searchable by: {groups}",
        "ja": "{name} を検索できるようになりました（閲覧可能：{groups}）",
    },
    "upload_unreadable": {
        "en": "{name} could not be read ({error}) and was removed from the upload folder; "
        "fix it and upload it again.",
        "ja": "{name} を読み込めなかったため（{error}）、アップロード用フォルダから削除しました。"
        "修正してからもう一度アップロードしてください。",
    },
    "upload_not_indexed": {
        "en": "The files were saved but not indexed yet ({error}); Sync now will index them.",
        "ja": "ファイルは保存しましたが、まだ登録されていません（{error}）。"
        "「今すぐ同期」で登録されます。",
    },
    "upload_empty_name": {"en": "the file has no name", "ja": "ファイル名がありません"},
    "upload_absolute": {
        "en": "an absolute path is not a file name",
        "ja": "絶対パスはファイル名として使えません",
    },
    "upload_traversal": {
        "en": "a name with '..' could point outside the upload folder",
        "ja": "「..」を含む名前はアップロード用フォルダの外を指す可能性があります",
    },
    "upload_control": {
        "en": "the name contains control or invisible characters",
        "ja": "名前に制御文字または見えない文字が含まれています",
    },
    "upload_reserved_char": {
        "en": 'the name contains a character file systems forbid (< > : " | ? *)',
        "ja": 'ファイル名に使えない文字（< > : " | ? *）が含まれています',
    },
    "upload_device": {
        "en": "{stem} is a reserved device name on Windows",
        "ja": "{stem} は Windows の予約済みデバイス名です",
    },
    "upload_hidden": {
        "en": "names starting with a dot are hidden files and are never indexed",
        "ja": "ドットで始まる名前は隠しファイルのため登録されません",
    },
    "upload_trailing_dot": {"en": "the name ends with a dot", "ja": "名前がドットで終わっています"},
    "upload_too_long": {
        "en": "the name is longer than {limit} bytes",
        "ja": "名前が {limit} バイトを超えています",
    },
    "upload_type": {
        "en": "{suffix} files are not accepted; upload one of {accepted}",
        "ja": "{suffix} ファイルは受け付けません。"
        "次のいずれかをアップロードしてください：{accepted}",
    },
    "upload_too_big": {
        "en": "{size} MB is over the {limit} MB limit",
        "ja": "{size} MB は上限の {limit} MB を超えています",
    },
    "upload_empty": {"en": "the file is empty", "ja": "ファイルが空です"},
    "upload_mismatch": {
        "en": "the content is not a {type} file although the name ends in {suffix}",
        "ja": "名前は {suffix} で終わっていますが、内容が {type} ファイルではありません",
    },
    "upload_not_text": {
        "en": "the content is not text although the name ends in {suffix}",
        "ja": "名前は {suffix} で終わっていますが、内容がテキストではありません",
    },
    "upload_too_many": {
        "en": "{count} files at once is more than the limit of {limit}; nothing was saved",
        "ja": "一度に {count} ファイルは上限の {limit} を超えています。何も保存していません",
    },
    "upload_no_groups": {
        "en": "choose at least one group that may read the documents",
        "ja": "文書を閲覧できるグループを少なくとも一つ選んでください",
    },
    "upload_bad_group": {
        "en": "{group} is not a usable group name",
        "ja": "{group} はグループ名として使えません",
    },
    "upload_off": {
        "en": "Uploads are off: set TAIMATSU_UPLOAD_DIR to the folder uploads go into.",
        "ja": "アップロードは無効です。保存先のフォルダを TAIMATSU_UPLOAD_DIR に設定してください。",
    },
    "upload_acl_override": {
        "en": "Uploads are off because TAIMATSU_ACL_FILE is set: that file, not the groups "
        "chosen here, would decide who reads uploaded documents.",
        "ja": "TAIMATSU_ACL_FILE が設定されているため、アップロードは無効です。"
        "ここで選んだグループではなく、そのファイルが閲覧権限を決めてしまいます。",
    },
    "upload_folder": {
        "en": "the upload folder {folder} cannot be used ({reason})",
        "ja": "アップロード用フォルダ {folder} を使用できません（{reason}）",
    },
    "upload_acl_unreadable": {
        "en": "the upload folder's access list cannot be used ({reason}); fix it first",
        "ja": "アップロード用フォルダのアクセスリストを使用できません（{reason}）。"
        "先に修正してください",
    },
    "tokens_page": {"en": "API tokens", "ja": "APIトークン"},
    "tokens_help": {
        "en": "A token lets another tool (a chat bot, a script, an agent through MCP) ask "
        "Taimatsu as you, with your groups. Send it as `Authorization: Bearer <token>`.",
        "ja": "トークンを使うと、他のツール（チャットボット、スクリプト、MCP経由のエージェント）が"
        "あなたとして、あなたのグループの権限で質問できます。`Authorization: Bearer <token>` "
        "として送ってください。",
    },
    "tokens_name": {"en": "Name (what will use it)", "ja": "名前（使うツール）"},
    "tokens_lifetime": {"en": "Valid for", "ja": "有効期間"},
    "tokens_create": {"en": "Create a token", "ja": "トークンを作成"},
    "tokens_once": {
        "en": "Copy this token now: it is not shown again.",
        "ja": "このトークンを今コピーしてください。再表示はできません。",
    },
    "tokens_none": {"en": "You have no active tokens.", "ja": "有効なトークンはありません。"},
    "tokens_expires": {"en": "expires", "ja": "有効期限"},
    "tokens_revoke": {"en": "Revoke", "ja": "無効化"},
    "tokens_service": {"en": "Service accounts", "ja": "サービスアカウント"},
    "tokens_account": {"en": "Account name", "ja": "アカウント名"},
    "tokens_groups": {"en": "Groups (comma-separated)", "ja": "グループ（カンマ区切り）"},
    "tokens_service_needs": {
        "en": "Give the account's name and at least one group.",
        "ja": "アカウント名と、少なくとも1つのグループを入力してください。",
    },
    "audit_page": {"en": "Audit log", "ja": "監査ログ"},
    "audit_user": {"en": "User", "ja": "ユーザー"},
    "audit_days": {"en": "Days", "ja": "期間"},
    "audit_document": {"en": "Document (part of its path)", "ja": "文書（パスの一部）"},
    "audit_count": {"en": "{count} questions", "ja": "質問 {count} 件"},
    "audit_csv": {"en": "Export as CSV", "ja": "CSVで書き出す"},
    "audit_feedback": {"en": "Feedback", "ja": "フィードバック"},
    "audit_no_feedback": {"en": "No feedback yet.", "ja": "フィードバックはまだありません。"},
    "upload_busy": {
        "en": "another upload is being saved; try again in a moment",
        "ja": "別のアップロードを保存中です。少し待ってからもう一度お試しください",
    },
    "upload_personal_off": {
        "en": "personal uploads are off (TAIMATSU_PERSONAL_MAX_FILES is 0)",
        "ja": "個人用アップロードは無効です（TAIMATSU_PERSONAL_MAX_FILES が 0）",
    },
    "upload_quota_files": {
        "en": "you would keep {count} files, over your limit of {limit}; remove some of your "
        "documents first, nothing was saved",
        "ja": "ファイルが {count} 件になり、上限の {limit} 件を超えます。先に自分の文書をいくつか"
        "削除してください（何も保存していません）",
    },
    "upload_quota_mb": {
        "en": "your documents would take {size} MB, over your limit of {limit} MB; remove some "
        "of your documents first, nothing was saved",
        "ja": "文書の合計が {size} MB になり、上限の {limit} MB を超えます。先に自分の文書を"
        "いくつか削除してください（何も保存していません）",
    },
    "upload_personal_not_indexed": {
        "en": "your files could not be indexed ({reason}); nothing was kept, try again in a minute",
        "ja": "ファイルを登録できませんでした（{reason}）。何も保存していません。"
        "少し待ってからもう一度お試しください",
    },
    "upload_nothing_accepted": {
        "en": "no file was accepted ({first})",
        "ja": "受け付けたファイルはありません（{first}）",
    },
    "mine_page": {"en": "My documents", "ja": "マイ文書"},
    "mine_help": {
        "en": "Documents you upload here are readable by you alone: ask about them on the "
        "chat page like any document.",
        "ja": "ここにアップロードした文書はあなただけが読めます。チャットでほかの文書と同じように"
        "質問できます。",
    },
    "mine_usage": {
        "en": "{files} of {max_files} files, {mb} of {max_mb} MB used",
        "ja": "{max_files} ファイル中 {files}、{max_mb} MB 中 {mb} MB 使用",
    },
    "mine_files": {
        "en": "Documents ({mb} MB each at most)",
        "ja": "文書（各 {mb} MB まで）",
    },
    "mine_upload": {"en": "Upload", "ja": "アップロード"},
    "mine_indexing": {"en": "Reading and indexing…", "ja": "読み込んで登録しています…"},
    "mine_none": {
        "en": "You have no documents of your own yet.",
        "ja": "自分の文書はまだありません。",
    },
    "mine_remove": {"en": "Remove", "ja": "削除"},
    "mine_removed": {"en": "{name} was removed.", "ja": "{name} を削除しました。"},
    "mine_searchable": {
        "en": "{name} is now searchable, by you alone.",
        "ja": "{name} を検索できるようになりました（あなただけが読めます）。",
    },
    "mine_unreadable": {
        "en": "{name} could not be read ({error}) and was not kept; fix it and upload it again.",
        "ja": "{name} を読み込めなかったため（{error}）、保存しませんでした。"
        "修正してからもう一度アップロードしてください。",
    },
    "mine_chunks": {"en": "{chunks} passages", "ja": "{chunks} 件の文節"},
    "mine_not_indexed": {"en": "not in the index", "ja": "未登録"},
    "mine_busy": {
        "en": "The index is busy (an ingestion run is writing to it); try again shortly.",
        "ja": "インデックスが使用中です（取り込み中）。しばらくしてからもう一度お試しください。",
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
