"""Access lists: which groups may read which documents.

An ACL file (TOML) maps path patterns, relative to the ingested folder, to groups:

    default = ["everyone"]          # documents no rule matches (this is the default)

    [[rule]]
    pattern = "hr/**"               # ** crosses folders, * and ? stay inside one
    groups = ["hr"]

    [[rule]]
    pattern = "hr/handbook/*.pdf"   # the last matching rule wins
    groups = ["everyone"]

The file is `TAIMATSU_ACL_FILE`, else `.taimatsu-acl.toml` in the ingested folder (hidden
files are never indexed). The groups are stored on every chunk; a changed ACL file is
applied on the next run without embedding anything again.

A file with neither `default` nor a rule (empty, or comments only) is not in force: it
counts as missing. Rules that were in force and are now missing never open documents on
their own (ingest/permissions.py); `default = ["everyone"]` opens them explicitly.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from assistant.errors import AclError
from assistant.settings import EVERYONE

ACL_FILE_NAME = ".taimatsu-acl.toml"


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `**` any folders, `*`/`?` within one name, a trailing
    `/` everything below."""
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _groups(value: object, where: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(g, str) and g.strip() for g in value)
    ):
        raise AclError(f"{where} must be a non-empty list of group names")
    return sorted({g.strip() for g in value})


@dataclass(frozen=True)
class Acl:
    default: tuple[str, ...] = (EVERYONE,)
    rules: tuple[tuple[str, tuple[str, ...]], ...] = ()
    origin: str = "built-in default (everyone reads everything)"
    in_force: bool = False  # read from a file that says something (not missing, not empty)

    @classmethod
    def load(cls, path: Path) -> Acl:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AclError(f"the ACL file {path} cannot be read ({exc}); fix it and rerun") from exc
        default = tuple(_groups(data.get("default", [EVERYONE]), f"{path}: default"))
        rules = []
        for n, rule in enumerate(data.get("rule", []), start=1):
            if not isinstance(rule, dict) or not isinstance(rule.get("pattern"), str):
                raise AclError(f"{path}: rule {n} needs a pattern (a string) and groups")
            groups = _groups(rule.get("groups"), f"{path}: rule {n} groups")
            glob_regex(rule["pattern"])
            rules.append((rule["pattern"], tuple(groups)))
        in_force = "default" in data or bool(rules)
        return cls(default, tuple(rules), str(path), in_force)

    @classmethod
    def for_folder(cls, root: Path, acl_file: Path | None) -> Acl:
        if acl_file is not None:
            if not acl_file.is_file():
                raise AclError(f"the ACL file {acl_file} (TAIMATSU_ACL_FILE) does not exist")
            return cls.load(acl_file)
        local = root / ACL_FILE_NAME
        return cls.load(local) if local.is_file() else cls()

    def groups_for(self, source: str) -> list[str]:
        groups = self.default
        for pattern, rule_groups in self.rules:
            if glob_regex(pattern).match(source):
                groups = rule_groups
        return list(groups)
