"""Documents an administrator uploads from the page into TAIMATSU_UPLOAD_DIR, each with the
groups that may read them.

Every file passes ingest/upload_checks.py (name, type, content) and the size limit (the
smaller of TAIMATSU_UPLOAD_MAX_MB and TAIMATSU_MAX_FILE_MB, past which ingestion would skip
it anyway) before anything is written; more than TAIMATSU_UPLOAD_MAX_FILES files at once
are all refused.

Accepted files are written under a lock on the folder: the content to a hidden temporary
file in the upload folder, then the ACL rule for exactly that file name into the folder's
`.taimatsu-acl.toml` (atomic rewrite, the other rules kept), then the file renamed into
place with `os.replace` under a name no existing file has (`-1`, `-2`, … before the
extension). The rule is in place before the file appears, so an ingestion run starting in
between never indexes it with the default groups. Every path written is checked to resolve
inside the upload folder.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from assistant.errors import AclError, UploadError, UploadProblem
from assistant.settings import Settings
from ingest.acl import ACL_FILE_NAME, Acl
from ingest.upload_checks import check_content, clean_groups, safe_name

LOCK_NAME = ".taimatsu-upload.lock"
TEMP_PREFIX = ".taimatsu-upload-"
STALE_TEMP_SECONDS = 3600


@dataclass(frozen=True)
class Incoming:
    """One uploaded file: its name as sent, its size, and how to read its bytes."""

    name: str
    size: int
    read: Callable[[], bytes]

    @classmethod
    def of(cls, name: str, data: bytes) -> Incoming:
        return cls(name, len(data), lambda: data)


@dataclass(frozen=True)
class Refusal:
    name: str  # as sent
    problem: UploadProblem

    @property
    def line(self) -> str:
        return f"{self.name}: {self.problem}"


@dataclass(frozen=True)
class Accepted:
    original: str
    name: str  # the safe name (before any -N against existing files)
    data: bytes = field(repr=False)
    renamed: bool = False  # an executable inner extension was neutralized


@dataclass(frozen=True)
class Saved:
    original: str
    name: str  # as written in the upload folder


def size_limit(settings: Settings) -> int:
    """Bytes: the upload limit, or ingestion's per-file limit if smaller."""
    return int(min(settings.upload_max_mb, settings.max_file_mb) * 1024 * 1024)


def check(settings: Settings, files: Sequence[Incoming]) -> tuple[list[Accepted], list[Refusal]]:
    """The files to save and the files refused, each with its reason; UploadError when the
    upload as a whole cannot go ahead (nothing is then saved)."""
    upload_settings_problem(settings)
    return check_files(settings, files)


def check_files(
    settings: Settings, files: Sequence[Incoming]
) -> tuple[list[Accepted], list[Refusal]]:
    """`check` without the upload folder's settings: the files alone (names, types, sizes,
    content), as personal uploads (ingest/personal.py) take them too."""
    if len(files) > settings.upload_max_files:
        raise UploadError("too_many", count=len(files), limit=settings.upload_max_files)
    limit = size_limit(settings)
    accepted, refused = [], []
    for incoming in files:
        try:
            name, renamed = safe_name(incoming.name)
            if incoming.size > limit:  # before reading a byte of it
                raise UploadProblem("too_big", size=_mb(incoming.size), limit=_mb(limit))
            data = incoming.read()
            if len(data) > limit:
                raise UploadProblem("too_big", size=_mb(len(data)), limit=_mb(limit))
            check_content(name, data)
        except UploadProblem as problem:
            refused.append(Refusal(incoming.name, problem))
            continue
        accepted.append(Accepted(incoming.name, name, data, renamed))
    return accepted, refused


def _mb(size: int) -> str:
    return f"{size / 2**20:.2f}".rstrip("0").rstrip(".")


def upload_settings_problem(settings: Settings) -> None:
    """UploadError if the settings do not allow uploads with chosen groups."""
    if settings.upload_dir is None or not str(settings.upload_dir).strip():
        raise UploadError("off")
    if settings.acl_file is not None:  # the global file would decide, not the rule we write
        raise UploadError("acl_override")


# -- writing --------------------------------------------------------------------------------


def upload_folder(settings: Settings) -> Path:
    """The upload folder, created if missing, resolved (symlinks followed once, here)."""
    upload_settings_problem(settings)
    folder = Path(str(settings.upload_dir)).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        resolved = folder.resolve(strict=True)
    except OSError as exc:
        raise UploadError("folder", folder=folder, reason=exc.strerror or exc) from exc
    if not resolved.is_dir():
        raise UploadError("folder", folder=folder, reason="not a folder")
    return resolved


