"""Every error Taimatsu shows a person, in one tree.

Each carries one sentence that says what happened and what to do. Every entry point
(the command line, the page, later the API) catches `TaimatsuError` once and shows that
sentence; anything else is a bug and keeps its traceback. Errors of libraries (the
engine, httpx, the parsers' libraries) are translated into these where they are called.

    TaimatsuError
    ├── SettingsError          a setting is missing or unusable (OIDC, sign-in mode)
    ├── StoreError             the index cannot be used right now
    │   ├── StoreBusy          another process holds the embedded index past the timeout
    │   ├── ModelMismatch      the index was built by another model or schema: reindex
    │   └── DiskFull           the disk under the data folder is full
    ├── LLMUnavailable         the model server is unreachable, lacks the model, or broke
    │                          off (answers fall back to sources; `reason` says which)
    ├── EmbeddingUnavailable   the embedding server is unreachable, lacks the model, or
    │                          answered nonsense (`reason` says which; nothing is written)
    ├── QuestionTooLong        a question over TAIMATSU_MAX_QUESTION_CHARS
    ├── GoldError              an evaluation gold file that cannot be used
    ├── IngestError            an ingestion run cannot proceed
    │   ├── IngestBusy         another run holds this index (exit code 4)
    │   ├── SourceDown         a site, WebDAV store or mailbox cannot be reached or
    │   │                      refused the credentials; nothing was changed
    │   ├── IngestCancelled    the run was asked to stop; it wrote what it had (exit code 5)
    │   └── IngestRefused      the run would open documents to everyone or delete most
    │                          of them; it stopped before writing (an explicit flag allows)
    ├── AclError               an ACL file that cannot be used (nothing is ingested)
    ├── ParseError             one file cannot be read (reported; the run goes on)
    ├── PermissionsUnreadable  one file's permissions cannot be read or mapped (reported;
    │                          the file keeps the groups it had, or stays out)
    └── UploadProblem          an uploaded file is refused (`code` for the page's text)
        └── UploadError        the whole upload is refused; nothing is written

This module imports nothing of Taimatsu's, so any module may import it.
"""

from __future__ import annotations

__all__ = [
    "UPLOAD_MESSAGES",
    "AclError",
    "DiskFull",
    "EmbeddingUnavailable",
    "GoldError",
    "IngestBusy",
    "IngestCancelled",
    "IngestError",
    "IngestRefused",
    "LLMUnavailable",
    "ModelMismatch",
    "ParseError",
    "PermissionsUnreadable",
    "QuestionTooLong",
    "SettingsError",
    "SourceDown",
    "StoreBusy",
    "StoreError",
    "TaimatsuError",
    "UploadError",
    "UploadProblem",
]


class TaimatsuError(Exception):
    """The root: a problem a person can act on, said in one sentence."""


class SettingsError(TaimatsuError, ValueError):
    """A required setting is missing or unusable; the message says which."""


class StoreError(TaimatsuError, RuntimeError):
    """An index problem with a one-sentence message a user can act on."""


class StoreBusy(StoreError):
    """The embedded index stayed held by another process past TAIMATSU_LOCK_TIMEOUT."""


class ModelMismatch(StoreError):
    """The index holds vectors of another embedding model or schema version."""


class DiskFull(StoreError):
    """The disk holding the data folder has no room for a write."""


class LLMUnavailable(TaimatsuError):
    """No model wrote the answer; `reason` is "unreachable", "missing" or "broken"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmbeddingUnavailable(TaimatsuError, RuntimeError):
    """The served embedding model gave no vectors; `reason` is "unreachable", "missing"
    (the server lacks the model) or "broken" (an error or an answer of the wrong shape)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class QuestionTooLong(TaimatsuError, ValueError):
    """A question past max_question_chars, refused in one sentence in its language."""

    def __init__(self, length: int, limit: int, japanese: bool) -> None:
        message = (
            f"質問が長すぎます（{length:,}文字）。{limit:,}文字以内にしてください。"
            if japanese
            else f"The question is too long ({length:,} characters); "
            f"please keep it under {limit:,}."
        )
        super().__init__(message)