def _inside(folder: Path, path: Path) -> Path:
    resolved = path.resolve()
    if resolved.parent != folder or not resolved.is_relative_to(folder):
        raise UploadError("folder", folder=folder, reason=f"{path.name} would leave it")
    return path


def free_name(folder: Path, name: str) -> Path:
    """`name` in `folder`, or `stem-1.ext`, `stem-2.ext`, … : the first that nothing
    (not even a dangling link) occupies."""
    stem, dot, suffix = name.rpartition(".")
    candidate, n = folder / name, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = folder / f"{stem}-{n}{dot}{suffix}"
    return _inside(folder, candidate)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _write_temp(folder: Path, data: bytes, suffix: str = ".tmp") -> Path:
    """A hidden temporary file in the folder holding `data`, flushed to disk, with the
    permissions a file created normally would get (mkstemp's are owner-only, and the
    scheduled ingestion may run as another user)."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return _inside(folder, Path(name))


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files left by a crashed upload (hidden, so never indexed)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for path in folder.glob(f"{TEMP_PREFIX}*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


def save(settings: Settings, accepted: Sequence[Accepted], groups: Sequence[str]) -> list[Saved]:
    """Write the accepted files into the upload folder, each readable by `groups`."""
    groups = clean_groups(groups)
    folder = upload_folder(settings)
    saved = []
    try:
        with FileLock(str(folder / LOCK_NAME), timeout=30):
            _remove_stale_temps(folder)
            for item in accepted:
                final = free_name(folder, item.name)
                temp = _write_temp(folder, item.data)
                try:
                    set_rule(folder, final.name, groups)
                    os.replace(temp, final)
                finally:
                    temp.unlink(missing_ok=True)
                _fsync_folder(folder)
                saved.append(Saved(item.original, final.name))
    except Timeout:
        raise UploadError("busy") from None
    return saved


def remove(settings: Settings, name: str) -> None:
    """Remove an uploaded file (one ingestion could not read), only inside the folder."""
    folder = upload_folder(settings)
    path = folder / name
    if name != PurePosixPath(name).name or name.startswith(".") or path.is_symlink():
        return
    if _inside(folder, path).is_file():
        path.unlink()


# -- the ACL rule --------------------------------------------------------------------------

ACL_HEADER = (
    "# Who may read the documents in this upload folder (see the README's Access lists).\n"
    "# The administration page adds a rule per uploaded file; the last matching rule wins.\n"
)


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON escapes are TOML escapes; TOML also escapes DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _rule_block(pattern: str, groups: Sequence[str]) -> str:
    listed = ", ".join(_toml_string(g) for g in groups)
    return f"\n[[rule]]\npattern = {_toml_string(pattern)}\ngroups = [{listed}]\n"


def set_rule(folder: Path, name: str, groups: Sequence[str]) -> None:
    """Make `groups` the readers of exactly `name` in the folder's ACL file: a rule added
    at the end (the last match wins), or an older rule for the same name replaced; the
    other rules kept. Written to a temporary file, checked, then renamed into place."""
    if any(ch in name for ch in "*?") or name.strip() != name or "/" in name:
        raise UploadError("acl_unreadable", reason=f"{name} cannot be an exact pattern")
    path = folder / ACL_FILE_NAME
    try:
        if path.is_file():
            Acl.load(path)  # a broken file stops the upload, as it stops ingestion
        text = path.read_text(encoding="utf-8") if path.is_file() else ACL_HEADER
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AclError) as exc:
        raise UploadError("acl_unreadable", reason=_one_line(str(exc))) from exc
    rules = data.get("rule", [])
    if any(r.get("pattern") == name for r in rules):
        text = _regenerated(data, [r for r in rules if r.get("pattern") != name])
    text = text.rstrip("\n") + "\n" + _rule_block(name, groups)
    temp = _write_temp(folder, text.encode("utf-8"), suffix=".toml")
    try:
        readers = Acl.load(temp).groups_for(name)
        if readers != sorted(set(groups)):
            raise UploadError("acl_unreadable", reason=f"{name} would get {readers}")
        os.replace(temp, _inside(folder, path))
    except AclError as exc:
        raise UploadError("acl_unreadable", reason=_one_line(str(exc))) from exc
    finally:
        temp.unlink(missing_ok=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _regenerated(data: dict, rules: list) -> str:
    """The ACL file rewritten from its content (comments are not kept)."""
    lines = [ACL_HEADER.rstrip("\n")]
    default = data.get("default")
    if isinstance(default, list):
        lines.append(f"default = [{', '.join(_toml_string(str(g)) for g in default)}]")
    text = "\n".join(lines) + "\n"
    for rule in rules:
        text += _rule_block(str(rule.get("pattern", "")), [str(g) for g in rule.get("groups", [])])
    return text