class GoldError(TaimatsuError, ValueError):
    """A gold file that cannot be used, with a message that says where and why."""


class IngestError(TaimatsuError, RuntimeError):
    """The run as a whole cannot proceed (bad folder, ACL file, index problem)."""


class IngestBusy(IngestError):
    """Another ingestion run holds this index."""


class SourceDown(IngestError):
    """A remote source (site, WebDAV store, mailbox) cannot be reached, refused the
    credentials or answered with a server error: the run stopped before changing its
    copy or the index."""


class IngestCancelled(IngestError):
    """The run was asked to stop (the administration page's button) and stopped between
    two files, after writing what it had embedded; `summary` is what it did until then
    (the pipeline's Summary as JSON). The next run does the rest."""

    def __init__(self, message: str, summary: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class IngestRefused(IngestError):
    """The run stopped before writing anything because it would make documents readable
    by everyone (the permission rules in force are gone) or delete most of the indexed
    documents (the source looks down); a flag of `taimatsu ingest` says it is meant."""


class AclError(TaimatsuError, ValueError):
    """An ACL file that cannot be used; nothing is ingested with unknown permissions."""


class ParseError(TaimatsuError):
    """A file that cannot be read, with a one-line reason."""


class PermissionsUnreadable(TaimatsuError):
    """One file's permissions cannot be read (an unreadable ACL) or named (a name the
    group map does not know): the file is reported and keeps the groups it had."""


UPLOAD_MESSAGES = {  # English, for logs and tests; the page shows ui.web.i18n's "upload_<code>"
    "empty_name": "the file has no name",
    "absolute": "an absolute path is not a file name",
    "traversal": "a name with '..' could point outside the upload folder",
    "control": "the name contains control or invisible characters",
    "reserved_char": 'the name contains a character file systems forbid (< > : " | ? *)',
    "device": "{stem} is a reserved device name on Windows",
    "hidden": "names starting with a dot are hidden files and are never indexed",
    "trailing_dot": "the name ends with a dot",
    "too_long": "the name is longer than {limit} bytes",
    "type": "{suffix} files are not accepted; upload one of {accepted}",
    "too_big": "{size} MB is over the {limit} MB limit",
    "empty": "the file is empty",
    "mismatch": "the content is not a {type} file although the name ends in {suffix}",
    "not_text": "the content is not text although the name ends in {suffix}",
    "too_many": "{count} files at once is more than the limit of {limit}; nothing was saved",
    "no_groups": "choose at least one group that may read the documents",
    "bad_group": "{group} is not a usable group name",
    "off": "uploads are off (TAIMATSU_UPLOAD_DIR is empty)",
    "acl_override": "TAIMATSU_ACL_FILE is set and would override the groups chosen here",
    "folder": "the upload folder {folder} cannot be used ({reason})",
    "acl_unreadable": "the upload folder's ACL file cannot be used ({reason})",
    "busy": "another upload is being saved; try again in a moment",
    "personal_off": "personal uploads are off (TAIMATSU_PERSONAL_MAX_FILES is 0)",
    "quota_files": "you would keep {count} files, over your limit of {limit}; remove some of "
    "your documents first, nothing was saved",
    "quota_mb": "your documents would take {size} MB, over your limit of {limit} MB; remove "
    "some of your documents first, nothing was saved",
    "personal_not_indexed": "your files could not be indexed ({reason}); nothing was kept, "
    "try again in a minute",
    "nothing_accepted": "no file was accepted ({first})",
}


class UploadProblem(TaimatsuError, ValueError):
    """A refusal with a code (for the page's translation) and the message's values."""

    def __init__(self, code: str, **params: object) -> None:
        self.code = code
        self.params = {k: str(v) for k, v in params.items()}
        super().__init__(UPLOAD_MESSAGES[code].format(**self.params))


class UploadError(UploadProblem):
    """The upload as a whole is refused; nothing is written."""
